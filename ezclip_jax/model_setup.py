"""Config -> model: the architecture and starting params that `config.model` describes.

A random-init architecture (`model.arch`) or a converted CLIP or training workdir
(`model.pretrained`), with this run's regularisation and compute dtype. Training, `--mode
eval` and the TPU planner build their model with it.
"""

import dataclasses

import jax
import ml_collections

from ezclip_jax import checkpoint
from ezclip_jax import model as model_lib


def model_config(config: ml_collections.ConfigDict, platform: str,
                 pretrained: model_lib.ModelConfig | None = None) -> model_lib.ModelConfig:
  """The architecture `config.model` describes, with this run's regularisation and dtype.

  Args:
    config: the experiment config.
    platform: the devices' platform (`cpu`, `gpu`, `tpu`), for `model.dtype=auto`.
    pretrained: the architecture of `config.model.pretrained`; it must be the variant
      (prompts, T-adapter, frames) the config asks for. None: `config.model.arch`.
  """
  overrides = {k: config.model[k] for k in ("drop_path_rate", "prompt_dropout", "emb_dropout", "remat")}
  overrides["dtype"] = model_lib.resolve_dtype(config.model.dtype, platform)
  if pretrained is None:
    if config.model.arch not in model_lib.ARCHITECTURES:
      raise ValueError(f"model.arch={config.model.arch!r}; expected one of {sorted(model_lib.ARCHITECTURES)}")
    return dataclasses.replace(model_lib.ARCHITECTURES[config.model.arch], num_frames=config.model.num_frames,
                               use_prompts=config.model.use_prompts, t_adapter=config.model.t_adapter, **overrides)
  for key in ("use_prompts", "t_adapter"):
    if getattr(pretrained, key) != config.model[key]:
      raise ValueError(f"model.{key}={config.model[key]} but {config.model.pretrained} has "
                       f"{key}={getattr(pretrained, key)}; convert the checkpoint for this variant "
                       "(python -m convert.torch_to_flax ... --no-prompts / --t-adapter)")
  if pretrained.num_frames != config.model.num_frames:
    raise ValueError(f"model.num_frames={config.model.num_frames} but {config.model.pretrained} was "
                     f"converted for {pretrained.num_frames} frames (convert with --num-frames)")
  return dataclasses.replace(pretrained, **overrides)


def initial_params(config: ml_collections.ConfigDict) -> tuple[model_lib.ModelConfig, dict]:
  """The architecture (`model_config`) and starting params: `model.pretrained`'s, else random."""
  platform = jax.devices()[0].platform
  if config.model.pretrained:
    model, variables = checkpoint.load_pretrained(config.model.pretrained)
    return model_config(config, platform, model.config), variables["params"]
  architecture = model_config(config, platform)
  return architecture, model_lib.init_variables(architecture, jax.random.key(config.seed))["params"]
