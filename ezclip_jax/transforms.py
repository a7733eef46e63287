"""Frame sampling and clip augmentation with the official EZ-CLIP parameters.

Sampling follows TSN as in the official `datasets/datasets.py` (`_sample_indices`,
`_get_val_indices`) but returns 0-based frame positions; readers add the file index bias.
Augmentations follow the official `utils/Augmentation.py`: training uses a multi-scale crop
(scales 1, .875, .75, .66) to 224, a horizontal flip (off for Something-Something), colour
jitter (p=.8; brightness .4, contrast .4, saturation .2, hue .1) and grayscale (p=.2);
evaluation resizes the short side to 256 (bicubic) and centre-crops 224.

Each transform is a grain `Map`/`RandomMap` over an element dict whose `"frames"` entry is
uint8 `[..., H, W, 3]`; random parameters are drawn once per element, so all frames of a clip
share one crop, flip and jitter. (The official code draws the jitter anew for every frame; we
keep a clip's appearance consistent, which motion-sensitive training relies on.) Cropping,
resizing and flipping run on the host in OpenCV, on the whole clip and into fresh numpy
arrays. Colour jitter and grayscale are only drawn on the host (into the element's `color`)
and applied on the accelerator by `apply_color`, which reproduces PIL's arithmetic: on the
host they cost more than decoding the frames. Evaluation resizing uses PIL so it matches the
official output.
"""

from collections.abc import Sequence

import cv2
import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
MAX_BILINEAR_SHRINK = 2.0


def train_frame_indices(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """TSN training sampling: one random frame in each of `num_segments` equal segments.

  A video with at most `num_segments` frames uses every frame once and fills the remaining
  slots with random repeats, in temporal order (the official short-video rule). Random draws
  are `rng.integers(0, high)` with array-valued `high`.

  Args:
    num_frames: frames in the video (> 0).
    num_segments: frames to sample, T.
    rng: random generator.

  Returns:
    int64 `[T]` 0-based frame positions, non-decreasing.
  """
  _check_num_frames(num_frames)
  if num_frames <= num_segments:
    extra = rng.integers(0, num_frames, size=num_segments - num_frames)
    return np.sort(np.concatenate([np.arange(num_frames), extra]))
  ticks = np.arange(num_segments + 1) * num_frames // num_segments
  return ticks[:-1] + rng.integers(0, ticks[1:] - ticks[:-1])


def eval_frame_indices(num_frames: int, num_segments: int, num_clips: int = 1) -> np.ndarray:
  """TSN evaluation sampling: segment centres, for `num_clips` temporal views.

  With one clip this is the official formula `int(i * n / T + (n / T - 1) / 2)` (the frame
  nearest each segment's centre; `n // 2` for T = 1; `i * n // T` when n <= T). Clip `c` of
  `num_clips` takes the centre of the `c`-th of `num_clips` equal sub-segments instead, which
  reduces to the official formula for one clip.

  Args:
    num_frames: frames in the video (> 0).
    num_segments: frames per clip, T.
    num_clips: temporal views.

  Returns:
    int64 `[num_clips, T]` 0-based frame positions.
  """
  _check_num_frames(num_frames)
  n, t = num_frames, num_segments
  if t == 1:
    return np.array([[int((2 * c + 1) * n / (2 * num_clips))] for c in range(num_clips)])
  if n <= t:
    return np.tile(np.array([i * n // t for i in range(t)]), (num_clips, 1))
  rows = []
  for c in range(num_clips):
    offset = ((2 * c + 1) * n / t / num_clips - 1) / 2.0
    rows.append([int(i * n / t + offset) for i in range(t)])
  return np.array(rows)


def _check_num_frames(num_frames: int) -> None:
  if num_frames <= 0:
    raise ValueError(f"A video needs at least one frame, got num_frames={num_frames}.")


class SampleTrainFrames(grain.transforms.RandomMap):
  """Adds `"frame_indices"` int32 `[T]` from the element's `"num_frames"`."""

  def __init__(self, num_segments: int):
    self.num_segments = num_segments

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    indices = train_frame_indices(element["num_frames"], self.num_segments, rng)
    return {**element, "frame_indices": indices.astype(np.int32)}


class SampleEvalFrames(grain.transforms.Map):
  """Adds `"frame_indices"` int32 `[num_clips, T]` from the element's `"num_frames"`."""

  def __init__(self, num_segments: int, num_clips: int = 1):
    self.num_segments = num_segments
    self.num_clips = num_clips

  def map(self, element: dict) -> dict:
    indices = eval_frame_indices(element["num_frames"], self.num_segments, self.num_clips)
    return {**element, "frame_indices": indices.astype(np.int32)}


def multi_scale_crop_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int,
                             more_fix_crop: bool = True) -> list[tuple[int, int]]:
  """The official fixed crop positions: corners, centre, and (more_fix_crop) 8 more.

  Returns:
    `(x, y)` top-left corners.
  """
  w_step, h_step = (image_w - crop_w) // 4, (image_h - crop_h) // 4
  offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
  if more_fix_crop:
    offsets += [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step), (2 * w_step, 0),
                (w_step, h_step), (3 * w_step, h_step), (w_step, 3 * h_step), (3 * w_step, 3 * h_step)]
  return offsets


def multi_scale_crop_sizes(image_w: int, image_h: int, size: int,
                           scales: Sequence[float] = MULTI_SCALE_CROP_SCALES,
                           max_distort: int = 1) -> list[tuple[int, int]]:
  """The official candidate `(crop_w, crop_h)` pairs: scales of the short side, snapped to
  `size` within 3 pixels, with width and height at most `max_distort` scales apart."""
  crops = [int(min(image_w, image_h) * s) for s in scales]
  crops = [size if abs(c - size) < 3 else c for c in crops]
  return [(w, h) for i, h in enumerate(crops) for j, w in enumerate(crops) if abs(i - j) <= max_distort]


class RandomMultiScaleCrop(grain.transforms.RandomMap):
  """Crops one official multi-scale box from every frame and resizes it to `size` x `size`."""

  def __init__(self, size: int = 224, scales: Sequence[float] = MULTI_SCALE_CROP_SCALES,
               max_distort: int = 1, more_fix_crop: bool = True):
    self.size = size
    self.scales = tuple(scales)
    self.max_distort = max_distort
    self.more_fix_crop = more_fix_crop

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    frames = element["frames"]
    height, width = frames.shape[-3:-1]
    box = sample_multi_scale_box(width, height, rng, self.size, self.scales, self.max_distort, self.more_fix_crop)
    return {**element, "frames": crop_resize(frames, box, self.size)}


def sample_multi_scale_box(image_w: int, image_h: int, rng: np.random.Generator, size: int = 224,
                           scales: Sequence[float] = MULTI_SCALE_CROP_SCALES, max_distort: int = 1,
                           more_fix_crop: bool = True) -> tuple[int, int, int, int]:
  """Draws an official multi-scale crop: a size pair, then one of its fixed positions.

  Returns:
    `(x, y, w, h)`.
  """
  sizes = multi_scale_crop_sizes(image_w, image_h, size, scales, max_distort)
  crop_w, crop_h = sizes[rng.integers(len(sizes))]
  offsets = multi_scale_crop_offsets(image_w, image_h, crop_w, crop_h, more_fix_crop)
  x, y = offsets[rng.integers(len(offsets))]
  return x, y, crop_w, crop_h


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """Crops `box` = (x, y, w, h) from `[T, H, W, 3]` frames and resizes it to `[T, size, size, 3]`.

  Bilinear, like the official PIL resize. PIL widens its kernel when shrinking; up to
  `MAX_BILINEAR_SHRINK` plain bilinear, which still reads every pixel, is as close to it as
  OpenCV's pixel-area resampling (~0.25 levels on average on video frames) at a sixth of the
  cost; beyond, bilinear would skip pixels and pixel-area is used.
  """
  x, y, w, h = box
  shrink = max(w, h) / size
  interpolation = cv2.INTER_AREA if shrink > MAX_BILINEAR_SHRINK else cv2.INTER_LINEAR
  out = np.empty((len(frames), size, size, 3), np.uint8)
  for frame, dst in zip(frames, out):
    cv2.resize(frame[y:y + h, x:x + w], (size, size), dst=dst, interpolation=interpolation)
  return out


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """Mirrors all frames of a clip with probability `p`."""

  def __init__(self, p: float = 0.5):
    self.p = p

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    if rng.random() >= self.p:
      return element
    frames = element["frames"]
    out = np.empty(frames.shape, np.uint8)
    cv2.flip(_as_tall_image(frames), 1, dst=_as_tall_image(out))
    return {**element, "frames": out}


def _as_tall_image(frames: np.ndarray) -> np.ndarray:
  """`[..., H, W, 3]` -> one `[N*H, W, 3]` image (a view when contiguous), so OpenCV makes
  one call per clip."""
  return np.ascontiguousarray(frames).reshape(-1, *frames.shape[-2:])


# ------------------------------------------------------------------------------- colour
#
# Drawn per clip on the host, applied on the accelerator by `apply_color` (from the train
# step), where they cost next to nothing beside the model. An element's `color` float32
# `[COLOR_SIZE]`:
COLOR_JITTER = 0  # 1: apply the jitter
COLOR_BRIGHTNESS, COLOR_CONTRAST, COLOR_SATURATION = 1, 2, 3  # PIL ImageEnhance factors
COLOR_HUE_SHIFT = 4  # hue rotation in 1/256 turns, `int(hue_factor * 255) % 256` (torchvision)
COLOR_ORDER = slice(5, 9)  # the order of the four adjustments, 0-3 as in the lines above
COLOR_GRAYSCALE = 9  # 1: turn the clip gray (after the jitter)
COLOR_SIZE = 10
NO_COLOR_CHANGE = np.array([0, 1, 1, 1, 0, 0, 1, 2, 3, 0], np.float32)


def _color(element: dict) -> np.ndarray:
  return np.array(element.get("color", NO_COLOR_CHANGE), np.float32)


class RandomColorJitter(grain.transforms.RandomMap):
  """With probability `p`, torchvision `ColorJitter`: factors drawn once per clip, the four
  adjustments applied in a random order. Writes them into the element's `color`."""

  def __init__(self, p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
               saturation: float = 0.2, hue: float = 0.1):
    self.p = p
    self.brightness = brightness
    self.contrast = contrast
    self.saturation = saturation
    self.hue = hue

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    color = _color(element)
    if rng.random() < self.p:
      color[COLOR_JITTER] = 1
      color[COLOR_ORDER] = rng.permutation(4)
      color[COLOR_BRIGHTNESS] = rng.uniform(1 - self.brightness, 1 + self.brightness)
      color[COLOR_CONTRAST] = rng.uniform(1 - self.contrast, 1 + self.contrast)
      color[COLOR_SATURATION] = rng.uniform(1 - self.saturation, 1 + self.saturation)
      color[COLOR_HUE_SHIFT] = int(rng.uniform(-self.hue, self.hue) * 255) % 256
    return {**element, "color": color}


class RandomGrayscale(grain.transforms.RandomMap):
  """Marks the clip for turning gray with probability `p`, in the element's `color`."""

  def __init__(self, p: float = 0.2):
    self.p = p

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    color = _color(element)
    color[COLOR_GRAYSCALE] = rng.random() < self.p
    return {**element, "color": color}


def apply_color(video: jax.Array, color: jax.Array) -> jax.Array:
  """Applies each clip's `color` parameters as torchvision does to PIL images.

  Every frame gets PIL's `ImageEnhance` brightness, contrast (blend with the frame's mean
  gray level) and colour (saturation), and torchvision's 8-bit HSV hue rotation, each
  rounded to uint8 as PIL does; then, if marked, PIL's `convert("L")` gray. The HSV
  conversions are PIL's formulas evaluated exactly in integers, so they give the same
  pixels on every backend; PIL's own float evaluation lands one hue step lower on the 0.3%
  of colours whose hue is a whole step.

  Args:
    video: uint8 `[B, T, H, W, 3]`.
    color: float32 `[B, COLOR_SIZE]` (see `RandomColorJitter`, `RandomGrayscale`).

  Returns:
    uint8 `[B, T, H, W, 3]`.
  """
  return jax.vmap(_color_clip)(video, color)


_HUE = 3  # The hue rotation's number in `COLOR_ORDER`; 0-2 are the three blends.


def _color_clip(clip: jax.Array, color: jax.Array) -> jax.Array:
  # The order is data: under vmap every branch of a switch would run at every position. So the
  # costly hue rotation runs once, with the blends before and after it chosen per position.
  order = color[COLOR_ORDER].astype(jnp.int32)
  hue_at = jnp.argmax(order == _HUE)
  jittered = clip
  for position in range(3):
    jittered = jnp.where(position < hue_at, _enhance(jittered, order[position], color), jittered)
  jittered = adjust_hue(jittered, color[COLOR_HUE_SHIFT])
  for position in range(1, 4):
    jittered = jnp.where(position > hue_at, _enhance(jittered, order[position], color), jittered)
  clip = jnp.where(color[COLOR_JITTER] > 0, jittered, clip)
  return jnp.where(color[COLOR_GRAYSCALE] > 0, to_grayscale(clip), clip)


def _enhance(frames: jax.Array, op: jax.Array, color: jax.Array) -> jax.Array:
  """Brightness, contrast or saturation (`op` 0, 1, 2): the PIL blend with black, the frame's
  mean gray or each pixel's gray, as `adjust_brightness` / `_contrast` / `_saturation`."""
  luma = _luma(frames)
  pixels = luma.shape[-1] * luma.shape[-2]
  mean = (2 * luma.sum(axis=(-2, -1)) + pixels) // (2 * pixels)
  degenerate = jnp.where(op == 0, 0, jnp.where(op == 1, mean[..., None, None], luma))
  return _blend(degenerate[..., None], frames, color[COLOR_BRIGHTNESS + op])


def _luma(frames: jax.Array) -> jax.Array:
  """PIL's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point, `[..., 3]` -> int32 `[...]`."""
  x = frames.astype(jnp.int32)
  return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def _blend(degenerate: jax.Array, frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL's `Image.blend(degenerate, frames, factor)`: `d + factor * (x - d)` in float32,
  clipped and truncated."""
  d = degenerate.astype(jnp.float32)
  delta = frames.astype(jnp.float32) - d
  # PIL rounds the product before adding; XLA fuses multiply-adds, which moves results that
  # are whole numbers to just below them. Halves of 12 significant bits multiply exactly, so
  # their sum is the rounded product under either evaluation.
  bits = jax.lax.bitcast_convert_type(jnp.asarray(factor, jnp.float32), jnp.uint32)
  high = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
  product = high * delta + (factor - high) * delta
  return jnp.clip(jnp.floor(d + product), 0, 255).astype(frames.dtype)


def adjust_brightness(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Brightness`: blend with black. uint8 `[..., H, W, 3]`."""
  return _blend(jnp.zeros_like(frames), frames, factor)


def adjust_contrast(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Contrast`: blend each image with its mean gray level, rounded."""
  luma = _luma(frames)
  pixels = luma.shape[-1] * luma.shape[-2]
  mean = (2 * luma.sum(axis=(-2, -1)) + pixels) // (2 * pixels)
  return _blend(mean[..., None, None, None], frames, factor)


def adjust_saturation(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Color`: blend every pixel with its own gray level."""
  return _blend(_luma(frames)[..., None], frames, factor)


def adjust_hue(frames: jax.Array, shift: jax.Array) -> jax.Array:
  """torchvision's PIL `adjust_hue`: rotate PIL's 8-bit HSV hue by `shift` / 256 of a turn."""
  hue, saturation, value = _rgb_to_hsv(frames.astype(jnp.int32))
  rgb = _hsv_to_rgb((hue + shift.astype(jnp.int32)) % 256, saturation, value)
  return rgb.astype(frames.dtype)


def to_grayscale(frames: jax.Array) -> jax.Array:
  """PIL's `convert("L")` replicated to 3 channels."""
  return jnp.repeat(_luma(frames)[..., None], 3, axis=-1).astype(frames.dtype)


def _rgb_to_hsv(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """PIL's 8-bit HSV of int32 `[..., 3]`: hue in 1/255 turns and saturation, both truncated."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  value = jnp.max(x, axis=-1)
  chroma = value - jnp.min(x, axis=-1)
  # The hue in units of chroma / 6 of a turn.
  sixths = jnp.where(r == value, g - b, jnp.where(g == value, 2 * chroma + b - r, 4 * chroma + r - g))
  sixths = jnp.where(sixths < 0, sixths + 6 * chroma, sixths)
  gray = chroma == 0
  hue = jnp.where(gray, 0, 255 * sixths // (6 * jnp.maximum(chroma, 1)))
  saturation = jnp.where(gray, 0, 255 * chroma // jnp.maximum(value, 1))
  return hue, saturation, value


# For each sixth of the hue circle, which of (v, p, q, t) are red, green and blue.
_SECTOR_RGB = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def _hsv_to_rgb(hue: jax.Array, saturation: jax.Array, value: jax.Array) -> jax.Array:
  """PIL's HSV -> RGB, `p, q, t = round(v * (1 - s * ...))` computed as exact fractions."""
  sector = 6 * hue // 255
  rest = 6 * hue - 255 * sector  # the fraction f of the sector, in 1/255
  v, s = value, saturation
  p = (2 * v * (255 - s) + 255) // 510
  q = (2 * v * (65025 - s * rest) + 65025) // 130050
  t = (2 * v * (65025 - s * (255 - rest)) + 65025) // 130050
  candidates = jnp.stack([v, p, q, t], axis=-1)
  return jnp.take_along_axis(candidates, jnp.asarray(_SECTOR_RGB)[sector % 6], axis=-1)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """torchvision `Resize(size)`: the short side becomes `size`, the long side is truncated.

  Returns:
    `(new_height, new_width)`.
  """
  if width <= height:
    return int(size * height / width), size
  return size, int(size * width / height)


class ResizeShortSide(grain.transforms.Map):
  """Resizes `[..., H, W, 3]` frames so the short side is `size` (PIL bicubic, as official)."""

  def __init__(self, size: int = 256):
    self.size = size

  def map(self, element: dict) -> dict:
    frames = element["frames"]
    height, width = frames.shape[-3:-1]
    new_h, new_w = resized_shape(height, width, self.size)
    if (new_h, new_w) == (height, width):
      return element
    flat = frames.reshape(-1, height, width, 3)
    resized = [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BICUBIC)) for f in flat]
    return {**element, "frames": np.stack(resized).reshape(*frames.shape[:-3], new_h, new_w, 3)}


def spatial_crop_boxes(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
  """Top-left `(y, x)` of `num_crops` (1 or 3) `size` crops: the centre crop (torchvision's
  rounding), or the start, centre and end of the long side.
  """
  centre = (int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))
  if num_crops == 1:
    return [centre]
  if num_crops != 3:
    raise ValueError(f"num_crops must be 1 or 3, got {num_crops}.")
  if width >= height:
    return [(centre[0], 0), centre, (centre[0], width - size)]
  return [(0, centre[1]), centre, (height - size, centre[1])]


class SpatialCrops(grain.transforms.Map):
  """`"frames"` `[C, T, H, W, 3]` -> `[C * num_crops, T, size, size, 3]` (clip-major views)."""

  def __init__(self, size: int = 224, num_crops: int = 1):
    self.size = size
    self.num_crops = num_crops

  def map(self, element: dict) -> dict:
    frames = element["frames"]
    height, width = frames.shape[-3:-1]
    if min(height, width) < self.size:
      raise ValueError(f"Cannot crop {self.size} pixels from frames of {height}x{width}; "
                       "resize the short side to at least the crop size first.")
    boxes = spatial_crop_boxes(height, width, self.size, self.num_crops)
    views = [clip[:, y:y + self.size, x:x + self.size] for clip in frames for y, x in boxes]
    return {**element, "frames": np.ascontiguousarray(np.stack(views))}
