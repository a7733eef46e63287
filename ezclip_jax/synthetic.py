"""Synthetic motion videos whose classes differ only in temporal order.

Each video shows one rectangle on a static textured background. The classes come in
opposite pairs, and video `k` of one class is video `k` of its partner played backwards:
`moving_left`/`moving_right`, `moving_up`/`moving_down`, `growing`/`shrinking`,
`rotating_clockwise`/`rotating_anticlockwise` (clockwise as seen on screen). So the *set*
of frames is identical within a pair and only a model that sees temporal order can tell
the pair apart; any single frame is ambiguous.

Layout written under `root` (the official list format; paths in the lists are absolute):
```
root/labels.csv                           "id,name" header, one line per class
root/frames/<video_id>/img_00001.jpg ...  1-based JPEG frames (template img_{:05d}.jpg)
root/frames.txt                           "<root>/frames/<video_id> <num_frames> <label>"
root/videos/<class>/<video_id>.mp4        the same frames as H.264 (mpeg4 fallback), 25 fps
root/videos.txt                           "<root>/videos/<class>/<video_id>.mp4 <label>"
```
`<video_id>` is `<class>_<k:04d>`. Everything is a function of `seed`. The demo
(`ezclip_jax.demo`), the tests and the benchmarks generate their data with it;
`python -m data.synthetic` is its command line.
"""

import dataclasses
import fractions
import pathlib
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

CLASSES: tuple[str, ...] = (
    "moving_left", "moving_right", "moving_up", "moving_down",
    "growing", "shrinking", "rotating_clockwise", "rotating_anticlockwise",
)
FRAME_TEMPLATE = "img_{:05d}.jpg"
FPS = 25
# Short GOPs give the videos several keyframes, so decoders have to seek like on real data.
GOP_SIZE = 8
_JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
  root: pathlib.Path
  class_names: tuple[str, ...]
  labels_csv: pathlib.Path
  frames_list: pathlib.Path | None
  video_list: pathlib.Path | None


@dataclasses.dataclass(frozen=True)
class _Motion:
  """One video's trajectory from its first to its last frame (pixels, radians)."""
  centre_start: tuple[float, float]
  centre_end: tuple[float, float]
  size_start: float
  size_end: float
  angle_start: float
  angle_end: float


def _pair_index(name: str) -> int:
  if name not in CLASSES:
    raise ValueError(f"Unknown synthetic class {name!r}; expected one of {CLASSES}.")
  return CLASSES.index(name) // 2


def _is_forward(name: str) -> bool:
  return CLASSES.index(name) % 2 == 0


def _sample_motion(rng: np.random.Generator, pair: int, height: int, width: int) -> _Motion:
  """Trajectory of the *first* class of `pair`; its partner plays it backwards."""
  short = min(height, width)
  size = rng.uniform(0.12, 0.2) * short
  cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
  angle = rng.uniform(0, np.pi)
  lo_x, hi_x = rng.uniform(0.15, 0.3) * width, rng.uniform(0.7, 0.85) * width
  lo_y, hi_y = rng.uniform(0.15, 0.3) * height, rng.uniform(0.7, 0.85) * height
  if pair == 0:  # moving_left
    return _Motion((cy, hi_x), (cy, lo_x), size, size, angle, angle)
  if pair == 1:  # moving_up
    return _Motion((hi_y, cx), (lo_y, cx), size, size, angle, angle)
  if pair == 2:  # growing
    return _Motion((cy, cx), (cy, cx), 0.06 * short, 0.3 * short, angle, angle)
  # rotating_clockwise: with y pointing down, an increasing angle turns clockwise on screen.
  return _Motion((cy, cx), (cy, cx), size * 1.5, size * 1.5, angle, angle + rng.uniform(0.6, 0.9) * np.pi)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A static smooth texture: gives the decoders realistic work and carries no motion cue."""
  base = rng.integers(40, 111, size=3)
  noise = rng.integers(-30, 31, size=(max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
  noise = np.stack([np.asarray(Image.fromarray(noise[..., c]).resize((width, height), Image.BICUBIC))
                    for c in range(3)], axis=-1)
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _render(motion: _Motion, num_frames: int, background: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """Renders the rectangle along `motion`.

  Returns:
    uint8 `[num_frames, H, W, 3]`.
  """
  height, width, _ = background.shape
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t, a in enumerate(np.linspace(0.0, 1.0, num_frames)):
    cy, cx = (1 - a) * np.array(motion.centre_start) + a * np.array(motion.centre_end)
    size = (1 - a) * motion.size_start + a * motion.size_end
    angle = (1 - a) * motion.angle_start + a * motion.angle_end
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    inside = (np.abs(u) <= size) & (np.abs(v) <= size / 2.5)
    frames[t] = np.where(inside[..., None], colour, background)
  return frames


def _clip(seed: int, pair: int, k: int, num_frames: int, height: int, width: int) -> np.ndarray:
  """Frames of video `k` of the first class of `pair`, `[num_frames, H, W, 3]` uint8."""
  rng = np.random.default_rng([seed, pair, k])
  motion = _sample_motion(rng, pair, height, width)
  background = _background(rng, height, width)
  # Always lighter than the dark background: the frozen random backbone of the demo then
  # sees a growing rectangle as a change of the same sign in every clip.
  colour = rng.integers(180, 256, size=3)
  return _render(motion, num_frames, background, colour.astype(np.uint8))


def _write_frames(directory: pathlib.Path, frames: np.ndarray) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(directory / FRAME_TEMPLATE.format(i + 1), quality=_JPEG_QUALITY)


def _video_codec() -> str:
  try:
    av.codec.Codec("libx264", "w")
    return "libx264"
  except av.codec.codec.UnknownCodecError:
    return "mpeg4"


def write_video(path: pathlib.Path, frames: np.ndarray, codec: str | None = None) -> None:
  """Encodes `frames` uint8 `[T, H, W, 3]` (even H and W) as an mp4 at `FPS`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  codec = codec or _video_codec()
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = GOP_SIZE
    stream.codec_context.time_base = fractions.Fraction(1, FPS)
    if codec == "libx264":
      stream.options = {"crf": "12", "preset": "veryfast"}
    else:
      stream.bit_rate = 8_000_000
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def make_dataset(root: str | pathlib.Path, *, videos_per_class: int = 4, num_frames: int = 16, height: int = 64,
                 width: int = 64, classes: Sequence[str] | None = None, seed: int = 0, frames: bool = True,
                 videos: bool = False) -> SyntheticDataset:
  """Writes the synthetic motion dataset (layout in the module docstring).

  Args:
    root: output directory (created; existing files are overwritten).
    videos_per_class: videos written per class.
    num_frames: frames per video.
    height: frame height (even, when `videos`).
    width: frame width (even, when `videos`).
    classes: a subset of `CLASSES` in label order; default all of them.
    seed: every pixel is a function of it.
    frames: write JPEG frame folders and `frames.txt`.
    videos: write mp4 files and `videos.txt`.

  Returns:
    Paths of what was written.
  """
  root = pathlib.Path(root).absolute()
  class_names = tuple(classes or CLASSES)
  for name in class_names:
    _pair_index(name)
  if videos and (height % 2 or width % 2):
    raise ValueError(f"H.264 in yuv420p needs even frame sizes, got {height}x{width}.")
  root.mkdir(parents=True, exist_ok=True)
  labels_csv = root / "labels.csv"
  labels_csv.write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(class_names)))
  frame_lines, video_lines = [], []
  for label, name in enumerate(class_names):
    for k in range(videos_per_class):
      clip = _clip(seed, _pair_index(name), k, num_frames, height, width)
      clip = clip if _is_forward(name) else clip[::-1]
      video_id = f"{name}_{k:04d}"
      if frames:
        _write_frames(root / "frames" / video_id, clip)
        frame_lines.append(f"{root / 'frames' / video_id} {num_frames} {label}\n")
      if videos:
        video_path = root / "videos" / name / f"{video_id}.mp4"
        write_video(video_path, clip)
        video_lines.append(f"{video_path} {label}\n")
  frames_list = root / "frames.txt" if frames else None
  video_list = root / "videos.txt" if videos else None
  if frames_list:
    frames_list.write_text("".join(frame_lines))
  if video_list:
    video_list.write_text("".join(video_lines))
  return SyntheticDataset(root, class_names, labels_csv, frames_list, video_list)

