"""The PyTorch <-> Flax parameter table of EZ-CLIP, in both directions.

Each `Entry` ties one PyTorch state-dict key to one Flax param path with a pair
of exact inverse transforms (transposes and reshapes only, so a round trip is
bit-for-bit). This module needs numpy only.
"""

import dataclasses
from typing import Callable

import numpy as np

from ezclip_jax.model import ModelConfig

FlaxPath = tuple[str, ...]
Transform = Callable[[np.ndarray], np.ndarray]

# Parameters EZ-CLIP adds to CLIP: absent from a backbone-only CLIP checkpoint.
EZCLIP_ADDITIONS = ("T_prompt_embeddings", "temporal_embedding", "Adapter")


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_key: str
  flax_path: FlaxPath
  to_flax: Transform = lambda a: a
  to_torch: Transform = lambda a: a

  @property
  def is_ezclip_addition(self) -> bool:
    return any(part in self.torch_key for part in EZCLIP_ADDITIONS)


def _transpose(a: np.ndarray) -> np.ndarray:
  return a.T


def _linear(torch_prefix: str, flax_prefix: FlaxPath) -> list[Entry]:
  return [Entry(f"{torch_prefix}.weight", flax_prefix + ("kernel",), _transpose, _transpose),
          Entry(f"{torch_prefix}.bias", flax_prefix + ("bias",))]


def _layer_norm(torch_prefix: str, flax_prefix: FlaxPath) -> list[Entry]:
  return [Entry(f"{torch_prefix}.weight", flax_prefix + ("scale",)),
          Entry(f"{torch_prefix}.bias", flax_prefix + ("bias",))]


def _attention(torch_prefix: str, flax_prefix: FlaxPath, heads: int) -> list[Entry]:
  """torch packs q, k, v rows as in_proj [3W, W]; Flax keeps (W, 3, heads, head_dim)."""

  def in_weight_to_flax(packed):
    return packed.T.reshape(packed.shape[1], 3, heads, -1)

  def in_weight_to_torch(kernel):
    return kernel.reshape(kernel.shape[0], -1).T

  def out_to_flax(weight):
    return weight.T.reshape(heads, -1, weight.shape[0])

  def out_to_torch(kernel):
    return kernel.reshape(-1, kernel.shape[-1]).T

  return [
      Entry(f"{torch_prefix}.in_proj_weight", flax_prefix + ("in_proj", "kernel"),
            in_weight_to_flax, in_weight_to_torch),
      Entry(f"{torch_prefix}.in_proj_bias", flax_prefix + ("in_proj", "bias"),
            lambda b: b.reshape(3, heads, -1), lambda b: b.reshape(-1)),
      Entry(f"{torch_prefix}.out_proj.weight", flax_prefix + ("out_proj", "kernel"), out_to_flax,
            out_to_torch),
      Entry(f"{torch_prefix}.out_proj.bias", flax_prefix + ("out_proj", "bias")),
  ]


def _block(torch_prefix: str, flax_prefix: FlaxPath, heads: int, t_adapter: bool) -> list[Entry]:
  entries = _attention(f"{torch_prefix}.attn", flax_prefix + ("attn",), heads)
  entries += _layer_norm(f"{torch_prefix}.ln_1", flax_prefix + ("ln_1",))
  adapters = ["T_Adapter", "Adapter"] if t_adapter else ["Adapter"]
  for adapter in adapters:
    for fc in ("D_fc1", "D_fc2"):
      entries += _linear(f"{torch_prefix}.{adapter}.{fc}", flax_prefix + (adapter, fc))
  for fc in ("c_fc", "c_proj"):
    entries += _linear(f"{torch_prefix}.mlp.{fc}", flax_prefix + ("mlp", fc))
  return entries + _layer_norm(f"{torch_prefix}.ln_2", flax_prefix + ("ln_2",))


def _conv_to_flax(weight):
  return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _conv_to_torch(kernel):
  return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _vision(config: ModelConfig) -> list[Entry]:
  v = ("visual",)
  entries = [
      Entry("visual.class_embedding", v + ("class_embedding",)),
      Entry("visual.positional_embedding", v + ("positional_embedding",)),
      Entry("visual.temporal_embedding", v + ("temporal_embedding",)),
      Entry("visual.proj", v + ("proj",)),
      Entry("visual.conv1.weight", v + ("conv1", "kernel"), _conv_to_flax, _conv_to_torch),
  ]
  entries += _layer_norm("visual.ln_pre", v + ("ln_pre",))
  if config.use_prompts:
    entries.append(Entry("visual.transformer.T_prompt_embeddings",
                         v + ("transformer", "T_prompt_embeddings")))
  t_adapter = config.t_adapter and not config.use_prompts
  for i in range(config.vision_layers):
    entries += _block(f"visual.transformer.resblocks.{i}", v + ("transformer", f"resblocks_{i}"),
                      config.vision_heads, t_adapter)
  return entries + _layer_norm("visual.ln_post", v + ("ln_post",))


def _text(config: ModelConfig) -> list[Entry]:
  entries = []
  for i in range(config.text_layers):
    entries += _block(f"transformer.resblocks.{i}", ("transformer", f"resblocks_{i}"),
                      config.text_heads, t_adapter=False)
  entries.append(Entry("token_embedding.weight", ("token_embedding", "embedding")))
  return entries + _layer_norm("ln_final", ("ln_final",))


def parameter_table(config: ModelConfig) -> list[Entry]:
  """Every parameter of the official EZ-CLIP model for `config`, in its state-dict order."""
  # torch lists a module's own parameters before its submodules'.
  top = [Entry("positional_embedding", ("positional_embedding",)),
         Entry("text_projection", ("text_projection",)),
         Entry("logit_scale", ("logit_scale",))]
  return top + _vision(config) + _text(config)


def torch_shape(entry: Entry, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torch shape `entry` expects, given its Flax shape (no real memory used)."""
  return tuple(entry.to_torch(np.broadcast_to(np.zeros((), np.float32), flax_shape)).shape)
