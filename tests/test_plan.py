"""plan: train steps compiled for TPU slices on this CPU (libtpu, no TPU), checked against
hand-derived FLOPs, independently counted bytes and the compiled HLO."""

import json
import pathlib
import re
import subprocess
import sys

import flax.linen as nn
import jax
import pytest

from configs import common
from ezclip_jax import model as model_lib
from ezclip_jax import plan as plan_lib

# Wide enough (256, head_dim 64) that matmuls are nearly all of the FLOPs, small enough to
# compile in seconds: T=4 frames of 4x4 patches (17 tokens, 18 with the prompt), one block
# per tower, 16 text tokens.
ARCH = model_lib.ModelConfig(embed_dim=128, image_resolution=64, vision_layers=1, vision_width=256,
                             vision_patch_size=16, vision_heads=4, context_length=16, vocab_size=1000,
                             text_width=256, text_heads=4, text_layers=1, num_frames=4)
V5E_HBM = 16 * 2**30


def train_flops(videos: int, remat: bool = False) -> float:
  """ARCH's matmul FLOPs of one training step, derived by hand (adapters and prompts train).

  Vision, per video: T=4 frames of N=17 tokens (+1 prompt token in the spatial attention).
  Everything after the first prompt depends on trainable params, so its backward costs
  the forward again for each weight matmul (input gradient), twice for attention (both
  operands), plus the adapters' weight gradients; the patch embedding has no backward.
  Text, per text: L=16 tokens; its first trainable param is the adapter after the first
  attention, so that attention has no backward and the adapter's first layer only a
  weight gradient.
  With remat, the backward recomputes each block's forward but for the MLP's second
  matmul (its output is the block's output, which is kept).
  """
  t, n, w, d, hidden = 4, 17, 256, 128, 64
  np_ = n + 1
  conv = 2 * t * 16 * (16 * 16 * 3) * w
  prompt_proj = 2 * t * w * 3 * w + 2 * t * w * w
  prompt_attn = 2 * 2 * t * t * w
  spatial_proj = t * (2 * np_ * w * 3 * w + 2 * np_ * w * w)
  spatial_attn = t * 2 * 2 * np_ * np_ * w
  adapter = t * 2 * 2 * n * w * hidden
  mlp = t * 2 * 2 * n * w * 4 * w
  head = t * 2 * w * d
  weights = prompt_proj + spatial_proj + adapter + mlp + head
  vision = conv + 2 * weights + 3 * (prompt_attn + spatial_attn) + adapter

  length = 16
  attention = 2 * length * w * 3 * w + 2 * 2 * length * length * w + 2 * length * w * w
  fc1 = fc2 = 2 * length * w * hidden
  text = attention + 2 * fc1 + 3 * fc2 + 2 * (2 * 2 * length * w * 4 * w) + 2 * (2 * w * d)

  if remat:
    vision += prompt_proj + prompt_attn + spatial_proj + spatial_attn + adapter + mlp / 2
    text += attention + fc1 + fc2 + 2 * length * w * 4 * w
  logits = 2 * videos * videos * d
  return videos * (vision + text) + 3 * logits


def eval_flops(clips: int, texts: int) -> float:
  """ARCH's forward matmul FLOPs of scoring `clips` clips against `texts` class texts."""
  t, n, w, d, hidden = 4, 17, 256, 128, 64
  np_ = n + 1
  per_clip = (2 * t * 16 * 768 * w + 2 * t * 4 * w * w + 2 * 2 * t * t * w
              + t * (2 * np_ * 4 * w * w + 2 * 2 * np_ * np_ * w + 2 * 2 * n * w * hidden + 2 * 2 * n * w * 4 * w
                     + 2 * w * d))
  return clips * per_clip + 2 * clips * texts * d


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> pathlib.Path:
  """A pretrained directory with only ARCH's model_config.json: the planner reads no weights."""
  directory = tmp_path_factory.mktemp("arch")
  (directory / "model_config.json").write_text(ARCH.to_json())
  return directory


def make_config(pretrained: pathlib.Path, batch: int, mesh=(-1, 1, 1), remat: bool = False):
  config = common.get_config()
  config.model.remat = remat
  config.model.pretrained = str(pretrained)
  config.model.num_frames = ARCH.num_frames  # training (and so the planner) refuses a mismatch
  config.data.batch_size = batch
  config.data.color_jitter = False  # the model's FLOPs alone
  config.mesh_shape = mesh
  return config


@pytest.fixture(scope="module")
def param_leaves():
  """ARCH's params, initialised for real on the CPU, with their logical axis names."""
  boxed = jax.jit(lambda: model_lib.init_boxed(model_lib.EZCLIP(ARCH), jax.random.key(0)))()["params"]
  return jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def param_bytes(leaves, fsdp: int = 1) -> int:
  """Bytes one chip holds: every param, with `embed` dimensions split `fsdp` ways."""
  return sum(leaf.value.nbytes // (fsdp if "embed" in leaf.names else 1) for leaf in leaves)


@pytest.fixture(scope="module")
def v5e_2x2(pretrained):
  """(planner, compiled step, plan) for v5e:2x2, data parallel, global batch 8."""
  planner = plan_lib.Planner(make_config(pretrained, 8), plan_lib.make_target("v5e:2x2"), "train")
  compiled = planner.compile(8)
  return planner, compiled, planner.plan(compiled)


def _entry_parameters(hlo_text: str) -> str:
  entry = hlo_text[hlo_text.index("\nENTRY "):]
  return "\n".join(line for line in entry.splitlines() if " parameter(" in line)


def check_data_parallel_plan(plan, executable, leaves, chips: int, hosts: int, global_batch: int,
                             remat: bool = False) -> None:
  assert (plan.chips, plan.hosts, plan.global_batch) == (chips, hosts, global_batch)
  assert plan.mesh == {"data": chips, "fsdp": 1, "tensor": 1}
  assert plan.batch_per_chip == global_batch / chips
  # The compiled program takes this chip's share of the clips: uint8 [B / chips, T, H, W, 3].
  videos = re.findall(r"u8\[(\d+),4,64,64,3\]", _entry_parameters(executable.as_text()))
  assert videos == [str(global_batch // chips)]

  assert plan.remat == remat
  expected = train_flops(global_batch, remat) / chips
  assert plan.analytic_flops == pytest.approx(expected, rel=1e-9)
  assert plan.flops == pytest.approx(expected, rel=0.05)

  params = param_bytes(leaves)
  assert plan.hbm["params"] == params
  state = plan.hbm["params"] + plan.hbm["optimizer"] + plan.hbm["batch"]
  arguments = executable.memory_analysis().argument_size_in_bytes
  assert state <= arguments <= 1.02 * state  # TPU tiles pad small arrays a little
  assert plan.hbm["capacity"] == V5E_HBM and plan.fits

  # Replicated params are never gathered; what is: each video's and text's embedding.
  gathered = plan.collectives["all-gather"]["bytes"]
  assert gathered <= 2 * global_batch * ARCH.embed_dim * 4 < params / 100
  # The gradients of the trainable params (adapters, prompts) are summed over the chips, in the
  # compute dtype (bfloat16: 2 bytes a param, against the 8 of Adam's two float32 moments).
  assert plan.dtype == "bfloat16"
  assert plan.collectives["all-reduce"]["bytes"] >= plan.hbm["optimizer"] / 4


def test_v5e_2x2_train_step(v5e_2x2, param_leaves):
  _, compiled, plan = v5e_2x2
  check_data_parallel_plan(plan, compiled.executable, param_leaves, chips=4, hosts=1, global_batch=8)
  assert plan.topology == "v5e:2x2" and plan.device_kind == "TPU v5 lite"
  assert plan.roofline["step_s"] == max(plan.flops / 197e12, plan.bytes_accessed / 819e9)


def test_multi_host_train_step_with_remat(pretrained, param_leaves):
  planner = plan_lib.Planner(make_config(pretrained, 16, remat=True), plan_lib.make_target("v5e:4x4"), "train")
  compiled = planner.compile(16)
  check_data_parallel_plan(planner.plan(compiled), compiled.executable, param_leaves, chips=16, hosts=4,
                           global_batch=16, remat=True)


def test_fsdp_shards_and_gathers_the_parameters(pretrained, param_leaves):
  """The contrast to data parallelism: with fsdp=4 each chip holds a quarter of every
  `embed` dimension and gathers params (the compiler moves some activations instead)."""
  planner = plan_lib.Planner(make_config(pretrained, 8, mesh=(1, 4, 1)), plan_lib.make_target("v5e:2x2"), "train")
  plan = planner.plan(planner.compile(8))
  held = param_bytes(param_leaves, fsdp=4)
  assert plan.hbm["params"] == held < param_bytes(param_leaves) / 2
  assert plan.collectives["all-gather"]["bytes"] > param_bytes(param_leaves) / 10
  assert plan.batch_per_chip == 2


def test_max_batch_is_the_boundary(v5e_2x2):
  planner, compiled, _ = v5e_2x2
  stats = compiled.executable.memory_analysis()
  # Room for 2 videos per chip (the fixture's batch) and under 1 KiB more: a third video's
  # uint8 frames alone are 48 KiB.
  capacity = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
              + stats.temp_size_in_bytes + stats.generated_code_size_in_bytes + 1024)
  lines = []
  found = plan_lib.search_max_batch(planner.total_bytes, planner.shards, 4, capacity, report=lines.append)
  assert [c["global_batch"] for c in found["compiles"]] == [4, 8, 16, 12]  # doubling, then bisection
  assert (found["batch_per_chip"], found["global_batch"]) == (2, 8)
  assert len(lines) == 4 and "does not fit" in lines[-1]

  def total(global_batch):  # the planner keeps each batch's compiled step
    s = planner.compile(global_batch).executable.memory_analysis()
    return (s.argument_size_in_bytes + s.output_size_in_bytes - s.alias_size_in_bytes + s.temp_size_in_bytes
            + s.generated_code_size_in_bytes)

  assert total(8) <= capacity < total(12)


@pytest.mark.parametrize("memory, capacity, oom_from, largest", [
    (lambda b: 1000 + 100 * b, 1000 + 100 * 37 + 50, None, 37),  # linear: the estimate is the boundary
    (lambda b: 1000 + 3 * b * b, 1000 + 3 * 20 * 20 + 10, None, 20),  # quadratic: bisection finishes
    (lambda b: 1000 + 100 * b, 10**9, 45, 44),  # the compiler refuses first
    (lambda b: 1000 + 100 * b, 500, None, 0),  # not even one video fits
])
def test_max_batch_search(memory, capacity, oom_from, largest):
  """Steps whose HBM per chip is `memory(batch per shard)`, out of memory from `oom_from` on."""
  probed = []

  def total_bytes(global_batch):
    probed.append(global_batch // 4)
    return None if oom_from and global_batch // 4 >= oom_from else memory(global_batch // 4)

  found = plan_lib.search_max_batch(total_bytes, shards=4, chips=4, capacity=capacity, report=lambda line: None)
  assert found["global_batch"] == 4 * largest and found["batch_per_chip"] == largest
  if largest:
    assert largest in probed
  assert largest + 1 in probed
  assert len(probed) <= 2 * (largest + 1).bit_length() + 2


def _run_cli(pretrained: pathlib.Path, *flags: str) -> subprocess.CompletedProcess:
  command = [sys.executable, "-m", "ezclip_jax.plan", "--config", "configs/k400_zero_shot.py",
             f"--config.model.pretrained={pretrained}", f"--config.model.num_frames={ARCH.num_frames}",
             "--topology", "v5e:2x2", "--mode", "eval", *flags]
  return subprocess.run(command, cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
                        timeout=600)


def test_cli_json_and_table_of_the_eval_step(pretrained):
  result = _run_cli(pretrained, "--json")
  assert result.returncode == 0, result.stderr[-3000:]
  plan = json.loads(result.stdout)
  # configs/k400_zero_shot.py: 16 videos per process (one host), one view each.
  assert (plan["mode"], plan["chips"], plan["global_batch"], plan["batch_per_chip"]) == ("eval", 4, 16, 4)
  expected = eval_flops(16, 16 * plan_lib.EVAL_CLASSES) / 4
  assert plan["analytic_flops"] == pytest.approx(expected, rel=1e-9)
  assert plan["flops"] == pytest.approx(expected, rel=0.05)
  assert plan["hbm"]["optimizer"] == 0 and plan["fits"] is True
  assert set(plan["collectives"]) == set(plan_lib.COLLECTIVES)

  table = _run_cli(pretrained)
  assert table.returncode == 0, table.stderr[-3000:]
  lines = table.stdout.splitlines()
  rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines)
  assert len(rows) == len(lines)
  assert rows["target"] == "v5e:2x2: 4 x TPU v5 lite, 1 host(s)"
  assert rows["batch"] == "16 global, 4 per chip"
  assert rows["HBM per chip"].endswith("of 16.00 GiB: fits yes")
  for name in ("FLOPs per chip", "bytes accessed", "all-gather", "collective-permute", "roofline step",
               "MFU ceiling"):
    assert name in rows


def test_without_libtpu_one_line_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` now raises ImportError
  with pytest.raises(plan_lib.PlanError) as error:
    plan_lib.tpu_topology_devices("v5e:2x2")
  message = str(error.value)
  assert "\n" not in message and 'pip install -e ".[tpu]"' in message and "v5e:2x2" in message


@pytest.mark.parametrize("name", ["v5e-8", "v4-8", "v9:2x2"])
def test_unknown_topology_is_one_line(name):
  with pytest.raises(plan_lib.PlanError) as error:
    plan_lib.tpu_topology_devices(name)
  assert "\n" not in str(error.value) and "v5e:2x4 (v5e-8)" in str(error.value)


def test_batch_must_split_over_the_batch_shards(pretrained):
  planner = plan_lib.Planner(make_config(pretrained, 6), plan_lib.make_target("v5e:2x2"), "train")
  with pytest.raises(plan_lib.PlanError, match=r"data.batch_size=6 is not a multiple of the 4 batch shards"):
    planner.default_batch()


def test_auto_dtype_follows_the_target():
  config = common.get_config()
  assert config.model.dtype == "auto"
  assert [plan_lib.model_config(config, p).dtype for p in ("tpu", "gpu", "cpu")] == ["bfloat16", "bfloat16", "float32"]
  config.model.dtype = "float32"
  assert plan_lib.model_config(config, "tpu").dtype == "float32"


def test_collectives_count_an_async_collective_once():
  hlo = """
  %all-gather-start = (f32[2,8]{1,0}, f32[8,8]{1,0}) all-gather-start(%p), channel_id=3, dimensions={0}
  %all-gather-done = f32[8,8]{1,0} all-gather-done(%all-gather-start)
  %fused = f32[8,8]{1,0} all-gather(%q), channel_id=3, dimensions={0}
  %all-reduce.1 = (f32[32]{0}, bf16[4,128]{1,0:T(4,128)}, /*index=2*/f32[]) all-reduce(%a, %b, %c), channel_id=7
  ROOT %rs = bf16[2,64]{1,0} reduce-scatter(%x), channel_id=9, dimensions={0}
  """
  found = plan_lib.collectives(hlo)
  assert found["all-gather"] == {"count": 1, "bytes": 8 * 8 * 4}
  assert found["all-reduce"] == {"count": 1, "bytes": 32 * 4 + 4 * 128 * 2 + 4}
  assert found["reduce-scatter"] == {"count": 1, "bytes": 2 * 64 * 2}
  assert found["all-to-all"] == found["collective-permute"] == {"count": 0, "bytes": 0}
