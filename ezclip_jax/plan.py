"""Plan a run before renting the hardware: compile the real train or eval step for a TPU slice here.

  python -m ezclip_jax.plan --config configs/k400_zero_shot.py --topology v5e:2x4
  python -m ezclip_jax.plan --config configs/k400_zero_shot.py --config.model.arch=ViT-L/14 \\
      --config.mesh_shape=-1,2,1 --topology v5p:2x2x1 --max-batch --json

`--topology` takes a libtpu topology name: `v4:2x2x1` (v4-8), `v5e:2x4` (v5e-8), `v5e:8x8`
(v5e-64), `v5p:2x2x1` (v5p-8), `v6e:2x4` (v6e-8), ... It needs libtpu (`pip install -e
".[tpu]"`) but no TPU: libtpu describes the slice's chips and runs the TPU compiler on this
machine (the technique of MaxText's train_compile.py). Without `--topology` the step is
compiled for this machine's own devices.

The step is the one training runs (`step.create_train_step`, or evaluation's scorer with
`--mode eval`), built from the config: its model (`model.arch`, or `model.pretrained`'s
model_config.json, no weights read), `mesh_shape`, global batch (`data.batch_size`; eval:
`data.eval_batch_size` per process), dtype, remat, colour jitter and trainable patterns.
The compiled program gives, per chip: HBM (parameters and optimizer state, batch,
temporaries), FLOPs (next to an analytic count of the model's matmuls), bytes accessed and
the collectives in its HLO. A roofline, max(FLOPs / peak, bytes / HBM bandwidth) from the
chip's public peaks, bounds the step time from below.
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh
from ml_collections import config_flags

from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import evaluate
from ezclip_jax import model as model_lib
from ezclip_jax import model_setup
from ezclip_jax import optim
from ezclip_jax import platforms
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from ezclip_jax import text_prompts

GIB = 2**30
# The eval step scores each batch against every class text: 16 templates x 400 classes
# (Kinetics-400) here; the text tower runs once per evaluation, not per step.
EVAL_CLASSES = 400
MAX_BATCH_LIMIT = 2**14


class PlanError(ValueError):
  """Bad input to the planner (topology, config, missing libtpu); the message says what to do."""


# --------------------------------------------------------------------------- chips


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip peaks.

  Attributes:
    tflops: peak dense bf16 matmul TFLOP/s (TPUs run float32 matmuls on the same units).
    hbm_gbps: HBM bandwidth, GB/s.
    hbm_gib: HBM per chip, GiB.
  """
  tflops: float
  hbm_gbps: float
  hbm_gib: float


# Google Cloud TPU documentation, one page per generation (cloud.google.com/tpu/docs/v4,
# /v5e, /v5p, /v6e): "peak compute per chip (bf16)" and "HBM capacity and bandwidth".
TPU_CHIPS = {
    "TPU v4": Chip(275.0, 1200.0, 32.0),
    "TPU v5 lite": Chip(197.0, 819.0, 16.0),  # v5e
    "TPU v5": Chip(459.0, 2765.0, 95.0),  # v5p
    "TPU v6 lite": Chip(918.0, 1638.0, 32.0),  # v6e
}
# NVIDIA datasheets (dense bf16 tensor-core TFLOP/s, HBM GB/s), matched in this order
# against `device_kind` (e.g. "NVIDIA H100 80GB HBM3"); capacity comes from the device.
GPU_CHIPS = (
    ("H200", Chip(989.0, 4800.0, 141.0)),
    ("H100 PCIe", Chip(756.0, 2000.0, 80.0)),
    ("H100", Chip(989.0, 3350.0, 80.0)),  # SXM
    ("A100-SXM4-80GB", Chip(312.0, 2039.0, 80.0)),
    ("A100", Chip(312.0, 1555.0, 40.0)),
)
# Chips with two TensorCores that JAX drives as one device ("megacore").
_MEGACORE_PREFIXES = ("v4", "v5p", "v5:")


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices a step is compiled for.

  Attributes:
    name: the topology name, or "this machine".
    devices: one per chip.
    platform: "tpu", "gpu" or "cpu".
    device_kind: e.g. "TPU v5 lite".
    chip: its public peaks, None when unknown.
    hbm_bytes: memory per chip to plan for, None when unknown.
  """
  name: str
  devices: tuple
  platform: str
  device_kind: str
  chip: Chip | None
  hbm_bytes: int | None

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})


_TOPOLOGY_NAME = re.compile(r"^[a-z0-9]+:[0-9]+(x[0-9]+){1,2}$")
_TOPOLOGY_EXAMPLES = ("expected libtpu's name of the slice, e.g. v4:2x2x1 (Cloud's v4-8), v5e:2x4 (v5e-8), "
                      "v5e:8x8 (v5e-64), v5p:2x2x1 (v5p-8) or v6e:2x4 (v6e-8)")


def tpu_topology_devices(topology: str) -> list:
  """The devices of a TPU slice, from libtpu's description of `topology` (no TPU needed)."""
  if not _TOPOLOGY_NAME.match(topology):
    raise PlanError(f"--topology={topology}: {_TOPOLOGY_EXAMPLES}")
  try:
    import libtpu  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise PlanError(f"--topology={topology} needs libtpu: pip install -e \".[tpu]\" "
                    f"(or pip install \"jax[tpu]=={jax.__version__}\")") from None
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  for name, value in platforms.NO_TPU_ENV.items():  # read when libtpu starts; compiling needs no chip
    os.environ.setdefault(name, value)
  options = {"chip_config_name": "megacore"} if topology.startswith(_MEGACORE_PREFIXES) else {}
  try:
    return topologies.get_topology_desc(platform="tpu", topology_name=topology, **options).devices
  except jax.errors.JaxRuntimeError as e:
    raise PlanError(f"--topology={topology}: libtpu does not know this slice ({str(e).splitlines()[0]}); "
                    f"{_TOPOLOGY_EXAMPLES}") from None


def _chip(device_kind: str) -> Chip | None:
  if device_kind in TPU_CHIPS:
    return TPU_CHIPS[device_kind]
  return next((chip for key, chip in GPU_CHIPS if key in device_kind), None)


def make_target(topology: str | None, hbm_gib: float | None = None) -> Target:
  """A TPU slice by its libtpu name, or (None) this machine's devices."""
  if topology:
    devices = tpu_topology_devices(topology)
  else:
    devices = jax.devices()
  kind = devices[0].device_kind
  chip = _chip(kind)
  if hbm_gib is not None:
    hbm = int(hbm_gib * GIB)
  elif topology:
    hbm = int(chip.hbm_gib * GIB) if chip else None
  else:
    hbm = (devices[0].memory_stats() or {}).get("bytes_limit")
  return Target(topology or "this machine", tuple(devices), devices[0].platform, kind, chip, hbm)


# -------------------------------------------------------------------------- model


def model_config(config: ml_collections.ConfigDict, platform: str) -> model_lib.ModelConfig:
  """The architecture training builds from `config` (`model_setup.model_config`), no weights read."""
  pretrained = None
  if config.model.pretrained:
    directory = pathlib.Path(config.model.pretrained)
    if (directory / checkpoint.BACKBONE_DIR).is_dir():
      directory = directory / checkpoint.BACKBONE_DIR
    pretrained = checkpoint.load_config(directory)
  try:
    return model_setup.model_config(config, platform, pretrained)
  except ValueError as e:
    raise PlanError(str(e)) from e


def trainable_paths(cfg: model_lib.ModelConfig, patterns: Sequence[str]) -> frozenset[str]:
  """'/'-joined paths of the params that train (`optim.split_params`)."""
  params = jax.eval_shape(lambda: model_lib.init_variables(cfg, jax.random.key(0)))["params"]
  trainable, _ = optim.split_params(params, patterns)
  return frozenset(flax.traverse_util.flatten_dict(trainable, sep="/"))


# ----------------------------------------------------------------- analytic FLOPs


class _MatmulCount:
  """Matmul FLOPs of one tower's forward and backward pass, added up in graph order.

  The backward pass of `y = x @ w` computes `dx` (as costly as the forward) only where
  `x` depends on a trainable param (`live`: from the first trainable param on, the
  residual stream carries the dependence), and `dw` only for trainable `w`.
  Activation-by-activation matmuls (attention) need both operands' gradients.
  `remat` recomputes, for each block the backward passes through, the forward matmuls
  whose outputs it needs: all but the block's last (`mlp/c_proj`), whose output only
  makes the block's output, which is kept.
  """

  def __init__(self, trainable: frozenset[str], remat: bool):
    self.trainable, self.remat = trainable, remat
    self.forward = self.backward = 0.0
    self.live = False
    self._block_forward = None

  def _trains(self, module: str) -> bool:
    return any(path == module or path.startswith(module + "/") for path in self.trainable)

  def touch(self, module: str) -> None:
    """A param used without a matmul (embeddings, prompts, LayerNorm) makes what follows live."""
    self.live |= self._trains(module)

  def dense(self, module: str, rows: float, fan_in: int, fan_out: int, recomputed: bool = True) -> None:
    flops = 2.0 * rows * fan_in * fan_out
    self._add_forward(flops, recomputed)
    if self.live:
      self.backward += flops
    if f"{module}/kernel" in self.trainable or module in self.trainable:
      self.backward += flops
    self.touch(module)

  def attention(self, batch: float, queries: int, keys: int, width: int) -> None:
    """softmax(q k^T) v over all heads: two matmuls of `batch x queries x keys x width`."""
    flops = 2 * 2.0 * batch * queries * keys * width
    self._add_forward(flops)
    if self.live:
      self.backward += 2 * flops

  def _add_forward(self, flops: float, recomputed: bool = True) -> None:
    self.forward += flops
    if self._block_forward is not None and recomputed:
      self._block_forward += flops

  def start_block(self) -> None:
    self._block_forward = 0.0

  def end_block(self) -> None:
    if self.remat and self.live:
      self.backward += self._block_forward
    self._block_forward = None


def _adapter_and_mlp(count: _MatmulCount, prefix: str, rows: float, width: int, ratio: float) -> None:
  hidden = int(width * ratio)
  count.dense(f"{prefix}/Adapter/D_fc1", rows, width, hidden)
  count.dense(f"{prefix}/Adapter/D_fc2", rows, hidden, width)
  count.touch(f"{prefix}/ln_2")
  count.dense(f"{prefix}/mlp/c_fc", rows, width, 4 * width)
  count.dense(f"{prefix}/mlp/c_proj", rows, 4 * width, width, recomputed=False)


def _attend(count: _MatmulCount, prefix: str, sequences: float, length: int, width: int) -> None:
  count.touch(f"{prefix}/ln_1")
  count.dense(f"{prefix}/attn/in_proj", sequences * length, width, 3 * width)
  count.attention(sequences, length, length, width)
  count.dense(f"{prefix}/attn/out_proj", sequences * length, width, width)


def _vision_flops(cfg: model_lib.ModelConfig, videos: float, count: _MatmulCount) -> None:
  t, width, patch = cfg.num_frames, cfg.vision_width, cfg.vision_patch_size
  patches = (cfg.image_resolution // patch)**2
  tokens = patches + 1
  frames = videos * t
  count.dense("visual/conv1", frames * patches, 3 * patch * patch, width)
  for name in ("class_embedding", "positional_embedding", "temporal_embedding", "ln_pre"):
    count.touch(f"visual/{name}")
  temporal_adapter = cfg.t_adapter and not cfg.use_prompts
  for i in range(cfg.vision_layers):
    prefix = f"visual/transformer/resblocks_{i}"
    count.start_block()
    spatial = tokens
    if cfg.use_prompts:
      count.touch("visual/transformer/T_prompt_embeddings")
      _attend(count, prefix, videos, t, width)  # the frames' prompt tokens attend across time
      spatial = tokens + 1
    elif temporal_adapter:
      _attend(count, prefix, videos * tokens, t, width)
      hidden = int(width * cfg.adapter_ratio)
      count.dense(f"{prefix}/T_Adapter/D_fc1", frames * tokens, width, hidden)
      count.dense(f"{prefix}/T_Adapter/D_fc2", frames * tokens, hidden, width)
    _attend(count, prefix, frames, spatial, width)
    _adapter_and_mlp(count, prefix, frames * tokens, width, cfg.adapter_ratio)
    count.end_block()
  count.touch("visual/ln_post")
  count.dense("visual/proj", frames, width, cfg.embed_dim)


def _text_flops(cfg: model_lib.ModelConfig, texts: float, count: _MatmulCount) -> None:
  length, width = cfg.context_length, cfg.text_width
  count.touch("token_embedding")
  count.touch("positional_embedding")
  for i in range(cfg.text_layers):
    prefix = f"transformer/resblocks_{i}"
    count.start_block()
    _attend(count, prefix, texts, length, width)
    _adapter_and_mlp(count, prefix, texts * length, width, cfg.adapter_ratio)
    count.end_block()
  count.touch("ln_final")
  count.dense("text_projection", texts, width, cfg.embed_dim)


def analytic_train_flops(cfg: model_lib.ModelConfig, videos: int, trainable: frozenset[str]) -> float:
  """Matmul FLOPs of one training step over `videos` videos and as many texts (whole batch).

  Counted: both towers' projections, attention (full L x L, also for the causal text
  tower), adapters and the temporal prompt tokens; the backward as `_MatmulCount` says;
  the video-text logits. Not counted: element-wise work (LayerNorm, softmax, GELU, optimizer).
  """
  total = 0.0
  for tower in (_vision_flops, _text_flops):
    count = _MatmulCount(trainable, cfg.remat)
    tower(cfg, videos, count)
    total += count.forward + count.backward
  logits = 2.0 * videos * videos * cfg.embed_dim
  return total + 3 * logits  # forward, and the gradients of both embeddings


def analytic_eval_flops(cfg: model_lib.ModelConfig, clips: int, texts: int) -> float:
  """Matmul FLOPs of scoring `clips` clips against `texts` class-text embeddings (forward only)."""
  count = _MatmulCount(frozenset(), remat=False)
  _vision_flops(cfg, clips, count)
  return count.forward + 2.0 * clips * texts * cfg.embed_dim


# --------------------------------------------------------------------- compiling


def _shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Compiled:
  """One compiled step and what it takes per chip.

  Attributes:
    executable: `jax.stages.Compiled`.
    global_batch: videos per step over all chips.
    state_bytes: {"params": ..., "optimizer": ...} bytes per chip (largest shard).
    batch_bytes: bytes of the batch per chip.
    analytic_flops: the model's matmul FLOPs per step over all chips.
  """
  executable: Any
  global_batch: int
  state_bytes: dict[str, int]
  batch_bytes: int
  analytic_flops: float


def _optimizer(config: ml_collections.ConfigDict):
  # The schedule's lengths change no shapes or costs of the compiled step.
  return optim.make_optimizer(config.optim, total_steps=1000, warmup_steps=100)


def compile_train_step(config: ml_collections.ConfigDict, cfg: model_lib.ModelConfig, mesh: Mesh,
                       global_batch: int) -> Compiled:
  """Compiles the train step `train.train_and_evaluate` runs, for a global batch of `global_batch`."""
  patterns = tuple(config.train.trainable)
  train_step = step_lib.create_train_step(cfg, _optimizer(config), mesh, None, trainable_patterns=patterns,
                                          motion_weight=config.train.motion_weight,
                                          color=config.data.color_jitter, seed=config.seed)
  batch = step_lib.abstract_train_batch(cfg, global_batch, train_step.batch_shardings)
  executable = train_step.step.lower(train_step.state, batch).compile()
  state = train_step.state
  state_bytes = {"params": _shard_bytes((state.trainable, state.frozen)),
                 "optimizer": _shard_bytes((state.opt_state, state.step, state.rng))}
  return Compiled(executable, global_batch, state_bytes, _shard_bytes(batch),
                  analytic_train_flops(cfg, global_batch, trainable_paths(cfg, patterns)))


def compile_eval_step(config: ml_collections.ConfigDict, cfg: model_lib.ModelConfig, mesh: Mesh,
                      global_batch: int) -> Compiled:
  """Compiles evaluation's scorer (`evaluate.video_scorer`) for `global_batch` videos a step.

  The params are laid out as during training (by their logical axes), each video has
  `num_clips x num_crops` views, and the class texts are `EVAL_CLASSES` x the 16 templates.
  """
  model = model_lib.EZCLIP(cfg)
  boxed = jax.eval_shape(lambda: model_lib.init_boxed(model, jax.random.key(0)))["params"]
  params = jax.tree.map(lambda b, s: jax.ShapeDtypeStruct(b.value.shape, b.value.dtype, sharding=s),
                        boxed, sharding.logical_shardings(boxed, mesh),
                        is_leaf=lambda x: isinstance(x, flax.linen.LogicallyPartitioned))
  views = config.data.num_clips * config.data.num_crops
  res = cfg.image_resolution
  video = _batch_struct((global_batch, views, cfg.num_frames, res, res, 3), jnp.uint8, mesh)
  labels = _batch_struct((global_batch,), jnp.int32, mesh)
  mask = _batch_struct((global_batch,), jnp.bool_, mesh)
  texts = jax.ShapeDtypeStruct((len(text_prompts.TEMPLATES), EVAL_CLASSES, cfg.embed_dim), jnp.float32,
                               sharding=sharding.replicated(mesh))
  executable = evaluate.video_scorer(model, mesh).lower({"params": params}, video, labels, mask, texts).compile()
  return Compiled(executable, global_batch, {"params": _shard_bytes(params), "optimizer": 0},
                  _shard_bytes((video, labels, mask, texts)),
                  analytic_eval_flops(cfg, global_batch * views, len(text_prompts.TEMPLATES) * EVAL_CLASSES))


def _batch_struct(shape: tuple[int, ...], dtype, mesh: Mesh) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape)))


# ---------------------------------------------------------------- the compiled HLO

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# `%name = TYPE op(...` where TYPE is an array or a tuple of arrays and op a collective (or
# the -start / -done half of an asynchronous one).
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?(?P<name>\S+) = (?P<type>[^\n]*?) (?P<op>" + "|".join(COLLECTIVES)
                          + r")(?P<half>-start|-done)?\((?P<rest>[^\n]*)", re.M)
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([0-9,]*)\]")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")


def _array_sizes(type_text: str) -> list[int]:
  sizes = []
  for dtype, dims in _ARRAY.findall(type_text):
    itemsize = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)  # 0: token[]
    sizes.append(math.prod(int(d) for d in dims.split(",") if d) * itemsize)
  return sizes


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {"count", "bytes"}} of the collectives in a compiled module's HLO text.

  A collective is counted once however many times its text appears: the TPU compiler
  splits an asynchronous one into a start, continuation fusions and a done that repeat the
  instruction with its channel id. `bytes` adds up each collective's result on one chip.
  Nothing sits in a loop (the step unrolls its layers), so each runs once per step.
  """
  seen = {}
  for match in _INSTRUCTION.finditer(hlo_text):
    if match["half"] == "-done":
      continue  # its -start has the channel id and the sizes
    channel = _CHANNEL.search(match["rest"])
    sizes = _array_sizes(match["type"])
    # all-gather-start / collective-permute-start return (operand, result, ...) tuples.
    size = max(sizes) if match["half"] and match["op"] != "all-reduce" else sum(sizes)
    seen[(match["op"], channel[1] if channel else match["name"])] = size
  found = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
  for (kind, _), size in seen.items():
    found[kind]["count"] += 1
    found[kind]["bytes"] += size
  return found


# -------------------------------------------------------------------------- plans


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one compiled step needs and does per chip (JSON-ready: plain numbers and strings)."""
  mode: str
  topology: str
  device_kind: str
  chips: int
  hosts: int
  mesh: dict[str, int]
  global_batch: int
  batch_per_chip: float
  dtype: str
  remat: bool
  color_jitter: bool
  hbm: dict[str, int | None]
  fits: bool | None
  flops: float
  analytic_flops: float
  bytes_accessed: float
  collectives: dict[str, dict[str, int]]
  roofline: dict[str, float] | None
  max_batch: dict | None = None


def memory_bytes(compiled: Compiled) -> dict[str, int]:
  """Per-chip HBM of a compiled step: state, batch, temporaries, code and their total."""
  stats = compiled.executable.memory_analysis()
  arguments = stats.argument_size_in_bytes
  total = arguments + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
  return {**compiled.state_bytes, "batch": compiled.batch_bytes, "arguments": arguments,
          "outputs_not_donated": stats.output_size_in_bytes - stats.alias_size_in_bytes,
          "temporaries": stats.temp_size_in_bytes, "code": stats.generated_code_size_in_bytes,
          "total": total + stats.generated_code_size_in_bytes}


def roofline(chip: Chip | None, flops: float, bytes_accessed: float, model_flops: float,
             batch_per_chip: float) -> dict[str, float] | None:
  """The step-time lower bound max(FLOPs / peak, bytes / bandwidth) and what it implies."""
  if chip is None:
    return None
  compute_s = flops / (chip.tflops * 1e12)
  memory_s = bytes_accessed / (chip.hbm_gbps * 1e9)
  step_s = max(compute_s, memory_s)
  return {"peak_tflops": chip.tflops, "hbm_gbps": chip.hbm_gbps, "compute_s": compute_s, "memory_s": memory_s,
          "step_s": step_s, "videos_per_s_per_chip": batch_per_chip / step_s,
          "mfu_ceiling": model_flops / (chip.tflops * 1e12) / step_s}


def _cost(executable) -> dict[str, float]:
  cost = executable.cost_analysis()
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def make_plan(config: ml_collections.ConfigDict, target: Target, mode: str, compiled: Compiled,
              mesh: Mesh, cfg: model_lib.ModelConfig) -> Plan:
  chips = len(target.devices)
  cost = _cost(compiled.executable)
  hbm = memory_bytes(compiled)
  hbm["capacity"] = target.hbm_bytes
  batch_per_chip = compiled.global_batch / chips
  flops, model_flops = cost.get("flops", 0.0), compiled.analytic_flops / chips
  return Plan(
      mode=mode, topology=target.name, device_kind=target.device_kind, chips=chips, hosts=target.hosts,
      mesh=dict(mesh.shape), global_batch=compiled.global_batch, batch_per_chip=batch_per_chip, dtype=cfg.dtype,
      remat=cfg.remat, color_jitter=bool(config.data.color_jitter) and mode == "train", hbm=hbm,
      fits=None if target.hbm_bytes is None else hbm["total"] <= target.hbm_bytes,
      flops=flops, analytic_flops=model_flops, bytes_accessed=cost.get("bytes accessed", 0.0),
      collectives=collectives(compiled.executable.as_text()),
      roofline=roofline(target.chip, flops, cost.get("bytes accessed", 0.0), model_flops, batch_per_chip))


class Planner:
  """Compiles one config's step for one target at any batch size."""

  def __init__(self, config: ml_collections.ConfigDict, target: Target, mode: str):
    self.config, self.target, self.mode = config, target, mode
    self.model_config = model_config(config, target.platform)
    try:
      self.mesh = sharding.make_mesh(config.mesh_shape, target.devices)
    except ValueError as e:
      raise PlanError(f"mesh_shape={tuple(config.mesh_shape)} on {target.name} ({len(target.devices)} chips): "
                      f"{e}") from None
    self.shards = sharding.batch_shards(self.mesh)
    self._compiled = {}

  def default_batch(self) -> int:
    """The config's global batch: `data.batch_size`; eval: `data.eval_batch_size` per process,
    padded (as `evaluate` pads it) to a multiple of the process's batch shards."""
    if self.mode == "train":
      batch = self.config.data.batch_size
      if batch % self.shards:
        raise PlanError(f"data.batch_size={batch} is not a multiple of the {self.shards} batch shards "
                        f"(mesh data x fsdp = {self.mesh.shape['data']} x {self.mesh.shape['fsdp']}) of "
                        f"{self.target.name}; change --config.data.batch_size or --config.mesh_shape")
      return batch
    local = max(1, self.shards // self.target.hosts)
    return self.target.hosts * -(-self.config.data.eval_batch_size // local) * local

  def compile(self, global_batch: int) -> Compiled:
    """The step for `global_batch` videos (compiled once per batch size)."""
    if global_batch not in self._compiled:
      compile_fn = compile_train_step if self.mode == "train" else compile_eval_step
      self._compiled[global_batch] = compile_fn(self.config, self.model_config, self.mesh, global_batch)
    return self._compiled[global_batch]

  def total_bytes(self, global_batch: int) -> int | None:
    """HBM per chip of the step for `global_batch`; None when the TPU compiler runs out of memory."""
    try:
      return memory_bytes(self.compile(global_batch))["total"]
    except jax.errors.JaxRuntimeError as e:
      if not out_of_memory(e):
        raise
      return None

  def plan(self, compiled: Compiled) -> Plan:
    return make_plan(self.config, self.target, self.mode, compiled, self.mesh, self.model_config)


def out_of_memory(error: Exception) -> bool:
  """Whether a compile failed because the step does not fit in the chip's memory."""
  return "RESOURCE_EXHAUSTED" in str(error) or "Ran out of memory" in str(error)


def search_max_batch(total_bytes: Callable[[int], int | None], shards: int, chips: int, capacity: int,
                     start: int = 1, report: Callable[[str], None] = print) -> dict:
  """The largest batch per batch shard whose step fits in `capacity` bytes per chip.

  Doubles from `start` until a compile does not fit (the TPU compiler may also refuse it as
  out of memory), then bisects between the last fit and the first misfit, first probing
  the linear estimate of the boundary from their sizes (and the batch after it).

  Args:
    total_bytes: global batch -> HBM per chip of its step, None when it runs out of memory
      (`Planner.total_bytes`).
    shards: batch shards of the mesh (global batches are multiples of it).
    chips: chips of the mesh.
    capacity: HBM per chip to fit in.
    start: the first batch per shard to try.
    report: where a line per compile goes.

  Returns:
    {"batch_per_chip", "global_batch", "compiles": [{"global_batch", "total_bytes", "fits"}]}.
  """
  totals, compiles = {}, []

  def fits(per_shard: int) -> bool:
    global_batch = per_shard * shards
    totals[per_shard] = total = total_bytes(global_batch)
    ok = total is not None and total <= capacity
    compiles.append({"global_batch": global_batch, "total_bytes": total, "fits": ok})
    shown = "out of memory (compiler)" if total is None else _size(total)
    report(f"  batch {global_batch / chips:g} per chip: {shown}, {'fits' if ok else 'does not fit'}")
    return ok

  low, high = 0, start
  while high <= MAX_BATCH_LIMIT and fits(high):
    low, high = high, 2 * high
  for probe in _linear_estimate(low, high, totals, capacity):
    if low < probe < high:
      low, high = (probe, high) if fits(probe) else (low, probe)
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return {"batch_per_chip": low * shards / chips, "global_batch": low * shards, "compiles": compiles}


def _linear_estimate(low: int, high: int, totals: dict, capacity: int) -> list[int]:
  """The batch where the line through (low, total) and (high, total) reaches `capacity`, and the next."""
  if not low or totals.get(high) is None or totals[high] <= totals[low]:
    return []
  estimate = low + int((capacity - totals[low]) * (high - low) / (totals[high] - totals[low]))
  return [estimate, estimate + 1]


def run(config: ml_collections.ConfigDict, topology: str | None, mode: str = "train", max_batch: bool = False,
        hbm_gib: float | None = None, report: Callable[[str], None] = print) -> Plan:
  """Compiles the step `config` describes for `topology` (None: this machine) and plans it.

  Args:
    config: an experiment config (`configs/*.py`).
    topology: a libtpu topology name such as "v5e:2x4", or None.
    mode: "train" or "eval".
    max_batch: also search the largest per-chip batch that fits.
    hbm_gib: plan for this much HBM per chip instead of the chip's.
    report: where progress lines go.

  Returns:
    The `Plan` of the config's batch (with `max_batch` filled in when asked).
  """
  target = make_target(topology, hbm_gib)
  planner = Planner(config, target, mode)
  batch = planner.default_batch()
  report(f"compiling the {mode} step for {target.name} ({len(target.devices)} x {target.device_kind}), "
         f"global batch {batch} ...")
  plan = planner.plan(planner.compile(batch))
  if max_batch:
    if target.hbm_bytes is None:
      raise PlanError(f"--max-batch: the memory of {target.device_kind} is unknown; pass --hbm-gib")
    report("searching the largest batch that fits:")
    start = batch // planner.shards if plan.fits else 1
    found = search_max_batch(planner.total_bytes, planner.shards, len(target.devices), target.hbm_bytes, start,
                             report)
    plan = dataclasses.replace(plan, max_batch=found)
  return plan


# ------------------------------------------------------------------------- output


def _size(n: float | None) -> str:
  if n is None:
    return "unknown"
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{n:.0f} B"


def _flop(n: float) -> str:
  for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if n >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.3g} FLOP"


def format_table(plan: Plan) -> str:
  """The plan as aligned `name  value` lines."""
  hbm = plan.hbm
  mesh = " x ".join(f"{axis} {size}" for axis, size in plan.mesh.items())
  fits = {None: "unknown", True: "yes", False: "NO"}[plan.fits]
  capacity = "host RAM" if hbm["capacity"] is None and plan.device_kind == "cpu" else _size(hbm["capacity"])
  rows = [
      ("step", f"{plan.mode} ({plan.dtype}, remat {'on' if plan.remat else 'off'}"
               + (f", colour jitter {'on' if plan.color_jitter else 'off'})" if plan.mode == "train" else ")")),
      ("target", f"{plan.topology}: {plan.chips} x {plan.device_kind}, {plan.hosts} host(s)"),
      ("mesh", mesh),
      ("batch", f"{plan.global_batch} global, {plan.batch_per_chip:g} per chip"),
      ("HBM per chip", f"{_size(hbm['total'])} of {capacity}: fits {fits}"),
      ("  parameters", _size(hbm["params"])),
      ("  optimizer state", _size(hbm["optimizer"])),
      ("  batch arrays", _size(hbm["batch"])),
      ("  temporaries", _size(hbm["temporaries"])),
      ("  outputs, code", f"{_size(hbm['outputs_not_donated'])}, {_size(hbm['code'])}"),
      ("FLOPs per chip", f"{_flop(plan.flops)} compiled, {_flop(plan.analytic_flops)} analytic (model "
                         f"matmuls; ratio {plan.flops / plan.analytic_flops:.3f})"),
      ("bytes accessed", f"{plan.bytes_accessed / 1e9:.3g} GB per chip"),
  ]
  for kind, entry in plan.collectives.items():
    rows.append((f"  {kind}", f"{entry['count']} ops, {_size(entry['bytes'])}"))
  if plan.roofline:
    r = plan.roofline
    rows += [("roofline step", f"{r['step_s'] * 1e3:.3g} ms (compute {r['compute_s'] * 1e3:.3g} ms at "
                               f"{r['peak_tflops']:g} TFLOP/s, memory {r['memory_s'] * 1e3:.3g} ms at "
                               f"{r['hbm_gbps']:g} GB/s)"),
             ("  videos/s per chip", f"{r['videos_per_s_per_chip']:.3g} at most"),
             ("  MFU ceiling", f"{100 * r['mfu_ceiling']:.0f}%")]
  else:
    rows.append(("roofline", f"unknown peaks for {plan.device_kind}"))
  if plan.max_batch:
    rows.append(("max batch", f"{plan.max_batch['batch_per_chip']:g} per chip "
                              f"({plan.max_batch['global_batch']} global, {len(plan.max_batch['compiles'])} compiles)"))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _prepare_environment(topology: str | None) -> None:
  """Before JAX starts its backends: a topology compiles on the CPU backend (no TPU is opened)."""
  if topology and not os.environ.get("JAX_PLATFORMS"):
    jax.config.update("jax_platforms", "cpu")
  else:
    platforms.quiet_absent_tpu()


def define_flags() -> dict[str, flags.FlagHolder]:
  """The command line (defined when run as a program, so that importing this module adds no flags)."""
  holders = {
      "config": config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True),
      "topology": flags.DEFINE_string("topology", None, "libtpu topology name, e.g. v5e:2x4; default: this machine."),
      "mode": flags.DEFINE_enum("mode", "train", ["train", "eval"], "Compile the train step or the eval step."),
      "max_batch": flags.DEFINE_bool("max-batch", False, "Also search the largest per-chip batch that fits in HBM."),
      "json": flags.DEFINE_bool("json", False, "Print the plan as JSON instead of a table."),
      "hbm_gib": flags.DEFINE_float("hbm-gib", None, "HBM per chip to plan for, in GiB (default: the chip's)."),
  }
  flags.mark_flags_as_required(["config"])
  return holders


def main(argv: Sequence[str], holders: dict[str, flags.FlagHolder]) -> int:
  del argv
  values = {name: holder.value for name, holder in holders.items()}
  console.set_log_level(console.LOG_LEVEL.value)  # JAX logs at INFO that it found no TPU
  _prepare_environment(values["topology"])
  progress = functools.partial(print, file=sys.stderr, flush=True)
  try:
    plan = run(values["config"], values["topology"], values["mode"], values["max_batch"], values["hbm_gib"],
               report=progress)
  except (PlanError, FileNotFoundError) as e:
    print(f"plan: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(dataclasses.asdict(plan), indent=2) if values["json"] else format_table(plan))
  return 0


if __name__ == "__main__":
  _HOLDERS = define_flags()
  app.run(functools.partial(main, holders=_HOLDERS))
