"""Train or evaluate EZ-CLIP.

  python -m ezclip_jax.main --config configs/demo.py --workdir /tmp/ezclip-demo
  python -m ezclip_jax.main --config configs/k400_zero_shot.py --workdir /mnt/runs/k400 \\
      --config.model.pretrained=/ckpt/vit-b16 --config.data.official_repo=/src/EZ-CLIP

`--config.key=value` overrides any config field (configs are locked, so a typo
fails at start-up). A workdir with checkpoints is resumed automatically. The workdir
is a local or shared-filesystem path (every process of a multi-host run writes to it).
Library logs (orbax on every save, grain, ...) are off; `--log_level=info` shows them.
An error is one line on stderr (exit 1); `--verbose` shows its traceback.

A second run on a workdir in use fails at once, naming the holder (WORKDIR/lock). Resuming
with a config that differs from the saved WORKDIR/config.json fails, listing the keys that
differ, unless `--allow_config_change`.

With `--config.distributed=True`, `jax.distributed.initialize()` finds the cluster on
TPU VMs, under Slurm and under Open MPI; elsewhere pass `--coordinator_address`,
`--num_processes` and `--process_id` to every process.

Compiled steps are kept in --compilation_cache_dir (JAX's persistent compilation cache), so a
rerun of the same config, such as the restart after a preemption, loads its steps instead of
compiling them again.
"""

import os
import sys
import traceback
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from ezclip_jax import console
from ezclip_jax import demo
from ezclip_jax import errors
from ezclip_jax import platforms
from ezclip_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and plots go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train: train with periodic evaluation; eval: evaluate config.model.pretrained.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for --config.distributed=True without a scheduler.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, show its traceback (otherwise one line).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose saved config.json differs from this config.")
DEFAULT_COMPILATION_CACHE_DIR = "~/.cache/ezclip_jax/compiled"
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    f"Where compiled steps are kept for reruns, on each host; '' keeps none. Default: "
    f"$JAX_COMPILATION_CACHE_DIR if set, else {DEFAULT_COMPILATION_CACHE_DIR}.")
flags.mark_flags_as_required(["config", "workdir"])


def use_compilation_cache(directory: str | None) -> None:
  """JAX's persistent compilation cache in DIRECTORY ('' turns it off; None: the default)."""
  if directory is None:
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_COMPILATION_CACHE_DIR)
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory) if directory else None)


def initialize_distributed() -> None:
  """`jax.distributed.initialize`, from the flags when given, else from the environment."""
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together.")
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                             process_id=_PROCESS_ID.value)


def main(argv) -> None:
  del argv
  platforms.quiet_absent_tpu()
  console.set_log_level(console.LOG_LEVEL.value)
  use_compilation_cache(_COMPILATION_CACHE_DIR.value)
  config = _CONFIG.value
  if config.distributed:
    initialize_distributed()
  elif _COORDINATOR.value is not None:
    raise app.UsageError("--coordinator_address needs --config.distributed=True.")
  logging.info("process %d/%d, devices %s", jax.process_index(), jax.process_count(), jax.devices())
  if "demo" in config:
    demo.run(config, _WORKDIR.value)
  elif _MODE.value == "train":
    train.train_and_evaluate(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  else:
    train.evaluate_pretrained(config, _WORKDIR.value)


def cli(argv: Sequence[str] | None = None) -> int:
  """`python -m ezclip_jax.main ARGS`: its exit status; an error is one line on stderr."""
  argv = list(sys.argv if argv is None else argv)
  started = []
  try:
    app.run(lambda args: started.append(True) or main(args), argv=argv)
  except SystemExit as e:
    return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
  except Exception as e:  # pylint: disable=broad-except
    if "--verbose" in argv or (started and _VERBOSE.value):
      traceback.print_exc()
    if not started and isinstance(e, (AttributeError, KeyError)):
      message = errors.config_override_error(e, argv)
    else:
      message = errors.one_line(e)
    print(f"error: {message}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(cli())
