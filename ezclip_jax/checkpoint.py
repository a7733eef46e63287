"""Checkpoints on disk: pretrained directories and training workdirs.

A pretrained directory (written by `convert.torch_to_flax` or `save_pretrained`):
  DIR/model_config.json   `ModelConfig` as JSON
  DIR/params/             orbax checkpoint of the `params` collection
Pretrained directories are written under a temporary name and renamed when
complete, so a failed write never leaves a half-written destination.

A training workdir holds the frozen starting point once and small checkpoints:
  WORKDIR/backbone/       pretrained directory of the run's initial params
  WORKDIR/checkpoints/N/  orbax: `state` (step, trainable params, optimizer state,
                          rng) + `data` (the grain iterator of every process)
  WORKDIR/best/           pretrained-style `trainable` params of the best validation
                          result, with best.json saying which step and metric (a resumed
                          run continues from that score)
  WORKDIR/evaluated.json  the last step whose evaluation and best/ update finished; a run
                          killed before that redoes the evaluation when it resumes
`load_pretrained(WORKDIR)` gives the best model (else the latest checkpoint's).
"""

import json
import os
import pathlib
import shutil
import tempfile

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from ezclip_jax import model as model_lib
from ezclip_jax import optim

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
BACKBONE_DIR = "backbone"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
DAMAGED_DIR = "damaged_checkpoints"
EVALUATED_FILE = "evaluated.json"
TRAINABLE_FILE = "trainable_patterns.json"


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _write_directory(dst: pathlib.Path, params, files: dict[str, str]) -> None:
  """Writes `params` (orbax, collective over processes) and text `files` into `dst` atomically.

  Every process calls this; process 0 writes the text files and moves the finished
  directory into place, so a failed write never leaves a half-written `dst`.
  """
  primary = jax.process_index() == 0
  tmp = dst.parent / f".{dst.name}.partial"
  if primary:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
  _sync(f"start {dst}")
  # Arrays on this process's devices alone are saved as numpy (by process 0); global
  # arrays spanning processes are saved collectively by orbax.
  params = jax.tree.map(lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable
                        else np.asarray(x), params)
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    _sync(f"written {dst}")
    if primary:
      for name, text in files.items():
        (tmp / name).write_text(text)
      shutil.rmtree(dst, ignore_errors=True)
      os.replace(tmp, dst)
  finally:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
  _sync(f"done {dst}")


def check_writable(path: pathlib.Path) -> None:
  """Fails at once if `path` (a directory to create or fill) cannot be written."""
  existing = next(p for p in [path, *path.parents] if p.exists())
  if not existing.is_dir():
    raise NotADirectoryError(f"{path}: {existing} is a file, not a directory")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise PermissionError(f"{path}: cannot write in {existing} ({e.strerror or e})") from e


def check_destination(directory: str | os.PathLike, overwrite: bool) -> pathlib.Path:
  """Fails at once if the pretrained directory `directory` may not or cannot be written."""
  dst = pathlib.Path(directory).absolute()
  if dst.exists() and not overwrite:
    raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it.")
  check_writable(dst)
  return dst


def save_pretrained(directory: str | os.PathLike, config: model_lib.ModelConfig, params: dict,
                    overwrite: bool = False, extra_files: dict[str, str] | None = None) -> pathlib.Path:
  """Writes config + params atomically to `directory` (every process calls it).

  Args:
    directory: destination; must not exist unless `overwrite`.
    config: the architecture.
    params: the `params` collection (nested dict of numpy or jax arrays).
    overwrite: replace an existing directory.
    extra_files: more {file name: text} to write beside the config.

  Returns:
    The destination path.
  """
  dst = check_destination(directory, overwrite)
  _write_directory(dst, params, {CONFIG_FILE: config.to_json(), **(extra_files or {})})
  return dst


def load_config(directory: str | os.PathLike) -> model_lib.ModelConfig:
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: {directory} is not a pretrained ezclip-jax directory "
                            "(write one with `python -m convert.torch_to_flax SRC DST_DIR`).")
  return model_lib.ModelConfig.from_json(path.read_text())


def _restore_params(directory: pathlib.Path, abstract):
  return ocp.StandardCheckpointer().restore(directory.absolute(), abstract)


def _abstract_params(config: model_lib.ModelConfig):
  return jax.eval_shape(lambda: model_lib.init_variables(config, jax.random.key(0)))["params"]


def load_pretrained(path: str | os.PathLike) -> tuple[model_lib.EZCLIP, dict]:
  """Loads a model and its variables.

  Args:
    path: a directory written by `convert.torch_to_flax` / `save_pretrained`, or a
      training workdir (its best validation checkpoint, else its latest).

  Returns:
    (model, variables) where `model.apply(variables, video, method=model.encode_video)`.
  """
  path = pathlib.Path(path)
  if (path / BACKBONE_DIR).is_dir():
    return _load_from_workdir(path)
  config = load_config(path)
  params = _restore_params(path / PARAMS_DIR, _abstract_params(config))
  return model_lib.EZCLIP(config), {"params": params}


def _load_from_workdir(workdir: pathlib.Path) -> tuple[model_lib.EZCLIP, dict]:
  model, variables = load_pretrained(workdir / BACKBONE_DIR)
  patterns = json.loads((workdir / BACKBONE_DIR / TRAINABLE_FILE).read_text())
  initial_trainable, frozen = optim.split_params(variables["params"], patterns)
  if (workdir / BEST_DIR / PARAMS_DIR).is_dir():
    trainable = _restore_params(workdir / BEST_DIR / PARAMS_DIR, initial_trainable)
  else:
    target = {"trainable": initial_trainable}
    state_args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)
    # Read with a checkpointer, not a (read-only) CheckpointManager, which warns on every load.
    directory = (workdir / CHECKPOINTS_DIR).absolute()
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    restore = lambda step: {"state": ocp.PyTreeCheckpointer().restore(directory / str(step) / "state",
                                                                      args=state_args)}
    trainable = _restore_newest_intact(steps, restore, directory, ("state",), workdir)["state"]["trainable"]
  return model, {"params": optim.merge_params(trainable, frozen)}


class NoCheckpointError(FileNotFoundError):
  """A training workdir that holds no trained parameters (yet)."""


def _damage(step_dir: pathlib.Path, items, error: Exception) -> str:
  """One line naming what is wrong with a checkpoint directory."""
  for item in items:
    if not (step_dir / item).exists():
      return f"{item}/ is missing"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0][:200] if lines else 'unreadable'}"


def _restore_newest_intact(steps, restore, directory: pathlib.Path, items, workdir: pathlib.Path,
                           on_damaged=None) -> dict:
  """Restores the newest checkpoint that reads back, warning (one line) about each damaged newer one.

  Args:
    steps: the checkpointed steps.
    restore: step -> the restored items.
    directory: WORKDIR/checkpoints.
    items: the item names (sub-directories) a checkpoint must have.
    workdir: for the messages.
    on_damaged: called with the directory of each damaged checkpoint before the next older is
      tried; returns where it moved it (or None).

  Returns:
    The restored items.

  Raises:
    NoCheckpointError: there is no checkpoint, or none is intact.
  """
  steps = sorted(steps, reverse=True)
  if not steps:
    raise NoCheckpointError(f"{workdir} has no trained parameters: {workdir / BEST_DIR} and "
                            f"{workdir / CHECKPOINTS_DIR}/<step> are missing. Train it first, or pass "
                            "a pretrained directory (python -m convert.torch_to_flax).")
  damaged = []
  for step in steps:
    try:
      return restore(step)
    except Exception as e:  # orbax and tensorstore raise many types for unreadable files.
      step_dir = directory / str(step)
      damage = _damage(step_dir, items, e)
      damaged.append(f"{step_dir} ({damage})")
      moved = on_damaged(step_dir) if on_damaged is not None else None
      if step != steps[-1]:
        logging.warning("checkpoint %s is damaged (%s); %susing the previous one.", step_dir, damage,
                        f"moved it to {moved}, " if moved else "")
  raise NoCheckpointError(f"{workdir}: every checkpoint is damaged: {'; '.join(damaged)}")


def save_backbone(workdir: pathlib.Path, config: model_lib.ModelConfig, params: dict,
                  trainable_patterns) -> None:
  """Writes the run's starting params once (a pretrained directory) and which of them train."""
  if (workdir / BACKBONE_DIR).is_dir():
    return
  save_pretrained(workdir / BACKBONE_DIR, config, params,
                  extra_files={TRAINABLE_FILE: json.dumps(list(trainable_patterns))})


def save_best(workdir: pathlib.Path, trainable: dict, step: int, metrics: dict) -> None:
  """Replaces WORKDIR/best with `trainable` (selected on a validation split); every process calls it."""
  _write_directory(workdir.absolute() / BEST_DIR, trainable,
                   {"best.json": json.dumps({"step": step, **metrics}, indent=2)})


def read_best(workdir: pathlib.Path) -> dict:
  """WORKDIR/best/best.json ({"step", "<dataset>/top1"}), or {} before the first best."""
  path = workdir / BEST_DIR / "best.json"
  if not (workdir / BEST_DIR / PARAMS_DIR).is_dir() or not path.is_file():
    return {}
  return json.loads(path.read_text())


def last_evaluated_step(workdir: pathlib.Path) -> int:
  """The step of the last evaluation whose best/ update finished (0 if none)."""
  path = workdir / EVALUATED_FILE
  return json.loads(path.read_text())["step"] if path.is_file() else 0


def record_evaluated(workdir: pathlib.Path, step: int) -> None:
  """Notes that the evaluation at `step`, and its best/ update, finished (every process calls it)."""
  _sync(f"evaluated {step}")
  if jax.process_index() == 0:
    tmp = workdir / f".{EVALUATED_FILE}.tmp"
    tmp.write_text(json.dumps({"step": step}))
    os.replace(tmp, workdir / EVALUATED_FILE)


def checkpoint_manager(workdir: pathlib.Path, keep: int) -> ocp.CheckpointManager:
  """Async orbax manager for WORKDIR/checkpoints keeping the newest `keep`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager((workdir / CHECKPOINTS_DIR).absolute(), item_names=("state", "data"),
                               options=options)


def _state_items(state) -> dict:
  return {"step": state.step, "trainable": state.trainable, "opt_state": state.opt_state, "rng": state.rng}


def save_checkpoint(manager: ocp.CheckpointManager, state, data_iterator) -> None:
  """Starts an async save of the train state (frozen params excluded) and the data iterator."""
  step = int(state.step)
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(_state_items(state)),
      data=grain.checkpoint.CheckpointSave(data_iterator)))


def restore_checkpoint(manager: ocp.CheckpointManager, state, data_iterator, workdir: pathlib.Path):
  """Restores the newest intact checkpoint into `state`'s shapes/shardings and `data_iterator`.

  A damaged newer checkpoint is moved to WORKDIR/damaged_checkpoints/ (kept, not deleted), so
  training redoes its steps and can save them again.

  Returns:
    The restored state, or `state` unchanged when there is no checkpoint.
  """
  if manager.latest_step() is None:
    return state
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _state_items(state))
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                            data=grain.checkpoint.CheckpointRestore(data_iterator))
  restored = _restore_newest_intact(manager.all_steps(), lambda step: manager.restore(step, args=args),
                                    pathlib.Path(manager.directory), ("state", "data"), workdir,
                                    on_damaged=lambda d: _move_aside(d, workdir))
  manager.reload()
  return state.replace(**restored["state"])


def _move_aside(step_dir: pathlib.Path, workdir: pathlib.Path) -> pathlib.Path:
  aside = workdir.absolute() / DAMAGED_DIR
  destination = aside / f"{step_dir.name}.{len(list(aside.glob('*'))) if aside.is_dir() else 0}"
  _sync(f"restore failed {step_dir}")
  if jax.process_index() == 0:
    aside.mkdir(exist_ok=True)
    os.replace(step_dir, destination)
  _sync(f"moved {step_dir}")
  return destination
