"""Input pipeline throughput: 8x224 training clips from 320x240 JPEG folders and mp4 files.

Writes a synthetic dataset (data/synthetic.py) to a temporary directory, then measures
clips/s of `input_pipeline.train_dataset` (TSN sampling, decoding, multi-scale crop, flip,
colour jitter, grayscale) with 0, 1 and 2 grain workers of one decoding thread each, next to
the plain single-process loops a user would write: PIL-decode the same sampled JPEG frames,
or PyAV-decode each video from its start up to the last sampled frame.

Everything runs single-threaded per process (OpenCV's thread pool off, one grain read
thread), so the numbers are per core; on a loaded machine compare them within one run.

  python -m ezclip_jax.input_bench [--videos_per_class 4] [--frames_per_video 64] [--seconds 8]
"""

import tempfile
import time
from collections.abc import Callable, Iterator

import av
import cv2
import numpy as np
from absl import app
from absl import flags
from absl import logging
from PIL import Image

from data import synthetic
from ezclip_jax import input_pipeline
from ezclip_jax import transforms

_VIDEOS_PER_CLASS = flags.DEFINE_integer("videos_per_class", 4, "Synthetic videos per class (8 classes).")
_FRAMES_PER_VIDEO = flags.DEFINE_integer("frames_per_video", 64, "Frames per synthetic video.")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Measuring time per configuration.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker counts to measure.")
_NUM_FRAMES = 8
_BATCH = 8


def _rate(clips: Iterator[int], seconds: float) -> float:
  """Clips per second of an iterator yielding clip counts, after a warm-up item."""
  next(clips)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    done += next(clips)
  return done / (time.perf_counter() - start)


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


def _plain_transform_loop(source, indices: list[np.ndarray]) -> Iterator[int]:
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


def _pipeline(source, num_workers: int) -> Iterator[int]:
  dataset = input_pipeline.train_dataset(source, global_batch_size=_BATCH, num_frames=_NUM_FRAMES, crop_size=224,
                                         num_workers=num_workers, num_threads=1, prefetch=2 * _BATCH)
  iterator = iter(dataset)
  try:
    next(iterator)  # workers start here
    while True:
      yield len(next(iterator)["label"])
  finally:
    iterator.close()


def _measure(name: str, source, indices: list[np.ndarray], plain: Callable, seconds: float) -> None:
  base = _rate(plain(source, indices), seconds)
  print(f"{name}: plain decode loop, 1 process        {base:7.1f} clips/s")
  same = _rate(_plain_transform_loop(source, indices), seconds)
  print(f"{name}: same read + augmentation, no grain {same:7.1f} clips/s")
  for workers in (int(w) for w in _WORKERS.value):
    rate = _rate(_pipeline(source, workers), seconds)
    per = rate / max(workers, 1)
    print(f"{name}: pipeline, {workers} workers  {rate:7.1f} clips/s = {per:6.1f} per worker = "
          f"{100 * per / base:5.1f}% of the plain decode loop, "
          f"{100 * per / same:5.1f}% of the same steps without grain")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # the pipeline logs every (tiny) epoch's skip count
  cv2.setNumThreads(1)  # one core per process, as in the pipeline's workers
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    data = synthetic.make_dataset(tmp, videos_per_class=_VIDEOS_PER_CLASS.value,
                                  num_frames=_FRAMES_PER_VIDEO.value, height=240, width=320, videos=True)
    print(f"Wrote {8 * _VIDEOS_PER_CLASS.value} videos of {_FRAMES_PER_VIDEO.value} frames at 320x240 "
          f"in {time.perf_counter() - start:.1f} s; clips of {_NUM_FRAMES} frames, batch {_BATCH}, output 224x224.")
    frames = input_pipeline.ListSource(data.frames_list, data.labels_csv)
    videos = input_pipeline.ListSource(data.video_list, data.labels_csv, media="video")
    rng = np.random.default_rng(0)
    indices = [transforms.train_frame_indices(_FRAMES_PER_VIDEO.value, _NUM_FRAMES, rng) for _ in range(len(frames))]
    _measure("JPEG folders", frames, indices, _plain_jpeg_loop, _SECONDS.value)
    _measure("mp4 files   ", videos, indices, _plain_video_loop, _SECONDS.value)


if __name__ == "__main__":
  app.run(main)
