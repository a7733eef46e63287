"""A training workdir's own bookkeeping: the checks before anything is written, the lock, the run config.

  WORKDIR/lock          held while a training runs: {"pid", "host", "started", "command"}; a second
                        run on the workdir fails naming the holder; a lock whose process has ended
                        (a killed run, on this host) is taken over with a warning
  WORKDIR/config.json   the config the run was started with; resuming with a different one fails,
                        listing the keys that differ, unless `allow_config_change` (then the old
                        one is kept as config.<n>.json)
On many hosts process 0 takes the lock and writes the config; every process learns the outcome.
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import sys
from collections.abc import Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from ezclip_jax import checkpoint
from ezclip_jax import sharding

LOCK_FILE = "lock"
CONFIG_FILE = "config.json"


class WorkdirError(RuntimeError):
  """The workdir cannot be used for this run; the message says why and what to do."""


class WorkdirInUseError(WorkdirError):
  """Another training holds the workdir's lock."""


class ConfigChangedError(WorkdirError):
  """The workdir was trained with another config."""


def check_batch_sizes(config: ml_collections.ConfigDict, mesh, evaluating: bool) -> None:
  """The batch sizes must split evenly over the mesh's batch shards (data x fsdp)."""
  shards = sharding.batch_shards(mesh)
  sizes = {"data.batch_size": config.data.batch_size}
  if evaluating:  # per process: the global eval batch is this on every process
    sizes["data.eval_batch_size"] = config.data.eval_batch_size * jax.process_count()
  for key, size in sizes.items():
    if size % shards:
      per_process = f" (x {jax.process_count()} processes)" if key == "data.eval_batch_size" and (
          jax.process_count() > 1) else ""
      raise ValueError(f"{key}={config.data[key.split('.')[1]]}{per_process} is not divisible by the {shards} "
                       f"batch shards (data x fsdp) of the mesh {tuple(mesh.devices.shape)}; use a multiple "
                       f"of {shards}")


def _flat(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    return {k: v for name, sub in tree.items() for k, v in _flat(sub, f"{prefix}{name}.").items()}
  return {prefix[:-1]: tree}


def config_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(sort_keys=True, indent=2)


def config_differences(saved: dict, current: dict) -> list[str]:
  """`key: saved -> current` for every key whose value differs (or exists on one side only)."""
  before, after = _flat(saved), _flat(current)
  missing = object()
  return [f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}"
          for key in sorted(before.keys() | after.keys())
          if before.get(key, missing) != after.get(key, missing)]


def check_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, allow_change: bool) -> list[str]:
  """The differences from WORKDIR/config.json; raises `ConfigChangedError` on any unless `allow_change`."""
  path = workdir / CONFIG_FILE
  if not path.is_file():
    return []
  differences = config_differences(json.loads(path.read_text()), json.loads(config_json(config)))
  if differences and not allow_change:
    raise ConfigChangedError(
        f"{workdir} was trained with another config ({path}); differing keys: {'; '.join(differences)}. "
        "Rerun with that config, or pass --allow_config_change to continue with this one")
  return differences


def check_before_writing(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh,
                         allow_config_change: bool, evaluating: bool) -> None:
  """Everything about the run that can fail before the workdir is touched."""
  check_batch_sizes(config, mesh, evaluating)
  checkpoint.check_writable(workdir)
  check_config(workdir, config, allow_config_change)


def _process_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (so a reused pid is not taken for the lock's holder)."""
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _holder_alive(holder: dict) -> bool | None:
  """Whether the lock's process still runs; None when that cannot be told (another host)."""
  if holder.get("host") != socket.gethostname():
    return None
  pid = holder.get("pid")
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError):
    return True
  start = _process_start(pid)
  return start is None or holder.get("pid_start") in (None, start)


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
          f"({holder.get('command', '?')})")


def _take_lock(workdir: pathlib.Path) -> pathlib.Path:
  path = workdir / LOCK_FILE
  holder = {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
  workdir.mkdir(parents=True, exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        current = json.loads(path.read_text())
      except (OSError, ValueError):
        current = {}
      alive = _holder_alive(current)
      if alive is False:
        logging.warning("%s: taking over the lock of a run that ended without releasing it: %s.", path,
                        _describe(current))
        path.unlink(missing_ok=True)
        continue
      where = "" if alive else " (another host: cannot tell whether it still runs)"
      raise WorkdirInUseError(f"{workdir} is in use by {_describe(current)}{where}; wait for it, use another "
                              f"--workdir, or delete {path} if that run is gone") from None
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps(holder))
    return path
  raise WorkdirInUseError(f"{workdir}: another run took the lock {path} at the same time")


def _save_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, differences: list[str]) -> None:
  path = workdir / CONFIG_FILE
  if differences:
    kept = workdir / f"config.{len(list(workdir.glob('config.*.json'))) + 1}.json"
    os.replace(path, kept)
    logging.warning("continuing %s with a changed config (%s); the previous one is kept as %s.", workdir,
                    "; ".join(differences), kept)
  if not path.exists():
    tmp = workdir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(config_json(config))
    os.replace(tmp, path)


def _agree(ok: bool) -> bool:
  """Process 0's `ok`, on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def claimed(workdir: pathlib.Path, config: ml_collections.ConfigDict | None,
            allow_config_change: bool = False) -> Iterator[None]:
  """Holds WORKDIR/lock (and saves the run config) for the block.

  A block that fails before writing anything else into the workdir (a bad list file, say)
  leaves it as it was: the config saved here is removed again, and the directory if this made it.

  Args:
    workdir: the training workdir.
    config: saved as WORKDIR/config.json (None: lock only).
    allow_config_change: replace a different saved config instead of failing.
  """
  primary = jax.process_index() == 0
  made_dir, made_config = not workdir.exists(), not (workdir / CONFIG_FILE).exists()
  error = lock = None
  if primary:
    try:
      lock = _take_lock(workdir)
      if config is not None:
        _save_config(workdir, config, check_config(workdir, config, allow_config_change))
    except (WorkdirError, OSError) as e:
      error = e
  if not _agree(error is None):
    if lock is not None:
      lock.unlink(missing_ok=True)
    raise error or WorkdirError(f"{workdir}: process 0 could not claim the workdir (see its error)")
  try:
    yield
  except BaseException:
    if lock is not None:
      _undo_if_untouched(workdir, made_dir, made_config)
    raise
  finally:
    if lock is not None:
      lock.unlink(missing_ok=True)


def _undo_if_untouched(workdir: pathlib.Path, made_dir: bool, made_config: bool) -> None:
  if made_config and {p.name for p in workdir.iterdir()} <= {LOCK_FILE, CONFIG_FILE}:
    (workdir / CONFIG_FILE).unlink(missing_ok=True)
    (workdir / LOCK_FILE).unlink(missing_ok=True)
    if made_dir:
      workdir.rmdir()
