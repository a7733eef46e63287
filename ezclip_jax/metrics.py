"""Training and evaluation metrics: TensorBoard events, a JSONL log, logging windows, curve plots.

`MetricWriter` writes every scalar twice in the workdir:
  WORKDIR/metrics.jsonl               one `{"step", "split", "values"}` object per write; the
                                      authoritative log, equal between a resumed and an
                                      uninterrupted run (see `truncate_after`)
  WORKDIR/tensorboard/events.out.tfevents.*   for `tensorboard --logdir WORKDIR/tensorboard`,
                                      tags `<split>/<name>`
Training logs once per window of steps (`StepWindow`): split `train` holds the window's
means of the loss terms and gradient/update norms and `lr`, the learning rate of its last
update, the same in a resumed and an uninterrupted run; split `perf` holds `steps_per_sec`.

The event files hold `Event` protos in TFRecord framing, both from the `tensorboard`
package (`tensorboard.compat.proto`, `RecordWriter`), which needs no TensorFlow. Its
`EventFileWriter` is not used: it imports TensorFlow wherever TensorFlow is installed
(Colab), and tensorboardX imports PyTorch wherever that is.
"""

import dataclasses
import itertools
import json
import math
import os
import pathlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from absl import logging
import jax
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer import record_writer

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_EVENT_FILE_NUMBER = itertools.count()


# ------------------------------------------------------------------------- JSONL records


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a metrics JSONL file.

  A final line without its newline (a write cut short by a kill) is dropped with a warning;
  any other unreadable line is an error naming the file and line.
  """
  with open(path, encoding="utf-8") as f:
    text = f.read()
  lines = text.split("\n")
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not {"step", "split", "values"} <= set(record):
        raise ValueError("expected an object with 'step', 'split' and 'values'")
    except ValueError as e:
      if number == len(lines):
        logging.warning("%s:%d: dropping an incomplete last record (%s).", path, number, e)
        continue
      raise ValueError(f"{path}:{number}: not a metrics record ({e}): {line[:200]!r}") from e
    records.append(record)
  return records


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
  scalars = {}
  for name, value in values.items():
    try:
      scalars[name] = float(value)
    except (TypeError, ValueError) as e:
      raise TypeError(f"Metric {name!r} is not a scalar: {value!r}.") from e
  return scalars


class MetricWriter:
  """Writes scalars to TensorBoard event files and `metrics.jsonl` in `workdir`.

  Each record is one `write` system call, so a killed process leaves whole records behind.
  A disabled writer (every process but 0) creates and writes nothing.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool):
    """Opens the log for appending; the event file is created at the first write.

    Args:
      workdir: the run's directory.
      enabled: False on all processes but one (`jax.process_index() == 0`).
    """
    self.enabled = enabled
    self.jsonl_path = pathlib.Path(workdir) / JSONL_NAME
    self.tensorboard_dir = pathlib.Path(workdir) / TENSORBOARD_DIR
    self._jsonl = None
    self._events: record_writer.RecordWriter | None = None
    if enabled:
      self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
      self._open_jsonl()

  def _open_jsonl(self) -> None:
    self._jsonl = os.open(self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def _write_event(self, event: event_pb2.Event) -> None:
    """Appends `event` (wall time set now) and flushes it, creating the event file at the first call."""
    if self._events is None:
      self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
      name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
              f"{next(_EVENT_FILE_NUMBER)}")
      self._events = record_writer.RecordWriter(open(self.tensorboard_dir / name, "ab"))
      self._events.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    event.wall_time = time.time()
    self._events.write(event.SerializeToString())
    self._events.flush()

  def write_scalars(self, step: int, values: Mapping[str, Any], split: str = "train") -> None:
    """Logs `values` (floats, numpy or jax scalars) of `split` ("train", a dataset name) at `step`."""
    if not self.enabled:
      return
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}.")
    scalars = _scalars(values)
    line = json.dumps({"step": int(step), "split": split, "values": scalars}) + "\n"
    os.write(self._jsonl, line.encode("utf-8"))
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"{split}/{name}", simple_value=value)
                                         for name, value in scalars.items()])
    self._write_event(event_pb2.Event(step=int(step), summary=summary))

  def truncate_after(self, step: int, keep_at_step: tuple[str, ...] | None = None) -> None:
    """Forgets what a killed run logged after its last checkpoint (`step`, the restored one).

    Rewrites `metrics.jsonl` without records past `step` (atomically), and marks a restart
    at `step + 1` in the event files, which makes TensorBoard drop their later points.
    `keep_at_step` (splits) also drops the other splits' records at `step` (an evaluation to redo).
    """
    if not self.enabled:
      return
    records = [r for r in read_jsonl(self.jsonl_path) if r["step"] < step or r["step"] == step and (
        keep_at_step is None or r["split"] in keep_at_step)]
    temporary = self.jsonl_path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.close(self._jsonl)
    os.replace(temporary, self.jsonl_path)
    self._open_jsonl()
    # A session START: TensorBoard then drops the points it has read with steps >= this one.
    self._write_event(event_pb2.Event(step=step + 1,
                                      session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

  def close(self) -> None:
    if self._jsonl is not None:
      os.close(self._jsonl)
      self._jsonl = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ------------------------------------------------------------------------ step windows


@dataclasses.dataclass(frozen=True)
class WindowSummary:
  """The steps `first_step..last_step` of one logging window.

  Attributes:
    first_step: the window's first step (1-based).
    last_step: its last step.
    means: {metric: mean over the window's steps}.
    first_nonfinite: the first step with a NaN or infinite metric, None when all are finite.
    nonfinite_values: that step's metrics.
    steps_per_sec: timed steps per second (see `StepWindow`); None when no step was timed.
  """
  first_step: int
  last_step: int
  means: dict[str, float]
  first_nonfinite: int | None
  nonfinite_values: dict[str, float]
  steps_per_sec: float | None


class StepWindow:
  """Collects each step's metrics (device scalars) and reduces them once per logging window.

  `add` keeps the step's metrics on the device: nothing waits for the step. `close` fetches
  the window's metrics in one transfer, which waits for its last step, so the time between
  two `close`s is the time its steps took. A step that compiles, or an evaluation, is kept
  out of the rate by `restart_clock` after it.
  """

  def __init__(self, start_step: int, clock: Callable[[], float] = time.monotonic):
    """Starts the first window after `start_step` (0, or the step a run resumed from)."""
    self._clock = clock
    self._first_step = start_step + 1
    self._steps: list[Mapping[str, Any]] = []
    self.restart_clock(start_step)
    self.timed_steps, self.timed_seconds = 0, 0.0

  def restart_clock(self, step: int) -> None:
    """Times the window's steps after `step` only (call it once `step` has finished)."""
    self._clock_start = (step, self._clock())

  @property
  def pending_steps(self) -> int:
    """Steps added since the window opened."""
    return len(self._steps)

  def add(self, step_metrics: Mapping[str, Any]) -> None:
    """Adds the next step's metrics ({name: scalar}, device arrays or numbers)."""
    self._steps.append(step_metrics)

  def close(self) -> WindowSummary:
    """Ends the window; the next one starts after its last step."""
    if not self._steps:
      raise ValueError("StepWindow.close: the window has no steps.")
    fetched = jax.device_get(self._steps)
    now = self._clock()
    first, last = self._first_step, self._first_step + len(fetched) - 1
    values = {name: np.array([float(m[name]) for m in fetched], np.float64) for name in fetched[0]}
    finite = np.all([np.isfinite(v) for v in values.values()], axis=0)
    bad = None if finite.all() else int(np.argmin(finite))
    clock_step, clock_time = self._clock_start
    timed, seconds = last - clock_step, now - clock_time
    rate = None
    if timed > 0 and seconds > 0:
      rate = timed / seconds
      self.timed_steps, self.timed_seconds = self.timed_steps + timed, self.timed_seconds + seconds
    self._first_step, self._steps = last + 1, []
    self.restart_clock(last)
    return WindowSummary(first, last, {name: float(v.mean()) for name, v in values.items()},
                         None if bad is None else first + bad,
                         {} if bad is None else {name: float(v[bad]) for name, v in values.items()}, rate)

  def eta_seconds(self, remaining_steps: int) -> float:
    """Seconds the remaining steps take at the mean timed rate so far (NaN before any)."""
    if not self.timed_steps:
      return math.nan
    return remaining_steps * self.timed_seconds / self.timed_steps


# -------------------------------------------------------------------------------- curves


def _series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
  series: dict[str, tuple[list[int], list[float]]] = {}
  for record in records:
    for name, value in record["values"].items():
      if math.isfinite(value):
        steps, values = series.setdefault(f"{record['split']}/{name}", ([], []))
        steps.append(record["step"])
        values.append(value)
  return series


def _is_accuracy(name: str) -> bool:
  metric = name.rsplit("/", 1)[-1]
  return metric.startswith("top") or "acc" in metric


def _loss_limits(series: list[tuple[list[int], list[float]]]) -> tuple[float, float]:
  """y-range of the loss panel: from 0 (or below, for negative values) to just above the highest
  point after the first tenth of the steps, so the first steps' large losses do not flatten the rest."""
  steps = [s for steps, _ in series for s in steps]
  first, last = min(steps), max(steps)
  later = [v for steps, values in series for s, v in zip(steps, values) if s >= first + (last - first) / 10]
  everything = [v for _, values in series for v in values]
  top = max(later or everything)
  return min(0.0, min(everything)), 1.05 * top if top > 0 else 1.0


def plot_curves(jsonl_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
  """Plots the log's losses (metrics named `*loss*`) and accuracies (`top*`, `*acc*`) by step.

  Accuracies are drawn on 0-100%; losses from 0 up (`_loss_limits`). Series with few points
  get markers, so a single evaluation still shows. The PNG (parent folders created) is
  written to a temporary file and renamed, so a viewer never sees half of it.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  series = _series(read_jsonl(jsonl_path))
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, layout="constrained")
  losses = []
  for name, (steps, values) in sorted(series.items()):
    marker = "o" if len(steps) <= 20 else None
    if "loss" in name.rsplit("/", 1)[-1]:
      loss_ax.plot(steps, values, marker=marker, markersize=3, label=name)
      losses.append((steps, values))
    elif _is_accuracy(name):
      acc_ax.plot(steps, values, marker="o", markersize=4, label=name)
  if losses:
    loss_ax.set_ylim(*_loss_limits(losses))
  acc_ax.set_ylim(-2, 102)
  for ax, title, unit in ((loss_ax, "training loss", "loss"), (acc_ax, "evaluation accuracy", "percent")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  png_path = pathlib.Path(png_path)
  png_path.parent.mkdir(parents=True, exist_ok=True)
  temporary = png_path.with_name(png_path.name + ".tmp")
  fig.savefig(temporary, format="png")
  plt.close(fig)
  os.replace(temporary, png_path)
