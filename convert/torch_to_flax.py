"""Convert a PyTorch CLIP / EZ-CLIP checkpoint into an ezclip-jax pretrained directory.

  python -m convert.torch_to_flax SRC DST_DIR [--num-frames 8] [--allow-missing PATTERN]

SRC may be an OpenAI CLIP `.pt` (TorchScript archive), a plain state dict, an
official EZ-CLIP training checkpoint (`{'model_state_dict': ...}`, `module.`
prefixes allowed), an open_clip state dict, or a `.safetensors` file. The
architecture is inferred from tensor shapes. A backbone-only CLIP checkpoint gets
the EZ-CLIP additions initialised as the official code does (prompts uniform,
adapters' up-projection zero, temporal embedding zero). Unknown, missing or
mis-shaped tensors are an error listing them.
"""

import argparse
import fnmatch
import pathlib
import pickle
import re
import sys
import zipfile
from typing import Sequence

import jax
import numpy as np

from convert import mapping
from convert import torchscript
from ezclip_jax import checkpoint
from ezclip_jax import errors
from ezclip_jax import model as model_lib

# Metadata entries of OpenAI's TorchScript archives, not parameters.
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message says why."""


def _names(keys: Sequence[str], limit: int = 8) -> str:
  shown = ", ".join(keys[:limit])
  return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _read_torch_file(path: pathlib.Path) -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  if path.suffix == ".safetensors":
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    try:
      return load_file(str(path))
    except Exception as e:  # safetensors raises several unrelated types.
      raise ConversionError(f"{path}: not a readable .safetensors file ({e})") from e
  try:
    if torchscript.is_torchscript(path):
      return torchscript.read_state_dict(path)
  except torchscript.UnsafeArchiveError as e:
    raise ConversionError(str(e)) from e
  except (OSError, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
    raise ConversionError(f"{path}: damaged TorchScript archive ({_first_line(e)})") from e
  try:
    return torch.load(str(path), map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's message advises weights_only=False, which would run the file's code: not passed on.
    blocked = re.search(r"(unsupported GLOBAL \S+|Unsupported global: \S+)", str(e))
    reason = blocked.group(1) if blocked else _first_line(e)
    raise ConversionError(f"{path}: refused: it holds Python objects besides tensors ({reason}); only "
                          "tensors are read from checkpoint files") from e
  except Exception as e:
    raise ConversionError(f"{path}: not a TorchScript archive, torch checkpoint or .safetensors "
                          f"file ({_first_line(e)})") from e


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _unwrap(obj, path: pathlib.Path) -> dict:
  if not isinstance(obj, dict):
    raise ConversionError(f"{path}: expected a state dict, got a {type(obj).__name__}")
  for key in _WRAPPER_KEYS:
    if key in obj and isinstance(obj[key], dict):
      return obj[key]
  return obj


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads SRC into {key: float32 numpy array}, with wrappers and `module.` prefixes removed."""
  import torch  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise ConversionError(f"{path}: no such file")
  raw = _unwrap(_read_torch_file(path), path)
  state = {}
  for key, value in raw.items():
    key = re.sub(r"^(module\.)+", "", key)
    if key in _METADATA_KEYS:
      continue
    if not isinstance(value, torch.Tensor):
      raise ConversionError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
      raise ConversionError(f"{path}: tensor {key!r} has dtype {value.dtype}; expected floating point")
    state[key] = value.detach().to(torch.float32).numpy()
  if not state:
    raise ConversionError(f"{path}: contains no tensors")
  return state


def _count_blocks(state: dict, prefix: str) -> int:
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.attn\.in_proj_weight$")
  return len({m.group(1) for k in state if (m := pattern.match(k))})


def _frames_in(state: dict) -> int | None:
  if "visual.transformer.T_prompt_embeddings" in state:
    return state["visual.transformer.T_prompt_embeddings"].shape[1]
  if "visual.temporal_embedding" in state:
    return state["visual.temporal_embedding"].shape[1]
  return None


def infer_model_config(state: dict, num_frames: int | None = None, use_prompts: bool = True,
                       t_adapter: bool = False, head_width: int = 64) -> model_lib.ModelConfig:
  """Infers the architecture from tensor shapes, like CLIP's own build_model.

  Args:
    state: the state dict.
    num_frames: T; must agree with the checkpoint's temporal tensors if it has any.
    use_prompts, t_adapter: the variant to build when the checkpoint is backbone-only.
    head_width: attention head width (64 for every OpenAI CLIP).

  Returns:
    The inferred `ModelConfig`.
  """
  required = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight")
  absent = [k for k in required if k not in state]
  if absent:
    hint = " (ResNet CLIP models are not supported)" if any(k.startswith("visual.layer1") for k in state) else ""
    raise ConversionError(f"not a ViT CLIP / EZ-CLIP state dict: missing {_names(absent)}{hint}")
  stored_frames = _frames_in(state)
  if num_frames is not None and stored_frames is not None and num_frames != stored_frames:
    raise ConversionError(f"--num-frames {num_frames} disagrees with the checkpoint's temporal tensors, "
                          f"which are for {stored_frames} frames")
  has_prompts = "visual.transformer.T_prompt_embeddings" in state
  has_t_adapter = any(".T_Adapter." in k for k in state)
  backbone_only = not any(part in k for k in state for part in mapping.EZCLIP_ADDITIONS)
  vision_width, _, _, patch = state["visual.conv1.weight"].shape
  text_width = state["ln_final.weight"].shape[0]
  grid = round((state["visual.positional_embedding"].shape[0] - 1)**0.5)
  return model_lib.ModelConfig(
      embed_dim=state["text_projection"].shape[1],
      image_resolution=patch * grid,
      vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
      vision_width=vision_width,
      vision_patch_size=patch,
      vision_heads=vision_width // head_width,
      context_length=state["positional_embedding"].shape[0],
      vocab_size=state["token_embedding.weight"].shape[0],
      text_width=text_width,
      text_heads=text_width // head_width,
      text_layers=_count_blocks(state, "transformer.resblocks."),
      num_frames=num_frames or stored_frames or 8,
      use_prompts=use_prompts if backbone_only else has_prompts,
      t_adapter=t_adapter if backbone_only else has_t_adapter,
  )


def _flat_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _check_coverage(state: dict, table: list[mapping.Entry], allow_missing: Sequence[str]) -> set[str]:
  """Raises on unknown or (not allowed) missing keys; returns the keys to initialise."""
  known = {e.torch_key for e in table}
  unknown = sorted(set(state) - known)
  if unknown:
    raise ConversionError(f"unknown tensors not in this architecture: {_names(unknown)}")
  backbone_only = not any(e.is_ezclip_addition and e.torch_key in state for e in table)
  initialised = set()
  not_allowed = []
  for entry in table:
    key = entry.torch_key
    if key in state:
      continue
    if (backbone_only and entry.is_ezclip_addition) or any(fnmatch.fnmatch(key, p) for p in allow_missing):
      initialised.add(key)
    else:
      not_allowed.append(key)
  if not_allowed:
    raise ConversionError(f"missing tensors: {_names(not_allowed)} (use --allow-missing PATTERN to "
                          "initialise them at random)")
  return initialised


def convert_state_dict(state: dict[str, np.ndarray], config: model_lib.ModelConfig,
                       allow_missing: Sequence[str] = (), seed: int = 0) -> dict:
  """Maps a torch state dict onto the Flax `params` tree of `config`.

  Args:
    state: {torch key: float32 array}.
    config: the architecture (see `infer_model_config`).
    allow_missing: fnmatch patterns of torch keys that may be absent (initialised at random).
    seed: seed for initialising the absent tensors.

  Returns:
    The `params` collection.
  """
  table = mapping.parameter_table(config)
  to_initialise = _check_coverage(state, table, allow_missing)
  abstract = jax.eval_shape(lambda: model_lib.init_variables(config, jax.random.key(seed)))["params"]
  expected = _flat_shapes(abstract)
  mismatched = []
  for entry in table:
    want = mapping.torch_shape(entry, expected[entry.flax_path])
    got = state.get(entry.torch_key)
    if got is not None and got.shape != want:
      mismatched.append(f"{entry.torch_key} has shape {tuple(got.shape)}, expected {want}")
  if mismatched:
    raise ConversionError("mis-shaped tensors: " + "; ".join(mismatched[:8]) +
                          (f"; ... ({len(mismatched)} in all)" if len(mismatched) > 8 else ""))
  initial = model_lib.init_variables(config, jax.random.key(seed))["params"] if to_initialise else None
  params = {}
  for entry in table:
    if entry.torch_key in to_initialise:
      value = _get(initial, entry.flax_path)
    else:
      value = entry.to_flax(state[entry.torch_key])
    _set(params, entry.flax_path, np.array(value, dtype=np.float32, order="C"))
  return params


def _get(tree: dict, path: tuple[str, ...]):
  for name in path:
    tree = tree[name]
  return tree


def convert(src: str | pathlib.Path, dst: str | pathlib.Path, num_frames: int | None = None,
            allow_missing: Sequence[str] = (), use_prompts: bool = True, t_adapter: bool = False,
            head_width: int = 64, overwrite: bool = False, seed: int = 0) -> model_lib.ModelConfig:
  """Converts SRC into the pretrained directory DST; returns the architecture."""
  checkpoint.check_destination(dst, overwrite)
  state = load_state_dict(src)
  config = infer_model_config(state, num_frames, use_prompts, t_adapter, head_width)
  params = convert_state_dict(state, config, allow_missing, seed)
  checkpoint.save_pretrained(dst, config, params, overwrite=overwrite)
  return config


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m convert.torch_to_flax", description=__doc__.split("\n")[0])
  parser.add_argument("src", help="OpenAI CLIP .pt, EZ-CLIP checkpoint, open_clip state dict or .safetensors")
  parser.add_argument("dst", help="destination directory (must not exist unless --overwrite)")
  parser.add_argument("--num-frames", type=int, default=None, help="frames per video T (default: from the "
                      "checkpoint's temporal tensors, else 8)")
  parser.add_argument("--allow-missing", action="append", default=[], metavar="PATTERN",
                      help="fnmatch pattern of torch keys that may be missing (initialised at random)")
  parser.add_argument("--no-prompts", action="store_true", help="backbone-only source: build without prompts")
  parser.add_argument("--t-adapter", action="store_true", help="backbone-only source: T-Adapter variant")
  parser.add_argument("--head-width", type=int, default=64, help="attention head width")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing DST_DIR")
  parser.add_argument("--seed", type=int, default=0, help="seed for initialising EZ-CLIP additions")
  args = parser.parse_args(argv)
  try:
    config = convert(args.src, args.dst, args.num_frames, args.allow_missing, not args.no_prompts,
                     args.t_adapter, args.head_width, args.overwrite, args.seed)
  except (ConversionError, OSError) as e:
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}: vision {config.vision_layers}x{config.vision_width}/{config.vision_patch_size} "
        f"@{config.image_resolution}, text {config.text_layers}x{config.text_width}, "
        f"{config.num_frames} frames, prompts={config.use_prompts}, t_adapter={config.t_adapter}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
