"""The console shows results and progress; library logs are off unless asked for.

Training prints, on process 0 only (`show`): what it trains on what (`model_line`,
`data_line`), whether it starts fresh or resumes, the first step's compile time, a progress
line per logging window (`progress_line`), a line per dataset after each evaluation
(`eval_lines`) and where the result is (`final_line`). Plain lines, so a log file reads
like the terminal.

Orbax (on every save and restore), grain, TFDS and this package's own details log through
absl at INFO, which absl's `app.run` shows by default. Every entry point (`ezclip_jax.main`,
`predict`, `visualize`, `benchmarks/*`) sets `set_log_level(...)` first, so only warnings
and errors show; `--log_level=info` (or `debug`) brings the library logs back.
"""

import argparse
import contextlib
import datetime
import math
import time
from collections.abc import Iterator, Mapping

from absl import flags
from absl import logging
import jax

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "warning"
LOG_LEVEL_HELP = "Library log messages shown on the console: this level and above (info: orbax, grain, ...)."

# For the absl entry points; the argparse ones call `add_log_level_argument`.
LOG_LEVEL = flags.DEFINE_enum("log_level", DEFAULT_LOG_LEVEL, LOG_LEVELS, LOG_LEVEL_HELP)


def add_log_level_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_LOG_LEVEL) -> None:
  """`--log_level` (also spelt `--log-level`) for a command line that argparse reads."""
  parser.add_argument("--log_level", "--log-level", choices=LOG_LEVELS, default=default,
                      help=f"{LOG_LEVEL_HELP} Default: {default}.")


def set_log_level(level: str) -> None:
  """Shows absl (and, under `app.run`, Python) log messages of `level` (one of `LOG_LEVELS`) and above."""
  if level not in LOG_LEVELS:
    raise ValueError(f"log level {level!r}: expected one of {', '.join(LOG_LEVELS)}.")
  logging.set_verbosity(level)


@contextlib.contextmanager
def log_level(level: str) -> Iterator[None]:
  """`set_log_level(level)` inside the block, the previous level after it.

  For tools whose `main` is also called from Python: the caller's logging stays as it was.
  """
  previous = logging.get_verbosity()
  set_log_level(level)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


@contextlib.contextmanager
def hide_library_warnings() -> Iterator[None]:
  """Inside the block, library warnings are hidden too, unless library logs were asked for
  (`--log_level=info` or `debug`): for steps whose warnings are expected noise."""
  if logging.get_verbosity() > logging.WARNING:
    yield
    return
  with log_level("error"):
    yield


# ------------------------------------------------------------------------------ training


def show(line: str, end: str = "\n") -> None:
  """Prints `line` (flushed) on process 0; the other processes print nothing."""
  if jax.process_index() == 0:
    print(line, end=end, flush=True)


def format_duration(seconds: float) -> str:
  """`H:MM:SS`, or `?` when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  return str(datetime.timedelta(seconds=round(seconds)))


def _count(n: int) -> str:
  """1234567 -> `1.23M`, 45600 -> `45.6k`."""
  for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return str(n)


def _processes(count: int) -> str:
  return "1 process" if count == 1 else f"{count} processes"


def model_line(name: str, model_config, num_params: int, num_trainable: int, mesh) -> str:
  """`model tiny (8 frames of 32 px, float32): 1.23M params, 45.6k trainable | mesh data=8 ...`."""
  axes = " ".join(f"{axis}={size}" for axis, size in mesh.shape.items())
  devices = mesh.devices.flat[0]
  return (f"model {name} ({model_config.num_frames} frames of {model_config.image_resolution} px, "
          f"{model_config.dtype}): {_count(num_params)} params, {_count(num_trainable)} trainable | mesh {axes} "
          f"over {mesh.devices.size} {devices.platform} devices, {_processes(jax.process_count())}")


def data_line(num_videos: int, batch_size: int, steps_per_epoch: int, epochs: int, evals: list[str],
              eval_every_epochs: int) -> str:
  """`data: 256 training videos, batch 16: 16 steps/epoch x 20 epochs = 320 steps; eval ...`."""
  line = (f"data: {num_videos} training videos, batch {batch_size}: {steps_per_epoch} steps/epoch x {epochs} "
          f"epochs = {steps_per_epoch * epochs} steps")
  if evals:
    return line + f"; evaluating {', '.join(evals)} every {eval_every_epochs} epoch(s) and at the end"
  return line + "; no evaluation (data.evals is empty)"


def start_line(start_step: int, total_steps: int) -> str:
  if start_step == 0:
    return f"starting fresh: {total_steps} steps"
  if start_step >= total_steps:
    return f"resumed from step {start_step}: training is already done"
  return f"resumed from step {start_step} of {total_steps}"


def progress_line(summary, total_steps: int, lr: float, eta_seconds: float) -> str:
  """`step 40/320 (12.5%) | loss 0.6931 | lr 2.86e-03 | 14.2 steps/s | ETA 0:00:19`; the loss is the
  window's mean (`metrics.WindowSummary`)."""
  step = summary.last_step
  rate = "?" if summary.steps_per_sec is None else f"{summary.steps_per_sec:.2f}"
  return (f"step {step}/{total_steps} ({100.0 * step / total_steps:.1f}%) | loss {summary.means['loss']:.4f} | "
          f"lr {lr:.3g} | {rate} steps/s | ETA {format_duration(eta_seconds)}")


def eval_lines(step: int, results: Mapping, summaries: Mapping[str, Mapping[str, float]]) -> list[str]:
  """One line per dataset (`evaluate.EvalResult`) and per protocol summary."""
  lines = [f"eval step {step} | {name}: top-1 {r.top1:.2f}%, top-{r.topk} {r.top5:.2f}% of {r.num_samples} videos"
           for name, r in results.items()]
  for group, summary in summaries.items():
    if "hm" in summary:
      lines.append(f"eval step {step} | {group}: base {summary['base']:.2f}%, novel {summary['novel']:.2f}%, "
                   f"harmonic mean {summary['hm']:.2f}%")
    else:
      lines.append(f"eval step {step} | {group} ({int(summary['num_splits'])} splits): top-1 "
                   f"{summary['top1_mean']:.2f} +- {summary['top1_std']:.2f}%, top-5 {summary['top5_mean']:.2f} "
                   f"+- {summary['top5_std']:.2f}%")
  return lines


def final_line(step: int, seconds: float, checkpoints_dir, best: Mapping, best_dir) -> str:
  """Where the run's result is: the latest checkpoint and the best (`best.json`'s step and scores)."""
  line = f"done: step {step} in {format_duration(seconds)}; latest checkpoint {checkpoints_dir}/{step}"
  if not best:
    return line + "; no best checkpoint (no eval dataset has role=val)"
  scores = ", ".join(f"{k} {v:.2f}%" for k, v in best.items() if k != "step" and math.isfinite(v))
  return line + f"; best checkpoint {best_dir} (step {best['step']}, {scores})"


def show_setup(config, model_config, params, trainable, mesh, num_videos: int, steps_per_epoch: int,
               evals: list[str]) -> None:
  """Prints `model_line` and `data_line` (`evals`: the enabled eval datasets)."""
  size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  show(model_line(config.model.pretrained or config.model.arch, model_config, size(params), size(trainable), mesh))
  show(data_line(num_videos, config.data.batch_size, steps_per_epoch, config.train.epochs,
                 evals, config.train.eval_every_epochs))


def show_start(start: int, total_steps: int, start_shown: bool = False) -> float:
  """Prints fresh or resumed (`start_line`, unless `start_shown`) and, when steps remain, that the
  first step compiles, leaving the line open for its time; returns the time now."""
  parts = [] if start_shown else [start_line(start, total_steps)]
  if start < total_steps:
    show("; ".join(parts + ["compiling the train step... "]), end="")
  elif parts:
    show(parts[0])
  return time.monotonic()
