"""Grain input pipelines: video records -> sampled, decoded, augmented clips in batches.

Sources are grain random-access sources of small records (`video_id`, `label`, `num_frames`
and where the video is); each also has `read_frames(record, indices)`, which decodes only
the sampled frames, after sampling:
  `ListSource`        the official list format `path num_frames label` (frame folders or
                      video files), or `path label` for videos;
  `VideoFolderSource` one folder of video files per class;
  `tfds_source.TfdsVideoSource` our TFDS ArrayRecord datasets.

Pipelines follow grain's MapDataset order (shard -> seed/shuffle -> repeat -> transforms ->
batch -> iterator with worker processes). Host batches are numpy dicts:
  train: `video` uint8 `[B, T, S, S, 3]` (cropped and flipped), `color` float32
         `[B, T, transforms.COLOR_SIZE]` (each frame's colour jitter and grayscale, applied
         on device by `transforms.apply_color`), `label` int32 `[B]`, `index` int32 `[B]`
         (position in the source), `skipped` int32 `[B]`, and `text` int32 `[B, 77]` if
         prompts are given;
  eval:  `video` uint8 `[B, V, T, S, S, 3]` (V = clips x crops views), `label`, `index`,
         `skipped`, and `mask` bool `[B]`: padding and bad samples are False, so summing
         metrics over `mask` counts every sample of the split exactly once.
`transforms.apply_color` and `normalize` (CLIP mean/std) run on device. Bad input raises
`video_io.DataError` naming the file and list line; with `skip_bad=True` it is logged and
counted instead: training substitutes the next good sample, evaluation masks the sample out,
and `skipped` carries the count, summed per epoch by the iterator and logged at each epoch's
end.

Decoding and OpenCV release the GIL, so read threads (`num_threads`) parallelise a process
well. Worker processes (`num_workers`) hand each batch over in fresh shared memory, whose
page faults cost about 1 ms per clip per side where we measured: use them when one
process's Python work runs out of threads.
"""

import ctypes
import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ezclip_jax import text_prompts
from ezclip_jax import transforms
from ezclip_jax import video_io

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MEDIA = ("frames", "video", "auto")


def normalize(video: jax.Array) -> jax.Array:
  """CLIP normalisation of uint8 RGB pixels `[..., 3]` -> float32 `(x / 255 - mean) / std`."""
  mean, std = jnp.asarray(CLIP_MEAN, jnp.float32), jnp.asarray(CLIP_STD, jnp.float32)
  return (video.astype(jnp.float32) / 255.0 - mean) / std


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class _Line:
  path: str
  num_frames: int  # -1: read from the video file
  label: int
  origin: str  # "list_file:line"


class ListSource:
  """Videos listed one per line: `path num_frames label`, or `path label` for video files.

  The official split files load as-is. Their absolute paths point into the authors'
  machines; `root` replaces everything before the last path component, so
  `/media/x/UCF_101/v_Punch_g01_c02` becomes `root/v_Punch_g01_c02`. Relative paths are taken relative to `root` when given.
  """

  def __init__(self, list_file: str | os.PathLike, labels_csv: str | os.PathLike, *,
               root: str | os.PathLike | None = None, media: str = "frames",
               template: str = "img_{:05d}.jpg", index_bias: int = 1, skip_bad: bool = False):
    """Parses and checks the list.

    Args:
      list_file: the list.
      labels_csv: `id,name` label CSV; every label must be one of its ids.
      root: replaces the listed paths' directory (see the class docstring).
      media: `frames` (folders of `template` images, official), `video` (video files), or
        `auto` (a folder is frames, a file is a video).
      template: frame file name template.
      index_bias: number of the first frame file.
      skip_bad: log and drop malformed lines instead of raising.
    """
    if media not in _MEDIA:
      raise ValueError(f"media must be one of {_MEDIA}, got {media!r}.")
    self.list_file = os.fspath(list_file)
    self.labels_csv = os.fspath(labels_csv)
    self.root = None if root is None else os.fspath(root)
    self.media = media
    self.template = template
    self.index_bias = index_bias
    self.num_classes = len(text_prompts.read_class_names(labels_csv))
    self._lines, self.num_bad_lines = self._parse(skip_bad)
    self._probed = _FrameCounts()

  def _parse(self, skip_bad: bool) -> tuple[list[_Line], int]:
    lines, bad = [], 0
    with open(self.list_file, encoding="utf-8") as f:
      for number, text in enumerate(f, start=1):
        if not text.strip():
          continue
        try:
          lines.append(self._parse_line(text.strip(), f"{self.list_file}:{number}"))
        except video_io.DataError as e:
          if not skip_bad:
            raise
          logging.warning("Skipping bad list line: %s", e)
          bad += 1
    if bad:
      logging.warning("%s: skipped %d bad lines of %d.", self.list_file, bad, bad + len(lines))
    if not lines:
      raise video_io.DataError(f"{self.list_file}: no usable lines.")
    return lines, bad

  def _parse_line(self, text: str, origin: str) -> _Line:
    fields = text.split()
    expected = "'path num_frames label'" + (" or 'path label'" if self.media != "frames" else "")
    try:
      if len(fields) >= 3 and fields[-2].lstrip("-").isdigit():
        path, num_frames, label = " ".join(fields[:-2]), int(fields[-2]), int(fields[-1])
        if num_frames <= 0:
          raise ValueError("num_frames must be positive")
      elif len(fields) >= 2 and self.media != "frames":
        path, num_frames, label = " ".join(fields[:-1]), -1, int(fields[-1])
      else:
        raise ValueError("the path must be followed by integer num_frames and label")
    except ValueError as e:
      raise video_io.DataError(f"{origin}: expected {expected}, got {text!r} ({e}).") from e
    if not 0 <= label < self.num_classes:
      raise video_io.DataError(f"{origin}: label {label} is not an id of {self.labels_csv} "
                               f"(0..{self.num_classes - 1}).")
    return _Line(self._resolve(path, origin), num_frames, label, origin)

  def _resolve(self, path: str, origin: str) -> str:
    if self.root is None:
      return path
    return os.path.join(self.root, os.path.basename(path) if os.path.isabs(path) else path)

  def __len__(self) -> int:
    return len(self._lines)

  def __getitem__(self, index: int) -> dict:
    line = self._lines[int(index)]
    media = self._media(line)
    num_frames = line.num_frames
    if num_frames < 0:
      num_frames = self._probed.get(line.path, line.origin)
    return {"video_id": os.path.basename(line.path), "label": line.label, "num_frames": num_frames,
            "path": line.path, "media": media, "origin": line.origin}

  def _media(self, line: _Line) -> str:
    if self.media != "auto":
      return self.media
    return "frames" if os.path.isdir(line.path) else "video"

  def read_frames(self, record: dict, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Decodes the frames at 0-based `indices` of `record`.

    Returns:
      uint8 `[len(indices), H, W, 3]`.
    """
    indices = np.asarray(indices).reshape(-1)
    try:
      if record["media"] == "frames":
        return _read_folder(record["path"], indices, record["num_frames"], self.template, self.index_bias)
      return video_io.read_video_frames(record["path"], indices, expected_frames=record["num_frames"])
    except video_io.DataError as e:
      raise video_io.DataError(f"{record['origin']}: {e}") from e

  def __repr__(self) -> str:
    return (f"ListSource(list_file={self.list_file!r}, labels_csv={self.labels_csv!r}, root={self.root!r}, "
            f"media={self.media!r}, template={self.template!r}, "
            f"index_bias={self.index_bias}, num_videos={len(self)})")


def _read_folder(path: str, indices: np.ndarray, num_frames: int, template: str, index_bias: int) -> np.ndarray:
  last = os.path.join(path, template.format(num_frames - 1 + index_bias))
  if not os.path.isfile(last):
    if not os.path.isdir(path):
      raise video_io.DataError(f"Missing frame folder {path}.")
    raise video_io.DataError(f"Frame folder {path} lacks {os.path.basename(last)}: it has fewer than the "
                             f"{num_frames} listed frames.")
  return video_io.read_jpeg_frames(path, indices, template, index_bias)


class _FrameCounts:
  """Frame counts read from video files, each file opened once per process."""

  def __init__(self):
    self._counts: dict[str, int] = {}

  def get(self, path: str, origin: str) -> int:
    if path not in self._counts:
      try:
        self._counts[path] = video_io.probe_num_frames(path)
      except video_io.DataError as e:
        raise video_io.DataError(f"{origin}: {e}") from e
    return self._counts[path]

  def __getstate__(self) -> dict:
    return {}  # workers count for themselves; the cache is not worth pickling

  def __setstate__(self, state: dict) -> None:
    del state
    self._counts = {}


class VideoFolderSource:
  """Video files in one folder per class: `root/<class>/<video>.<ext>`.

  A folder matches a label CSV name exactly or with underscores for spaces
  (`playing_guitar` is `playing guitar`). Frame counts are read from the files.
  """

  def __init__(self, root: str | os.PathLike, labels_csv: str | os.PathLike, *, skip_bad: bool = False):
    """Scans `root`.

    Args:
      root: the folder of class folders.
      labels_csv: `id,name` label CSV.
      skip_bad: log and ignore class folders missing from the CSV instead of raising.
    """
    self.root = os.fspath(root)
    self.labels_csv = os.fspath(labels_csv)
    names = text_prompts.read_class_names(labels_csv)
    by_name = {name: i for i, name in enumerate(names)} | {n.replace(" ", "_"): i for i, n in enumerate(names)}
    self._videos: list[tuple[str, int]] = []
    for folder in sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir()):
      if folder.name not in by_name:
        message = f"Class folder {folder} is not a class of {self.labels_csv}."
        if not skip_bad:
          raise video_io.DataError(message)
        logging.warning("Skipping: %s", message)
        continue
      files = sorted(p for p in folder.iterdir() if p.suffix.lower() in video_io.VIDEO_EXTENSIONS)
      self._videos += [(str(p), by_name[folder.name]) for p in files]
    if not self._videos:
      raise video_io.DataError(f"No video files ({', '.join(video_io.VIDEO_EXTENSIONS)}) in class folders of {root}.")
    self._probed = _FrameCounts()

  def __len__(self) -> int:
    return len(self._videos)

  def __getitem__(self, index: int) -> dict:
    path, label = self._videos[int(index)]
    return {"video_id": os.path.basename(path), "label": label, "num_frames": self._probed.get(path, path),
            "path": path, "media": "video", "origin": path}

  def read_frames(self, record: dict, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Decodes the frames at 0-based `indices` of `record`, uint8 `[len(indices), H, W, 3]`."""
    return video_io.read_video_frames(record["path"], np.asarray(indices).reshape(-1), record["num_frames"])

  def __repr__(self) -> str:
    return f"VideoFolderSource(root={self.root!r}, labels_csv={self.labels_csv!r}, num_videos={len(self)})"


# -------------------------------------------------------------------------- transforms


class ReadFrames(grain.transforms.Map):
  """Decodes the sampled `frame_indices` `[..., T]` into `frames` uint8 `[..., T, H, W, 3]`."""

  def __init__(self, source: Any):
    self.source = source

  def map(self, element: dict) -> dict:
    indices = element["frame_indices"]
    frames = self.source.read_frames(element, indices.reshape(-1))
    return {**element, "frames": frames.reshape(*indices.shape, *frames.shape[1:])}


class AddIndex(grain.transforms.MapWithIndex):
  """Records the element's position in the source, given the shard's `offset` and `length`."""

  def __init__(self, offset: int, length: int):
    self.offset = offset
    self.length = length

  def map_with_index(self, index: int, element: dict) -> dict:
    # Repeated datasets ask for indices past the end: epoch e of element i is index e * length + i.
    return {**element, "index": self.offset + index % self.length}


class PickText(grain.transforms.RandomMap):
  """Adds `text` int32 `[L]`: one of the K tokenised texts of the element's class."""

  def __init__(self, tokens: np.ndarray):
    self.tokens = tokens  # [K, C, L]

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    return {**element, "text": text_prompts.sample_text_tokens(self.tokens, np.asarray(element["label"]), rng)}


class ToExample(grain.transforms.Map):
  """Keeps only the batched fields, with their final dtypes."""

  def __init__(self, keys: Sequence[str]):
    self.keys = tuple(keys)

  def map(self, element: dict) -> dict:
    example = {"video": element["frames"], "label": np.int32(element["label"]), "index": np.int32(element["index"]),
               "skipped": np.int32(0)}
    return example | {k: element[k] for k in self.keys}


# ------------------------------------------------------------------ bad-sample handling


class _SubstituteBad(grain.MapDataset):
  """Replaces a sample that raises `DataError` by the next good one (deterministically)."""

  def __init__(self, parent: grain.MapDataset, max_tries: int = 100):
    super().__init__(parent)
    self._max_tries = max_tries

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    errors = []
    for k in range(self._max_tries):
      try:
        element = self._parent[(index + k) % len(self)]
      except video_io.DataError as e:
        logging.warning("Bad sample, substituting the next one: %s", e)
        errors.append(e)
        continue
      return {**element, "skipped": np.int32(len(errors))}
    raise video_io.DataError(f"{self._max_tries} consecutive bad samples; last: {errors[-1]}")

  def __str__(self) -> str:
    return f"_SubstituteBad(max_tries={self._max_tries})"


class _MaskBadAndPad(grain.MapDataset):
  """Pads `parent` to `length` with masked placeholders; bad samples (with `skip_bad`) too."""

  def __init__(self, parent: grain.MapDataset, length: int, placeholder: dict, skip_bad: bool):
    super().__init__(parent)
    self._length = length
    self._placeholder = placeholder
    self._skip_bad = skip_bad

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if index >= len(self._parent):
      return dict(self._placeholder)
    try:
      return {**self._parent[index], "mask": np.bool_(True)}
    except video_io.DataError as e:
      if not self._skip_bad:
        raise
      logging.warning("Bad sample, masked out of evaluation: %s", e)
      return {**self._placeholder, "skipped": np.int32(1)}

  def __str__(self) -> str:
    return f"_MaskBadAndPad(length={self._length}, skip_bad={self._skip_bad})"


class _EpochReport(grain.IterDataset):
  """Sums the `skipped` counts of batches and logs them at the end of each epoch."""

  def __init__(self, parent: grain.IterDataset, examples_per_epoch: int, what: str):
    super().__init__(parent)
    self._examples_per_epoch = examples_per_epoch
    self._what = what

  def __iter__(self) -> "_EpochReportIterator":
    return _EpochReportIterator(self._parent.__iter__(), self._examples_per_epoch, self._what)

  def __str__(self) -> str:
    return f"_EpochReport(examples_per_epoch={self._examples_per_epoch})"


class _EpochReportIterator(grain.DatasetIterator):
  """See `_EpochReport`; `skipped_per_epoch` lists the finished epochs' counts."""

  def __init__(self, parent: grain.DatasetIterator, examples_per_epoch: int, what: str):
    super().__init__(parent)
    self._examples_per_epoch = examples_per_epoch
    self._what = what
    self._examples = 0
    self._skipped = 0
    self.skipped_per_epoch: list[int] = []

  def __next__(self) -> dict:
    try:
      batch = next(self._parent)
    except StopIteration:
      if self._examples % self._examples_per_epoch:
        self._end_epoch()
      raise
    self._skipped += int(np.sum(batch["skipped"]))
    self._examples += len(batch["label"])
    if self._examples % self._examples_per_epoch < len(batch["label"]):
      self._end_epoch()
    return batch

  def _end_epoch(self) -> None:
    self.skipped_per_epoch.append(self._skipped)
    log = logging.warning if self._skipped else logging.info
    log("%s epoch %d: %d bad samples skipped (%s).", self._what, len(self.skipped_per_epoch), self._skipped,
        "substituted" if self._what == "train" else "masked out")
    self._skipped = 0

  def report_last_epoch(self) -> None:
    """Logs the epoch that training ended inside (batches that do not divide an epoch end mid-way)."""
    if self._examples % self._examples_per_epoch:
      self._end_epoch()

  def get_state(self) -> dict:
    return {"parent": self._parent.get_state(), "examples": self._examples, "skipped": self._skipped,
            "skipped_per_epoch": list(self.skipped_per_epoch)}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._examples, self._skipped = state["examples"], state["skipped"]
    self.skipped_per_epoch = list(state["skipped_per_epoch"])

  def close(self) -> None:
    self._parent.close()


# --------------------------------------------------------------------------- pipelines


def _shard(num_examples: int, shard_options: grain.sharding.ShardOptions | None,
           drop_remainder: bool) -> tuple[int, int, int]:
  """`(start, end, shard_count)` of this process's contiguous shard.

  Training drops the remainder so every process runs the same number of steps per epoch;
  evaluation keeps it (and pads instead), whatever `shard_options.drop_remainder` says.
  """
  options = shard_options or grain.sharding.ShardByJaxProcess()
  index, count = options.shard_index, options.shard_count
  size, remainder = divmod(num_examples, count)
  if drop_remainder:
    return index * size, (index + 1) * size, count
  start = index * size + min(index, remainder)
  return start, start + size + (index < remainder), count


def _per_process_batch(global_batch_size: int, shard_count: int) -> int:
  if global_batch_size % shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the {shard_count} processes.")
  return global_batch_size // shard_count


def _init_worker(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  # Workers are the parallelism; OpenCV's own thread pool in each of them only oversubscribes.
  cv2.setNumThreads(1)
  keep_freed_memory()


# glibc `mallopt` parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
  """Makes glibc's malloc in this process reuse freed memory instead of returning it to the OS.

  A clip passes through several fresh arrays of a few MB. With glibc's defaults such blocks
  are mmapped anew or the freed top of the heap is trimmed, so every clip pays page faults on
  fresh memory (a quarter to a half of the time per clip where we measured). Workers call
  this; a process that runs the pipeline itself (`num_workers=0`) gets it from
  `train_dataset`/`eval_dataset`. No-op without glibc.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return
  libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum; fixes the threshold there
  libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def _to_iter(ds: grain.MapDataset, num_workers: int, num_threads: int, prefetch: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers:
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers), worker_init_fn=_init_worker)
  keep_freed_memory()
  return it


def train_dataset(source: Any, *, global_batch_size: int, num_frames: int = 8, crop_size: int = 224,
                  flip: bool = True, color: bool = True, color_per_frame: bool = True, seed: int = 0,
                  num_epochs: int | None = None,
                  text_tokens: np.ndarray | None = None, skip_bad: bool = False,
                  shard_options: grain.sharding.ShardOptions | None = None, num_workers: int = 0,
                  num_threads: int = 8, prefetch: int = 16) -> grain.IterDataset:
  """The training pipeline: shuffled, augmented clips in full batches.

  Args:
    source: a source of this module or `tfds_source.TfdsVideoSource`.
    global_batch_size: batch over all processes; each process yields its share.
    num_frames: T, frames per clip (TSN segments).
    crop_size: S, output height and width.
    flip: random horizontal flips (turn off for Something-Something, whose labels say
      "left" and "right").
    color: draw the colour jitter and grayscale into `color` (applied on device); False
      leaves the colours and the batch without `color`.
    color_per_frame: jitter factors and order drawn for every frame, as the official code
      does; False: once per clip.
    seed: shuffling and augmentation seed; each epoch reshuffles.
    num_epochs: epochs to yield; None repeats forever.
    text_tokens: int32 `[K, C, L]` (`text_prompts.build_prompts(...).tokens`) to add one
      random text of each clip's class as `text`.
    skip_bad: substitute bad samples (logged, counted) instead of raising.
    shard_options: this process's shard; default `ShardByJaxProcess`.
    num_workers: grain worker processes (0: decode in this process's threads, and tune its
      allocator with `keep_freed_memory`).
    num_threads: decoding threads per process.
    prefetch: elements buffered per process.

  Returns:
    A grain `IterDataset`; `iter(...)` supports `get_state`/`set_state`.
  """
  start, end, shard_count = _shard(len(source), shard_options, drop_remainder=True)
  batch_size = _per_process_batch(global_batch_size, shard_count)
  if end - start < batch_size:
    raise ValueError(f"The shard has {end - start} videos, fewer than one batch of {batch_size}.")
  ds = grain.MapDataset.source(source)[start:end].map_with_index(AddIndex(start, end - start))
  ds = ds.seed(seed).shuffle().repeat(num_epochs)
  ds = ds.random_map(transforms.SampleTrainFrames(num_frames)).map(ReadFrames(source))
  ds = ds.random_map(transforms.RandomMultiScaleCrop(crop_size))
  if flip:
    ds = ds.random_map(transforms.RandomHorizontalFlip())
  extra = ()
  if color:
    ds = ds.random_map(transforms.RandomColorJitter(per_frame=color_per_frame))
    ds = ds.random_map(transforms.RandomGrayscale())
    extra = ("color",)
  if text_tokens is not None:
    ds, extra = ds.random_map(PickText(text_tokens)), extra + ("text",)
  ds = ds.map(ToExample(extra))
  if skip_bad:
    ds = _SubstituteBad(ds)
  ds = ds.batch(batch_size, drop_remainder=True)
  return _EpochReport(_to_iter(ds, num_workers, num_threads, prefetch), end - start, "train")


def eval_dataset(source: Any, *, batch_size: int, num_frames: int = 8, num_clips: int = 1, num_crops: int = 1,
                 resize_size: int = 256, crop_size: int = 224, skip_bad: bool = False,
                 shard_options: grain.sharding.ShardOptions | None = None, num_workers: int = 0,
                 num_threads: int = 8, prefetch: int = 16) -> grain.IterDataset:
  """The evaluation pipeline: every video once, in order, as `num_clips * num_crops` views.

  Every process yields the same number of batches (padded with `mask` False), so
  multi-host evaluation stays in step.

  Args:
    source: a source of this module or `tfds_source.TfdsVideoSource`.
    batch_size: per-process batch size.
    num_frames: T, frames per clip.
    num_clips: temporal views.
    num_crops: spatial views, 1 (centre) or 3 (along the long side).
    resize_size: short side before cropping (official: 256).
    crop_size: S (official: 224).
    skip_bad: mask bad samples out (logged, counted) instead of raising.
    shard_options: this process's shard; default `ShardByJaxProcess`.
    num_workers: grain worker processes (0: as in `train_dataset`).
    num_threads: decoding threads per process.
    prefetch: elements buffered per process.

  Returns:
    A finite grain `IterDataset`.
  """
  start, end, shard_count = _shard(len(source), shard_options, drop_remainder=False)
  largest_shard = -(-len(source) // shard_count)
  padded = -(-largest_shard // batch_size) * batch_size
  ds = grain.MapDataset.source(source)[start:end].map_with_index(AddIndex(start, end - start))
  ds = ds.map(transforms.SampleEvalFrames(num_frames, num_clips)).map(ReadFrames(source))
  ds = ds.map(transforms.ResizeShortSide(resize_size)).map(transforms.SpatialCrops(crop_size, num_crops))
  ds = ds.map(ToExample(()))
  placeholder = {"video": np.zeros((num_clips * num_crops, num_frames, crop_size, crop_size, 3), np.uint8),
                 "label": np.int32(-1), "index": np.int32(-1), "skipped": np.int32(0), "mask": np.bool_(False)}
  ds = _MaskBadAndPad(ds, padded, placeholder, skip_bad).batch(batch_size)
  return _EpochReport(_to_iter(ds, num_workers, num_threads, prefetch), padded, "eval")
