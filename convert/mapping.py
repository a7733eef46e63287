"""The PyTorch <-> Flax parameter table of EZ-CLIP, in both directions.

Each `Entry` ties one or more PyTorch state-dict keys to one or more Flax param
paths with a pair of exact inverse transforms (transposes and reshapes only, so
a round trip is bit-for-bit). This module needs numpy only.
"""

import dataclasses
from typing import Callable

import numpy as np

from ezclip_jax.model import ModelConfig

FlaxPath = tuple[str, ...]
Transform = Callable[[list[np.ndarray]], list[np.ndarray]]

# Parameters EZ-CLIP adds to CLIP: absent from a backbone-only CLIP checkpoint.
EZCLIP_ADDITIONS = ("T_prompt_embeddings", "temporal_embedding", "Adapter")


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_keys: tuple[str, ...]
  flax_paths: tuple[FlaxPath, ...]
  to_flax: Transform
  to_torch: Transform

  @property
  def is_ezclip_addition(self) -> bool:
    return any(part in key for key in self.torch_keys for part in EZCLIP_ADDITIONS)


def _same(arrays):
  return list(arrays)


def _transpose(arrays):
  return [a.T for a in arrays]


def _one(torch_key: str, flax_path: FlaxPath, to_flax=_same, to_torch=_same) -> Entry:
  return Entry((torch_key,), (flax_path,), to_flax, to_torch)


def _linear(torch_prefix: str, flax_prefix: FlaxPath) -> list[Entry]:
  return [_one(f"{torch_prefix}.weight", flax_prefix + ("kernel",), _transpose, _transpose),
          _one(f"{torch_prefix}.bias", flax_prefix + ("bias",))]


def _layer_norm(torch_prefix: str, flax_prefix: FlaxPath) -> list[Entry]:
  return [_one(f"{torch_prefix}.weight", flax_prefix + ("scale",)),
          _one(f"{torch_prefix}.bias", flax_prefix + ("bias",))]


def _attention(torch_prefix: str, flax_prefix: FlaxPath, heads: int) -> list[Entry]:
  """torch packs q, k, v rows into in_proj; Flax keeps them as (width, heads, head_dim)."""
  qkv = tuple(flax_prefix + (name,) for name in ("query", "key", "value"))

  def in_weight_to_flax(arrays):
    (packed,) = arrays
    width = packed.shape[1]
    return [w.T.reshape(width, heads, -1) for w in np.split(packed, 3, axis=0)]

  def in_weight_to_torch(kernels):
    return [np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels], axis=0)]

  def in_bias_to_flax(arrays):
    return [b.reshape(heads, -1) for b in np.split(arrays[0], 3)]

  def in_bias_to_torch(biases):
    return [np.concatenate([b.reshape(-1) for b in biases])]

  def out_to_flax(arrays):
    return [arrays[0].T.reshape(heads, -1, arrays[0].shape[0])]

  def out_to_torch(arrays):
    kernel = arrays[0]
    return [kernel.reshape(-1, kernel.shape[-1]).T]

  return [
      Entry((f"{torch_prefix}.in_proj_weight",), tuple(p + ("kernel",) for p in qkv),
            in_weight_to_flax, in_weight_to_torch),
      Entry((f"{torch_prefix}.in_proj_bias",), tuple(p + ("bias",) for p in qkv),
            in_bias_to_flax, in_bias_to_torch),
      _one(f"{torch_prefix}.out_proj.weight", flax_prefix + ("out", "kernel"), out_to_flax, out_to_torch),
      _one(f"{torch_prefix}.out_proj.bias", flax_prefix + ("out", "bias")),
  ]


def _block(torch_prefix: str, flax_prefix: FlaxPath, heads: int, t_adapter: bool) -> list[Entry]:
  entries = _attention(f"{torch_prefix}.attn", flax_prefix + ("attn",), heads)
  entries += _layer_norm(f"{torch_prefix}.ln_1", flax_prefix + ("ln_1",))
  entries += _layer_norm(f"{torch_prefix}.ln_2", flax_prefix + ("ln_2",))
  adapters = ["Adapter", "T_Adapter"] if t_adapter else ["Adapter"]
  for adapter in adapters:
    for fc in ("D_fc1", "D_fc2"):
      entries += _linear(f"{torch_prefix}.{adapter}.{fc}", flax_prefix + (adapter, fc))
  for fc in ("c_fc", "c_proj"):
    entries += _linear(f"{torch_prefix}.mlp.{fc}", flax_prefix + ("mlp", fc))
  return entries


def _conv_to_flax(arrays):
  return [arrays[0].transpose(2, 3, 1, 0)]  # OIHW -> HWIO


def _conv_to_torch(arrays):
  return [arrays[0].transpose(3, 2, 0, 1)]  # HWIO -> OIHW


def _vision(config: ModelConfig) -> list[Entry]:
  v = ("visual",)
  entries = [
      _one("visual.conv1.weight", v + ("conv1", "kernel"), _conv_to_flax, _conv_to_torch),
      _one("visual.class_embedding", v + ("class_embedding",)),
      _one("visual.positional_embedding", v + ("positional_embedding",)),
      _one("visual.temporal_embedding", v + ("temporal_embedding",)),
      _one("visual.proj", v + ("proj",)),
  ]
  entries += _layer_norm("visual.ln_pre", v + ("ln_pre",))
  entries += _layer_norm("visual.ln_post", v + ("ln_post",))
  if config.use_prompts:
    entries.append(_one("visual.transformer.T_prompt_embeddings",
                        v + ("transformer", "T_prompt_embeddings")))
  t_adapter = config.t_adapter and not config.use_prompts
  for i in range(config.vision_layers):
    entries += _block(f"visual.transformer.resblocks.{i}", v + ("transformer", f"resblocks_{i}"),
                      config.vision_heads, t_adapter)
  return entries


def _text(config: ModelConfig) -> list[Entry]:
  entries = [
      _one("token_embedding.weight", ("token_embedding", "embedding")),
      _one("positional_embedding", ("positional_embedding",)),
      _one("text_projection", ("text_projection",)),
      _one("logit_scale", ("logit_scale",)),
  ]
  entries += _layer_norm("ln_final", ("ln_final",))
  for i in range(config.text_layers):
    entries += _block(f"transformer.resblocks.{i}", ("transformer", f"resblocks_{i}"),
                      config.text_heads, t_adapter=False)
  return entries


def parameter_table(config: ModelConfig) -> list[Entry]:
  """Every parameter of the official EZ-CLIP model for `config`, in state-dict order."""
  return _vision(config) + _text(config)


def torch_shapes(entry: Entry, flax_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
  """The torch shapes `entry` expects, given its Flax shapes (no real memory used)."""
  views = [np.broadcast_to(np.zeros((), np.float32), shape) for shape in flax_shapes]
  return [tuple(a.shape) for a in entry.to_torch(views)]
