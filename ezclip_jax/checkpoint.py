"""Model checkpoints on disk: the architecture config next to an orbax params tree.

A pretrained directory (written by `convert.torch_to_flax` or `save_pretrained`):
  DIR/model_config.json   `ModelConfig` as JSON
  DIR/params/             orbax checkpoint of the `params` collection
Directories are written under a temporary name and renamed when complete, so a
failed write never leaves a half-written destination.
"""

import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from ezclip_jax import model as model_lib

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_pretrained(directory: str | os.PathLike, config: model_lib.ModelConfig, params: dict,
                    overwrite: bool = False) -> pathlib.Path:
  """Writes config + params atomically to `directory`.

  Args:
    directory: destination; must not exist unless `overwrite`.
    config: the architecture.
    params: the `params` collection (nested dict of arrays).
    overwrite: replace an existing directory.

  Returns:
    The destination path.
  """
  dst = pathlib.Path(directory).absolute()
  if dst.exists() and not overwrite:
    raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it.")
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
  try:
    (tmp / CONFIG_FILE).write_text(config.to_json())
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / PARAMS_DIR, jax.tree_util.tree_map(np.asarray, params))
    checkpointer.wait_until_finished()
    if dst.exists():
      shutil.rmtree(dst)
    os.replace(tmp, dst)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return dst


def load_config(directory: str | os.PathLike) -> model_lib.ModelConfig:
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: {directory} is not a pretrained ezclip-jax directory "
                            "(write one with `python -m convert.torch_to_flax SRC DST_DIR`).")
  return model_lib.ModelConfig.from_json(path.read_text())


def load_pretrained(path: str | os.PathLike) -> tuple[model_lib.EZCLIP, dict]:
  """Loads a model and its variables.

  Args:
    path: a directory written by `convert.torch_to_flax` or `save_pretrained`.

  Returns:
    (model, variables) where `model.apply(variables, video, method=model.encode_video)`.
  """
  config = load_config(path)
  model = model_lib.EZCLIP(config)
  abstract = jax.eval_shape(lambda: model_lib.init_variables(config, jax.random.key(0)))["params"]
  params_dir = pathlib.Path(path).absolute() / PARAMS_DIR
  params = ocp.StandardCheckpointer().restore(params_dir, abstract)
  return model, {"params": params}
