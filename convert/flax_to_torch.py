"""Convert an ezclip-jax model into an official EZ-CLIP PyTorch checkpoint.

  python -m convert.flax_to_torch SRC_DIR DST.pt [--overwrite]

SRC_DIR is a pretrained directory (`convert.torch_to_flax`) or a training workdir (its
best validation checkpoint, else its latest: `ezclip_jax.load_pretrained`).

Writes `{'model_state_dict': ...}` with exactly the key set and shapes of the
official EZ-CLIP model of the same architecture, loadable by its
`model.load_state_dict(checkpoint['model_state_dict'])`.
"""

import argparse
import collections
import os
import pathlib
import sys
import tempfile
from typing import Sequence

import jax
import numpy as np

from convert import mapping
from ezclip_jax import checkpoint
from ezclip_jax import errors
from ezclip_jax import model as model_lib


def _flatten(params: dict) -> dict[tuple[str, ...], np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tuple(k.key for k in path): np.asarray(leaf) for path, leaf in flat}


def to_state_dict(params: dict, config: model_lib.ModelConfig) -> "collections.OrderedDict[str, np.ndarray]":
  """Maps a Flax `params` tree onto the official state dict {key: float32 array}."""
  flat = _flatten(params)
  table = mapping.parameter_table(config)
  used = {e.flax_path for e in table}
  extra = sorted("/".join(p) for p in set(flat) - used)
  missing = sorted("/".join(p) for p in used - set(flat))
  if extra or missing:
    raise ValueError(f"params do not match the {config} architecture: extra {extra[:8]}, missing {missing[:8]}")
  state = collections.OrderedDict()
  for entry in table:
    state[entry.torch_key] = np.array(entry.to_torch(flat[entry.flax_path]), order="C")
  return state


def check_destination(dst: pathlib.Path, overwrite: bool) -> None:
  """Fails before any work if DST cannot or may not be written."""
  if dst.is_dir():
    raise IsADirectoryError(f"{dst} is a directory; give the .pt file to write, e.g. {dst / 'model.pt'}")
  if dst.exists() and not overwrite:
    raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it")
  parent = next(p for p in dst.parents if p.exists())
  if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
    raise PermissionError(f"{dst}: cannot write in {parent} (not a writable directory)")


def convert(src: str | pathlib.Path, dst: str | pathlib.Path, overwrite: bool = False) -> int:
  """Writes DST (atomically) from the pretrained directory or training workdir SRC; returns the tensor count.

  Args:
    src: a pretrained directory or training workdir.
    dst: the .pt file to write; must not exist unless `overwrite`.
    overwrite: replace an existing DST.
  """
  import torch  # pylint: disable=g-import-not-at-top

  dst = pathlib.Path(dst).absolute()
  check_destination(dst, overwrite)
  model, variables = checkpoint.load_pretrained(src)
  state = to_state_dict(variables["params"], model.config)
  tensors = collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items())
  dst.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.tmp-", dir=dst.parent)
  os.close(fd)
  try:
    torch.save({"model_state_dict": tensors}, tmp)
    os.replace(tmp, dst)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return len(tensors)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m convert.flax_to_torch", description=__doc__.split("\n")[0])
  parser.add_argument("src", help="ezclip-jax pretrained directory or training workdir")
  parser.add_argument("dst", help="destination .pt file (must not exist unless --overwrite)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing DST.pt")
  args = parser.parse_args(argv)
  try:
    count = convert(args.src, args.dst, args.overwrite)
  except (OSError, ValueError) as e:
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}: {count} tensors")
  return 0


if __name__ == "__main__":
  sys.exit(main())
