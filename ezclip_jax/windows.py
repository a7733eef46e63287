"""Sliding windows over long videos: action timelines (`python -m ezclip_jax.predict --timeline`).

A video is cut into windows of `window` seconds every `stride` seconds (the last window ends
at the video's end; a video shorter than one window is one window over all of it). Each
window is sampled exactly as evaluation samples a clip: T frames at its segment centres
(`transforms.eval_frame_indices` over the window's frames), the short side resized to
256/224 of the model's resolution, centre-cropped (the transforms of
`input_pipeline.eval_dataset`). A frame folder is a video at `fps` frames per second.

Decoding streams: frames come from `video_io.iter_video_frames` in increasing order (seeking
over stretches no window needs), are resized and cropped at once, and are dropped as soon as
no pending window needs them, so memory does not grow with the video's length. Windows of
many videos fill one batch of the model.

A timeline merges consecutive windows with the same most probable class into segments; a
window whose best probability is below `min_probability` is background and in no segment.
Two neighbouring segments meet halfway between the centres of their outermost windows.
"""

import collections
import dataclasses
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from ezclip_jax import transforms
from ezclip_jax import video_io

DEFAULT_WINDOW_S = 4.0
DEFAULT_STRIDE_S = 2.0
DEFAULT_FOLDER_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """A video file or frame folder with its length.

  Attributes:
    path: the file or folder.
    num_frames: frames in it.
    fps: frames per second (a frame folder's is given).
    template: a frame folder's file name template (None for video files).
    index_bias: number of a frame folder's first file.
  """
  path: str
  num_frames: int
  fps: float
  template: str | None = None
  index_bias: int = 1

  @property
  def duration(self) -> float:
    return self.num_frames / self.fps


def probe(path: str, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
  """Length and frame rate of a video file or frame folder (`video_io.DataError` if unreadable)."""
  try:
    if os.path.isdir(path):
      template, index_bias, num_frames = video_io.frame_folder_layout(path)
      return VideoInfo(path, num_frames, folder_fps, template, index_bias)
    num_frames, fps = video_io.probe_video(path)
  except OSError as e:
    raise video_io.DataError(f"Unreadable {path}: {e}") from e
  return VideoInfo(path, num_frames, fps)


def probed_jobs(paths: Iterable[str], folder_fps: float, windows_of: Callable[["VideoInfo"], list["Window"]]
                ) -> Iterator[tuple[str, "VideoInfo | str", list["Window"]]]:
  """(path, its `VideoInfo`, `windows_of(info)`) for each path, or (path, why, []) for one `probe` refuses."""
  for path in paths:
    try:
      info = probe(path, folder_fps)
    except video_io.DataError as e:
      yield path, str(e), []
      continue
    yield path, info, windows_of(info)


@dataclasses.dataclass(frozen=True)
class Window:
  """Frames `[first, first + length)` of a video."""
  first: int
  length: int

  def frame_indices(self, num_segments: int) -> np.ndarray:
    """The T frames evaluation would sample from this stretch as a clip."""
    return self.first + transforms.eval_frame_indices(self.length, num_segments)[0]

  def times(self, fps: float) -> tuple[float, float]:
    return self.first / fps, (self.first + self.length) / fps


def slide(num_frames: int, fps: float, window_s: float, stride_s: float) -> list[Window]:
  """Windows of `window_s` seconds every `stride_s` seconds covering all `num_frames` frames.

  The last window ends at the last frame; a video no longer than one window is one window.
  """
  length = max(1, round(window_s * fps))
  stride = max(1, round(stride_s * fps))
  if length >= num_frames:
    return [Window(0, num_frames)]
  windows = [Window(first, length) for first in range(0, num_frames - length + 1, stride)]
  if windows[-1].first + length < num_frames:
    windows.append(Window(num_frames - length, length))
  return windows


def _frame_reader(info: VideoInfo, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
  """`(index, uint8 [H, W, 3])` for the sorted distinct `indices`."""
  if info.template is None:
    yield from video_io.iter_video_frames(info.path, indices, expected_frames=info.num_frames)
    return
  for index in sorted(set(indices)):
    yield index, video_io.read_jpeg_frames(info.path, [index], info.template, info.index_bias)[0]


class _ClipMaker:
  """One frame -> the model's view of it: short side resized, centre-cropped (as evaluation)."""

  def __init__(self, resolution: int):
    self.resize = transforms.ResizeShortSide(round(resolution * 256 / 224))  # official: 256 for 224 crops
    self.crop = transforms.SpatialCrops(resolution, 1)

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    element = self.resize.map({"frames": frame[None, None]})
    return self.crop.map(element)["frames"][0, 0]


def iter_clips(info: VideoInfo, windows: Sequence[Window], num_segments: int,
               resolution: int) -> Iterator[tuple[int, np.ndarray]]:
  """Streams each window's clip, holding only the frames that pending windows still need.

  Yields:
    `(window position, uint8 [T, S, S, 3])`, in the order the windows' last frames are decoded.

  Raises:
    video_io.DataError: the video cannot be read, or has fewer frames than its header said.
  """
  wanted = [w.frame_indices(num_segments) for w in windows]
  users = collections.Counter(int(i) for indices in wanted for i in set(indices.tolist()))
  by_last = collections.defaultdict(list)
  for position, indices in enumerate(wanted):
    by_last[int(indices.max())].append(position)
  make_clip = _ClipMaker(resolution)
  held: dict[int, np.ndarray] = {}
  for index, frame in _frame_reader(info, list(users)):
    held[index] = make_clip(frame)
    for position in by_last.pop(index, ()):
      indices = wanted[position]
      yield position, np.stack([held[int(i)] for i in indices])
      for i in set(indices.tolist()):
        users[i] -= 1
        if not users[i]:
          del held[i]
  if by_last:
    last = max(by_last)
    raise video_io.DataError(f"Video {info.path} ended before frame {last} (0-based) of its "
                             f"{info.num_frames} frames.")


@dataclasses.dataclass
class Timing:
  """Where the time of `run_windows` went (seconds)."""
  decode: float = 0.0
  model: float = 0.0
  windows: int = 0


@dataclasses.dataclass
class VideoOutputs:
  """The model's outputs for one video's windows, or why it could not be read."""
  info: VideoInfo | None
  windows: list[Window]
  outputs: np.ndarray | None = None
  error: str | None = None


def run_windows(apply: Callable[[np.ndarray], np.ndarray], jobs: Iterable[tuple[str, VideoInfo | str, list[Window]]],
                *, num_segments: int, resolution: int, batch_size: int, timing: Timing | None = None,
                on_video: Callable[[str, VideoOutputs], None] | None = None) -> dict[str, VideoOutputs]:
  """Runs `apply` on every window of every video, `batch_size` windows of any videos per call.

  Args:
    apply: uint8 `[B, 1, T, S, S, 3]` clips (B = batch_size, or a power of two for the last batch;
      padded with zeros) -> `[B, ...]` outputs.
    jobs: `(path, info, windows)` per video; an info that is a string is why the video could
      not be probed.
    num_segments: T.
    resolution: S.
    batch_size: windows per call.
    timing: accumulates decode and model seconds.
    on_video: called with each video's outputs as soon as all its windows are done.

  Returns:
    {path: VideoOutputs}: outputs `[num_windows, ...]` in window order, or the error.
  """
  timing = timing if timing is not None else Timing()
  results: dict[str, VideoOutputs] = {}
  parts: dict[str, dict[int, np.ndarray]] = {}
  pending: list[tuple[str, int, np.ndarray]] = []

  def finish(path):
    result = results[path]
    if result.error is None:
      part = parts.pop(path)
      result.outputs = np.stack([part[i] for i in range(len(result.windows))])
    if on_video is not None:
      on_video(path, result)

  def flush():
    # A last, partial batch is padded to a power of two, not to batch_size: fewer wasted rows, few compilations.
    rows = min(batch_size, 1 << (len(pending) - 1).bit_length())
    clips = np.zeros((rows, 1, num_segments, resolution, resolution, 3), np.uint8)
    for row, (_, _, clip) in enumerate(pending):
      clips[row, 0] = clip
    start = time.perf_counter()
    outputs = np.asarray(apply(clips))
    timing.model += time.perf_counter() - start
    timing.windows += len(pending)
    done = []
    for row, (path, position, _) in enumerate(pending):
      if results[path].error is None:
        parts[path][position] = outputs[row]
        if len(parts[path]) == len(results[path].windows):
          done.append(path)
    pending.clear()
    for path in done:
      finish(path)

  for path, info, windows in jobs:
    if isinstance(info, str):
      results[path] = VideoOutputs(None, windows, error=info)
      finish(path)
      continue
    results[path] = VideoOutputs(info, windows)
    parts[path] = {}
    clips = iter_clips(info, windows, num_segments, resolution)
    while True:
      start = time.perf_counter()
      try:
        position, clip = next(clips)
      except StopIteration:
        break
      except video_io.DataError as e:
        results[path].error = str(e)
        break
      finally:
        timing.decode += time.perf_counter() - start
      pending.append((path, position, clip))
      if len(pending) == batch_size:
        flush()
    if results[path].error is not None:
      pending[:] = [p for p in pending if p[0] != path]
      parts.pop(path, None)
      finish(path)
  if pending:
    flush()
  return results


# ----------------------------------------------------------------------------- timelines


@dataclasses.dataclass(frozen=True)
class Segment:
  start: float
  end: float
  label: str
  probability: float


@dataclasses.dataclass(frozen=True)
class Timeline:
  """One video's windows and segments.

  Attributes:
    path: the video.
    duration: seconds (None when unreadable).
    times: float `[N, 2]` start and end of each window (seconds).
    probabilities: float32 `[N, C]` class probabilities of each window.
    segments: merged runs of windows with the same top-1 class (background left out).
    error: why the video could not be read, or None.
  """
  path: str
  duration: float | None = None
  times: np.ndarray | None = None
  probabilities: np.ndarray | None = None
  segments: tuple[Segment, ...] = ()
  error: str | None = None


def segments(times: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
             min_probability: float = 0.0) -> tuple[Segment, ...]:
  """Runs of consecutive windows with the same top-1 class.

  Args:
    times: `[N, 2]` window start and end, in order.
    probabilities: `[N, C]`.
    class_names: `[C]`.
    min_probability: windows whose top-1 probability is below it are background.

  Returns:
    Segments in time order; a segment's probability is the mean over its windows of its
    class's probability. Neighbouring windows of different runs split at the midpoint of
    their centres; the first run starts at its first window's start, the last ends at its
    last window's end.
  """
  top = np.argmax(probabilities, axis=1)
  runs = np.where(probabilities[np.arange(len(top)), top] >= min_probability, top, -1)
  centres = times.mean(axis=1)
  out = []
  first = 0
  for i in range(1, len(runs) + 1):
    if i < len(runs) and runs[i] == runs[first]:
      continue
    if runs[first] >= 0:
      start = times[0, 0] if first == 0 else (centres[first - 1] + centres[first]) / 2
      end = times[-1, 1] if i == len(runs) else (centres[i - 1] + centres[i]) / 2
      cls = int(runs[first])
      out.append(Segment(float(start), float(end), class_names[cls],
                         float(probabilities[first:i, cls].mean())))
    first = i
  return tuple(out)


def timeline(result: VideoOutputs, path: str, class_names: Sequence[str], min_probability: float) -> Timeline:
  if result.error is not None:
    return Timeline(path, error=result.error)
  fps = result.info.fps
  times = np.array([w.times(fps) for w in result.windows], np.float64)
  probabilities = np.asarray(result.outputs, np.float32)
  return Timeline(path, result.info.duration, times, probabilities,
                  segments(times, probabilities, class_names, min_probability))


def to_json(timelines: Sequence[Timeline], class_names: Sequence[str], top_k: int) -> list[dict]:
  """One object per video: `{"path", "duration", "windows": [{"start", "end", "top_k": [{"label",
  "probability"}]}], "segments": [{"start", "end", "label", "probability"}]}`, or `{"path", "error"}`."""
  out = []
  for line in timelines:
    if line.error is not None:
      out.append({"path": line.path, "error": line.error})
      continue
    windows = []
    for (start, end), probs in zip(line.times, line.probabilities):
      order = np.argsort(-probs, kind="stable")[:top_k]
      windows.append({"start": float(start), "end": float(end),
                      "top_k": [{"label": class_names[i], "probability": float(probs[i])} for i in order]})
    out.append({"path": line.path, "duration": float(line.duration), "windows": windows,
                "segments": [dataclasses.asdict(s) for s in line.segments]})
  return out


def format_table(timelines: Sequence[Timeline]) -> str:
  """Per video: its path and length, then one row per segment."""
  lines = []
  for line in timelines:
    lines.append(line.path)
    if line.error is not None:
      lines.append(f"  error: {line.error}")
      continue
    lines.append(f"  {line.duration:.1f} s, {len(line.times)} windows, {len(line.segments)} segments")
    width = max([len("label")] + [len(s.label) for s in line.segments])
    lines.append(f"  {'start':>8}  {'end':>8}  {'label':<{width}}  probability")
    for s in line.segments:
      lines.append(f"  {s.start:8.2f}  {s.end:8.2f}  {s.label:<{width}}  {s.probability:11.4f}")
  return "\n".join(lines)


def plot(line: Timeline, class_names: Sequence[str], out_file: str | os.PathLike, num_classes: int = 5) -> None:
  """A PNG of the `num_classes` classes most probable somewhere over time, segments shaded."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  centres = line.times.mean(axis=1)
  shown = np.argsort(-line.probabilities.max(axis=0), kind="stable")[:num_classes]
  colours = {class_names[c]: plt.cm.tab10(i % 10) for i, c in enumerate(shown)}
  fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, line.duration / 10)), 3.2), layout="constrained")
  for s in line.segments:
    ax.axvspan(s.start, s.end, color=colours.get(s.label, "0.8"), alpha=0.18, linewidth=0)
  for c in shown:
    ax.plot(centres, line.probabilities[:, c], marker=".", color=colours[class_names[c]], label=class_names[c])
  ax.set(xlim=(0, line.duration), ylim=(0, 1.02), xlabel="time (s, window centres)", ylabel="probability",
         title=pathlib.Path(line.path).name)
  ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", title="shaded: segments")
  fig.savefig(out_file, dpi=110)
  plt.close(fig)


def plot_names(paths: Sequence[str]) -> list[str]:
  """`<name>.png` per video, numbered where two videos share a name."""
  stems = [pathlib.Path(p).name for p in paths]
  counts = collections.Counter(stems)
  return [f"{stem}.png" if counts[stem] == 1 else f"{stem}.{i}.png" for i, stem in enumerate(stems)]
