"""Reading the frames a clip needs: JPEG frame folders and video files (PyAV).

Only the requested frames are read. Frame folders open one file per needed frame; videos
seek to the keyframe before the first needed frame and decode forward, seeking again when
the next needed frame lies past a keyframe (so a few frames of a long video never cost a
full decode). Every failure raises `DataError` naming the file and what was expected.
"""

import os
import pathlib
import re
import threading
from collections.abc import Iterator, Sequence

import av
from av.video.reformatter import VideoReformatter
import cv2
import numpy as np
import simplejpeg

# A seek flushes the decoder, which then refills its frame-reordering delay before the keyframe
# comes out: about as costly as decoding this many frames (H.264 with B-frames, 320x240).
SEEK_COST_FRAMES = 8
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg")
_NUMBERED_FRAME = re.compile(r"(.*?)(\d+)(\.jpe?g)", re.IGNORECASE)
_THREAD = threading.local()


class DataError(ValueError):
  """A bad input file or list line; the message names it."""


def read_jpeg_frames(directory: str, indices: Sequence[int], template: str = "img_{:05d}.jpg",
                     index_bias: int = 1) -> np.ndarray:
  """Decodes the frames at 0-based `indices` of a frame folder.

  Args:
    directory: folder of frame images (JPEG; other formats OpenCV reads also work).
    indices: 0-based frame positions; the file of position `i` is
      `template.format(i + index_bias)`. Repeats are decoded once.
    template: frame file name template (official: `img_{:05d}.jpg`).
    index_bias: number of the first frame file (official: 1).

  Returns:
    uint8 `[len(indices), H, W, 3]` RGB.
  """
  indices = [int(i) for i in indices]
  out, first_row = None, {}
  for row, i in enumerate(indices):
    if i in first_row:
      out[row] = out[first_row[i]]
      continue
    path = os.path.join(directory, template.format(i + index_bias))
    data = _read_file(path)
    image = None if _is_jpeg(data) else _decode_other(data, path)
    shape = _jpeg_shape(data, path) if image is None else image.shape
    if out is None:
      out = np.empty((len(indices), *shape), np.uint8)
    elif shape != out.shape[1:]:
      raise DataError(f"Frames of {directory} differ in size: {path} is {shape[1]}x{shape[0]}, an earlier "
                      f"frame {out.shape[2]}x{out.shape[1]}.")
    if image is None:
      _decode_jpeg(data, path, out[row])
    else:
      out[row] = image
    first_row[i] = row
  return out


def frame_folder_layout(directory: str | os.PathLike) -> tuple[str, int, int]:
  """How the JPEG frames of a folder are numbered.

  Args:
    directory: a frame folder whose JPEG files are `<prefix><number><suffix>` with one
      prefix and suffix and consecutive numbers, zero-padded (`img_00001.jpg`) or not
      (`1.jpg ... 12.jpg`).

  Returns:
    `(template, index_bias, num_frames)` for `video_io.read_jpeg_frames`.
  """
  names = sorted(p.name for p in pathlib.Path(directory).iterdir() if p.suffix.lower() in JPEG_SUFFIXES)
  matches = []
  for name in names:
    match = _NUMBERED_FRAME.fullmatch(name)
    if match is None:
      raise DataError(f"Frame folder {directory}: {name!r} is not a numbered frame file like "
                               "img_00001.jpg.")
    matches.append(match)
  patterns = sorted({(m[1], m[3]) for m in matches})
  if len(patterns) > 1:
    raise DataError(f"Frame folder {directory} mixes frame names {patterns[0][0]}N{patterns[0][1]} and "
                             f"{patterns[1][0]}N{patterns[1][1]}; expected one numbering.")
  prefix, suffix = (s.replace("{", "{{").replace("}", "}}") for s in patterns[0])
  template = prefix + "{:0%dd}" % min(len(m[2]) for m in matches) + suffix
  for name, match in zip(names, matches):
    if name != template.format(int(match[2])):
      raise DataError(f"Frame folder {directory}: {name!r} is not numbered like "
                               f"{template.format(int(match[2]))!r}.")
  numbers = {int(m[2]) for m in matches}
  first = min(numbers)
  for number in range(first, first + len(names)):
    if number not in numbers:
      raise DataError(f"Frame folder {directory}: frame {template.format(number)} is missing "
                               f"(frames are numbered from {first}).")
  return template, first, len(names)


def _read_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError as e:
    raise DataError(f"Missing frame file {path}.") from e
  except OSError as e:
    raise DataError(f"Unreadable frame file {path}: {e}") from e


def _is_jpeg(data: bytes) -> bool:
  return data[:2] == b"\xff\xd8"


def _jpeg_shape(data: bytes, path: str) -> tuple[int, int, int]:
  try:
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
  except ValueError as e:
    raise DataError(f"Corrupt image {path}: it does not decode as an image ({e}).") from e
  return height, width, 3


def _decode_jpeg(data: bytes, path: str, out: np.ndarray) -> None:
  """Decodes RGB pixels into `out` `[H, W, 3]` (the shape from `_jpeg_shape`)."""
  # simplejpeg calls libjpeg-turbo directly: PIL's pixels, 1.3x faster than OpenCV, written
  # into the clip's array; it raises on truncated or corrupt data, some of which OpenCV accepts.
  try:
    simplejpeg.decode_jpeg(data, "RGB", buffer=out)
  except ValueError as e:
    raise DataError(f"Corrupt image {path}: it does not decode as an image ({e}).") from e


def _decode_other(data: bytes, path: str) -> np.ndarray:
  if not data:
    raise DataError(f"Corrupt image {path}: it does not decode as an image (the file is empty).")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise DataError(f"Corrupt image {path}: it does not decode as an image.")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _open(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
  if not os.path.isfile(path):
    raise DataError(f"Missing video file {path}.")
  if os.path.getsize(path) == 0:
    raise DataError(f"Unreadable video {path}: the file is empty (0 bytes).")
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise DataError(f"Unreadable video {path}: {e}") from e
  if not container.streams.video:
    container.close()
    raise DataError(f"Unreadable video {path}: it has no video stream.")
  stream = container.streams.video[0]
  # Parallelism comes from grain's workers; a codec thread pool per clip only oversubscribes.
  stream.thread_count = 1
  return container, stream


def probe_num_frames(path: str) -> int:
  """Number of frames of a video, from the container header or by counting packets.

  Args:
    path: the video file.

  Returns:
    The frame count (> 0).
  """
  container, stream = _open(path)
  with container:
    count = stream.frames
    if count <= 0:  # webm/mkv headers carry no frame count; demuxing reads no pixels.
      try:
        count = sum(1 for packet in container.demux(stream) if packet.size > 0)
      except av.error.FFmpegError as e:
        raise DataError(f"Unreadable video {path}: {e}") from e
  if count <= 0:
    raise DataError(f"Unreadable video {path}: no frames.")
  return count


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
  # `frame.to_ndarray(format=...)` builds a new swscale context per frame (~1 ms at 320x240);
  # a reformatter kept per thread reuses it and returns the same pixels.
  if not hasattr(_THREAD, "reformatter"):
    _THREAD.reformatter = VideoReformatter()
  return _THREAD.reformatter.reformat(frame, format="rgb24").to_ndarray()


class _Timeline:
  """Maps presentation timestamps of `stream` to 0-based frame indices."""

  def __init__(self, stream: av.video.stream.VideoStream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or not stream.time_base:
      raise _NoTimestamps()
    self._start = stream.start_time or 0
    self._frames_per_tick = float(stream.time_base * rate)

  def index(self, pts: int | None) -> int:
    if pts is None:
      raise _NoTimestamps()
    return round((pts - self._start) * self._frames_per_tick)

  def pts(self, index: int) -> int:
    return self._start + int(index / self._frames_per_tick)


class _NoTimestamps(Exception):
  pass


def read_video_frames(path: str, indices: Sequence[int], expected_frames: int | None = None,
                      decode_log: list[int] | None = None) -> np.ndarray:
  """Decodes the frames at 0-based `indices` of a video, seeking instead of decoding all.

  Args:
    path: the video file.
    indices: 0-based frame positions (any order, repeats allowed).
    expected_frames: the frame count a list claims; a container header reporting fewer
      frames raises.
    decode_log: if given, the index of every decoded frame is appended (for tests and
      profiling).

  Returns:
    uint8 `[len(indices), H, W, 3]` RGB.
  """
  log = [] if decode_log is None else decode_log
  found = dict(iter_video_frames(path, indices, expected_frames, log))
  missing = [i for i in sorted(set(int(i) for i in indices)) if i not in found]
  if missing:
    raise _too_short(path, log, missing[0])
  return np.stack([found[int(i)] for i in indices])


def _too_short(path: str, log: list[int], index: int) -> DataError:
  decodable = max(log) + 1 if log else 0
  return DataError(f"Video {path} has only {decodable} decodable frames; frame index {index} (0-based) was needed.")


def iter_video_frames(path: str, indices: Sequence[int], expected_frames: int | None = None,
                      decode_log: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """Streams the frames at 0-based `indices` of a video in increasing order, one at a time.

  Memory stays at one decoded frame however many are wanted (long videos, timelines).
  Frames past the end of the stream are not yielded; `read_video_frames` raises for them.

  Yields:
    `(index, uint8 [H, W, 3] RGB)` for each distinct index, in increasing order.
  """
  wanted = sorted(set(int(i) for i in indices))
  container, stream = _open(path)
  if expected_frames is not None and 0 < stream.frames < expected_frames:
    container.close()
    raise DataError(f"Video {path} has {stream.frames} frames (container header), fewer than the "
                    f"{expected_frames} listed.")
  log = [] if decode_log is None else decode_log
  done: set[int] = set()
  try:
    with container:
      try:
        for index, frame in _decode_seeking(container, stream, wanted, log):
          done.add(index)
          yield index, frame
      except _NoTimestamps:
        container.seek(0)
        yield from _decode_counting(container, stream, [i for i in wanted if i not in done], log)
  except av.error.FFmpegError as e:
    raise DataError(f"Unreadable video {path}: {e}") from e


def probe_video(path: str) -> tuple[int, float]:
  """`(number of frames, frames per second)` of a video file (fps from the stream's rate)."""
  num_frames = probe_num_frames(path)
  container, stream = _open(path)
  with container:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  if not rate or rate <= 0:
    raise DataError(f"Unreadable video {path}: no frame rate in the stream header.")
  return num_frames, float(rate)


def _decode_seeking(container, stream, wanted: list[int], log: list[int]) -> Iterator[tuple[int, np.ndarray]]:
  """Seek-and-decode over the sorted `wanted` indices, yielding them in order; see the module docstring."""
  timeline = _Timeline(stream)
  wanted_set = set(wanted)
  found: set[int] = set()
  keyframe, position, gop = None, -1, None
  frames = None
  for target in wanted:
    if target in found:
      continue
    if frames is None or _should_seek(target, keyframe, position, gop):
      container.seek(timeline.pts(target), stream=stream, backward=True)
      frames = container.decode(stream)
      landed, run_keyframe = None, None
    for frame in frames:
      index = timeline.index(frame.pts)
      log.append(index)
      if landed is None:
        landed = index
        if index > target:  # the demuxer overshot (e.g. edit lists): start from the beginning.
          raise _NoTimestamps()
      if frame.key_frame:
        if run_keyframe is not None and index > run_keyframe:  # consecutive keyframes of one run
          gop = min(gop or index, index - run_keyframe)
        keyframe = run_keyframe = index
      position = max(position, index)
      if index in wanted_set and index not in found:
        found.add(index)
        yield index, _to_rgb(frame)
      if index >= target:
        break
    else:
      break  # end of stream: the remaining targets do not exist


def _should_seek(target: int, keyframe: int | None, position: int, gop: int | None) -> bool:
  """Whether seeking to `target` is likely to save decoding work over decoding forward.

  With a known keyframe interval `gop`, a seek lands on the last keyframe before `target`
  and skips the frames from `position` to it. Without one, seek only when the jump is longer
  than the stretch already known to hold no keyframe, which bounds the work a fruitless seek
  repeats to what has been decoded anyway.
  """
  if keyframe is None:
    return True
  if gop is not None:
    return keyframe + (target - keyframe) // gop * gop - position > SEEK_COST_FRAMES
  return target - position > max(SEEK_COST_FRAMES, position - keyframe + 1)


def _decode_counting(container, stream, wanted: list[int], log: list[int]) -> Iterator[tuple[int, np.ndarray]]:
  """Decodes from the start counting frames, for streams without usable timestamps."""
  if not wanted:
    return
  wanted_set, last = set(wanted), wanted[-1]
  for index, frame in enumerate(container.decode(stream)):
    log.append(index)
    if index in wanted_set:
      yield index, _to_rgb(frame)
    if index >= last:
      break
