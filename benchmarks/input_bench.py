"""Input pipeline throughput: 8x224 training clips from 320x240 JPEG folders and mp4 files.

Writes a synthetic dataset (`ezclip_jax.synthetic`) to a temporary directory, then measures
`input_pipeline.train_dataset` (TSN sampling, decoding, multi-scale crop, flip, colour
parameters; the colour itself is applied on the accelerator) with grain worker processes and
read threads, next to the plain single-process loops a user would write: PIL-decode the same
sampled JPEG frames, or PyAV-decode each video from its start up to the last sampled frame.
Two more rows split the difference: the plain loop with the allocator setting the pipeline
uses (`input_pipeline.keep_freed_memory`), and the pipeline's own read and augmentation steps
called in a loop without grain.

Each measurement runs in a fresh process (none inherits another's allocator state), with
OpenCV's thread pool off, and reports clips per second of wall time and per CPU-second of
all its processes: the per-core rate, which other load on a shared machine does not change.
The measurements are interleaved and repeated; the table shows medians and ranges.

  python -m benchmarks.input_bench [--repeats 3] [--seconds 5] [--pipelines 0x1,1x1,2x1,0x2]
"""

import multiprocessing
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import av
import cv2
import numpy as np
from absl import app
from absl import flags
from PIL import Image

from ezclip_jax import console
from ezclip_jax import input_pipeline
from ezclip_jax import synthetic
from ezclip_jax import transforms

_VIDEOS_PER_CLASS = flags.DEFINE_integer("videos_per_class", 4, "Synthetic videos per class (8 classes).")
_FRAMES_PER_VIDEO = flags.DEFINE_integer("frames_per_video", 64, "Frames per synthetic video.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Measuring time per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds over all measurements.")
_PIPELINES = flags.DEFINE_list("pipelines", ["0x1", "1x1", "2x1", "0x2"],
                               "Pipeline configurations to measure, as `workers`x`threads per process`.")
_MEDIA = flags.DEFINE_list("media", ["jpeg", "mp4"], "Inputs to measure: jpeg (frame folders), mp4.")
_MEASURE = flags.DEFINE_string("measure", None, "Internal: run one measurement `media:what` on --data and print it.")
_DATA = flags.DEFINE_string("data", None, "Internal: the dataset root for --measure.")
_NUM_FRAMES = 8
_BATCH = 8
# Grain's shuffle costs about 30 ms / N per element for N videos (0.9 ms for 32), far more
# than on real datasets; listing each video this often makes a list of realistic length.
_LIST_COPIES = 320
_PLAIN, _PLAIN_TUNED, _STEPS = "plain", "plain_tuned", "steps"
_LABELS = {_PLAIN: "plain decode loop", _PLAIN_TUNED: "plain loop, tuned malloc", _STEPS: "pipeline steps, no grain"}


def _cpu_seconds() -> float:
  """CPU time so far of this process (all threads) and its live children (grain workers)."""
  total = time.process_time()
  for child in multiprocessing.active_children():
    with open(f"/proc/{child.pid}/stat", encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
  return total


def _rate(clips: Iterator[int], seconds: float) -> tuple[float, float]:
  """Clips per second and per CPU-second of an iterator yielding clip counts, after a
  warm-up item."""
  next(clips)
  done, start, cpu = 0, time.perf_counter(), _cpu_seconds()
  while time.perf_counter() - start < seconds:
    done += next(clips)
  return done / (time.perf_counter() - start), done / (_cpu_seconds() - cpu)


def _cycle(step: Callable[[int], None], n: int) -> Iterator[int]:
  i = 0
  while True:
    step(i % n)
    i += 1
    yield 1


def _plain_jpeg_loop(source: input_pipeline.ListSource, indices: list[np.ndarray]) -> Iterator[int]:
  def step(i):
    path = source[i]["path"]
    [np.asarray(Image.open(f"{path}/img_{j + 1:05d}.jpg").convert("RGB")) for j in indices[i]]
  return _cycle(step, len(source))


def _plain_video_loop(source: input_pipeline.ListSource, indices: list[np.ndarray]) -> Iterator[int]:
  def step(i):
    wanted = set(indices[i].tolist())
    with av.open(source[i]["path"]) as container:
      for j, frame in enumerate(container.decode(video=0)):
        if j in wanted:
          frame.to_ndarray(format="rgb24")
        if j >= max(wanted):
          break
  return _cycle(step, len(source))


def _steps_loop(source: input_pipeline.ListSource, indices: list[np.ndarray]) -> Iterator[int]:
  """The pipeline's own read and augmentation steps called in a loop, without grain."""
  steps = (transforms.RandomMultiScaleCrop(224), transforms.RandomHorizontalFlip(), transforms.RandomColorJitter(),
           transforms.RandomGrayscale())
  rng = np.random.default_rng(0)

  def step(i):
    element = {**source[i], "frame_indices": indices[i]}
    element = input_pipeline.ReadFrames(source).map(element)
    for transform in steps:
      element = transform.random_map(element, rng)
  return _cycle(step, len(source))


def _pipeline(source: input_pipeline.ListSource, num_workers: int, num_threads: int) -> Iterator[int]:
  dataset = input_pipeline.train_dataset(source, global_batch_size=_BATCH, num_frames=_NUM_FRAMES, crop_size=224,
                                         num_workers=num_workers, num_threads=num_threads, prefetch=2 * _BATCH)
  iterator = iter(dataset)
  try:
    next(iterator)  # workers start here
    while True:
      yield len(next(iterator)["label"])
  finally:
    iterator.close()


def _measure_one(root: pathlib.Path, media: str, what: str, seconds: float) -> tuple[float, float]:
  """Clips per second and per CPU-second of one measurement in this process."""
  labels = root / "labels.csv"
  if media == "jpeg":
    source = input_pipeline.ListSource(root / "frames.txt", labels)
  else:
    source = input_pipeline.ListSource(root / "videos.txt", labels, media="video")
  rng = np.random.default_rng(0)
  indices = [transforms.train_frame_indices(source[i]["num_frames"], _NUM_FRAMES, rng) for i in range(len(source))]
  if what in (_PLAIN, _PLAIN_TUNED):
    if what == _PLAIN_TUNED:
      input_pipeline.keep_freed_memory()
    plain = _plain_jpeg_loop if media == "jpeg" else _plain_video_loop
    return _rate(plain(source, indices), seconds)
  if what == _STEPS:
    input_pipeline.keep_freed_memory()
    return _rate(_steps_loop(source, indices), seconds)
  workers, threads = what.split("x")
  return _rate(_pipeline(source, int(workers), int(threads)), seconds)


def _run_in_subprocess(root: str, media: str, what: str) -> tuple[float, float]:
  command = [sys.executable, "-m", "benchmarks.input_bench", f"--measure={media}:{what}", f"--data={root}",
             f"--seconds={_SECONDS.value}"]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  wall, cpu = result.stdout.split()[-2:]
  return float(wall), float(cpu)


def _report(media: str, rates: dict[str, list[tuple[float, float]]]) -> None:
  base = statistics.median(cpu for _, cpu in rates[_PLAIN])
  name = {"jpeg": "JPEG folders", "mp4": "mp4 files"}[media]
  print(f"\n{name}: median [min-max] of {len(rates[_PLAIN])} runs")
  print(f"  {'':32s} {'clips/s':>21s}   {'clips/CPU-s':>23s}   % of plain loop per CPU-s")
  for what, values in rates.items():
    wall, cpu = [v[0] for v in values], [v[1] for v in values]
    label = _LABELS.get(what) or "pipeline, {} workers x {} threads".format(*what.split("x"))
    print(f"  {label:32s} {statistics.median(wall):6.1f} [{min(wall):6.1f}-{max(wall):6.1f}]   "
          f"{statistics.median(cpu):6.1f} [{min(cpu):6.1f}-{max(cpu):6.1f}]   "
          f"{100 * statistics.median(cpu) / base:5.1f}%")


def main(argv: list[str]) -> None:
  del argv
  console.set_log_level(console.LOG_LEVEL.value)
  cv2.setNumThreads(1)  # one core per process, as in the pipeline's workers
  if _MEASURE.value:
    media, what = _MEASURE.value.split(":")
    print(*_measure_one(pathlib.Path(_DATA.value), media, what, _SECONDS.value))
    return
  whats = [_PLAIN, _PLAIN_TUNED, _STEPS] + list(_PIPELINES.value)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    data = synthetic.make_dataset(tmp, videos_per_class=_VIDEOS_PER_CLASS.value,
                                  num_frames=_FRAMES_PER_VIDEO.value, height=240, width=320, videos=True)
    for path in (data.frames_list, data.video_list):
      path.write_text(path.read_text() * _LIST_COPIES)
    print(f"Wrote {8 * _VIDEOS_PER_CLASS.value} videos of {_FRAMES_PER_VIDEO.value} frames at 320x240 "
          f"(listed {_LIST_COPIES} times each) in {time.perf_counter() - start:.1f} s; clips of {_NUM_FRAMES} "
          f"frames, batch {_BATCH}, output 224x224; {_REPEATS.value} interleaved rounds of {_SECONDS.value:g} s.")
    rates = {media: {what: [] for what in whats} for media in _MEDIA.value}
    for round_index in range(_REPEATS.value):
      for media in _MEDIA.value:
        # Rotating the order spreads slow phases of a shared machine over all measurements.
        shift = round_index % len(whats)
        for what in whats[shift:] + whats[:shift]:
          rates[media][what].append(_run_in_subprocess(tmp, media, what))
    for media in _MEDIA.value:
      _report(media, rates[media])
  print(f"\nLoad average (1, 5, 15 min) at the end: {os.getloadavg()}; {os.cpu_count()} CPUs.")


if __name__ == "__main__":
  app.run(main)
