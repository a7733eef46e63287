"""Frame sampling and clip augmentation with the official EZ-CLIP parameters.

Sampling follows TSN as in the official `datasets/datasets.py` (`_sample_indices`,
`_get_val_indices`) but returns 0-based frame positions; readers add the file index bias.
Augmentations follow the official `utils/Augmentation.py`: training uses a multi-scale crop
(scales 1, .875, .75, .66) to 224, a horizontal flip (off for Something-Something), colour
jitter (p=.8; brightness .4, contrast .4, saturation .2, hue .1) and grayscale (p=.2);
evaluation resizes the short side to 256 (bicubic) and centre-crops 224.

Each transform is a grain `Map`/`RandomMap` over an element dict whose `"frames"` entry is
uint8 `[..., H, W, 3]`. A clip shares one crop and one flip. Colour jitter is drawn as the
official code draws it: one p=.8 draw per clip, then torchvision's `ColorJitter` factors and
order anew for every frame (`RandomColorJitter(per_frame=False)` draws them once per clip);
grayscale once per clip. Cropping, resizing and flipping run on the host in OpenCV, on the
whole clip and into fresh numpy arrays. Colour jitter and grayscale are only drawn on the host
(into the element's `color`) and applied on the accelerator by `apply_color`, which
reproduces PIL's arithmetic: on the host they cost more than decoding the frames. Evaluation
resizing uses PIL so it matches the official output.
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
# Drawn on the host, applied on the accelerator by `apply_color` (from the train step). An
# element's `color` is float32 `[T, COLOR_SIZE]`, one row per frame:
COLOR_JITTER = 0  # 1: apply the jitter (drawn once per clip)
COLOR_BRIGHTNESS, COLOR_CONTRAST, COLOR_SATURATION = 1, 2, 3  # PIL ImageEnhance factors
COLOR_HUE_SHIFT = 4  # hue rotation in 1/256 turns, `int(hue_factor * 255) % 256` (torchvision)
COLOR_ORDER = slice(5, 9)  # the order of the four adjustments, 0-3 as in the lines above
COLOR_GRAYSCALE = 9  # 1: turn the frame gray, after the jitter (drawn once per clip)
COLOR_SIZE = 10
NO_COLOR_CHANGE = np.array([0, 1, 1, 1, 0, 0, 1, 2, 3, 0], np.float32)


def _color(element: dict) -> np.ndarray:
  """The element's `color` `[T, COLOR_SIZE]` (a copy), identity rows if it has none yet."""
  if "color" in element:
    return np.array(element["color"], np.float32)
  return np.tile(NO_COLOR_CHANGE, (len(element["frames"]), 1))


class RandomColorJitter(grain.transforms.RandomMap):
  """The official `GroupRandomColorJitter`: with probability `p` per clip, torchvision
  `ColorJitter` on every frame. Writes the parameters into the element's `color`.

  Attributes:
    per_frame: as the official code, which calls `ColorJitter` once per frame: each frame
      gets its own factors and its own random order of the four adjustments. False draws one
      set per clip (every frame adjusted alike).
  """

  def __init__(self, p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
               saturation: float = 0.2, hue: float = 0.1, per_frame: bool = True):
    self.p = p
    self.brightness = brightness
    self.contrast = contrast
    self.saturation = saturation
    self.hue = hue
    self.per_frame = per_frame

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    color = _color(element)
    if rng.random() < self.p:
      draws = len(color) if self.per_frame else 1
      color[:, COLOR_JITTER] = 1
      color[:, COLOR_ORDER] = rng.permuted(np.tile(np.arange(4), (draws, 1)), axis=1)
      color[:, COLOR_BRIGHTNESS] = rng.uniform(1 - self.brightness, 1 + self.brightness, draws)
      color[:, COLOR_CONTRAST] = rng.uniform(1 - self.contrast, 1 + self.contrast, draws)
      color[:, COLOR_SATURATION] = rng.uniform(1 - self.saturation, 1 + self.saturation, draws)
      color[:, COLOR_HUE_SHIFT] = (rng.uniform(-self.hue, self.hue, draws) * 255).astype(int) % 256
    return {**element, "color": color}


class RandomGrayscale(grain.transforms.RandomMap):
  """Marks the whole clip for turning gray with probability `p`, in the element's `color`."""

  def __init__(self, p: float = 0.2):
    self.p = p

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    color = _color(element)
    color[:, COLOR_GRAYSCALE] = rng.random() < self.p
    return {**element, "color": color}


# On the device, a frame is three planes of whole numbers 0-255 in float32 `[N, H*W]`: a
# minor axis of 3 channels would be padded to 128 lanes on TPUs, and float32 holds every
# integer these formulas reach (below 2^24) exactly, which integer division (emulated on
# TPUs, slow to compile) and gathers (per-pixel `take_along_axis`: 430 GB of memory traffic
# for 16 frames of 224x224 on a v5e) would not do cheaply.
Planes = tuple[jax.Array, jax.Array, jax.Array]


def apply_color(video: jax.Array, color: jax.Array) -> jax.Array:
  """Applies each frame's `color` parameters as torchvision does to PIL images.

  Every frame gets PIL's `ImageEnhance` brightness, contrast (blend with the frame's mean
  gray level) and colour (saturation), and torchvision's 8-bit HSV hue rotation, in the
  frame's order, each rounded to uint8 as PIL does; then, if marked, PIL's `convert("L")`
  gray. PIL's integer formulas are evaluated exactly, so every backend gives the same
  pixels; PIL's own float evaluation lands one hue step lower on the 0.3% of colours whose
  hue is a whole step.

  Args:
    video: uint8 `[B, T, H, W, 3]`.
    color: float32 `[B, T, COLOR_SIZE]` (see `RandomColorJitter`, `RandomGrayscale`).

  Returns:
    uint8 `[B, T, H, W, 3]`.
  """
  planes = _to_planes(video)
  params = color.reshape(-1, COLOR_SIZE)[:, :, None]  # [N, COLOR_SIZE, 1]: broadcasts over pixels
  order = params[:, COLOR_ORDER, 0].astype(jnp.int32)
  # The order is data, so the costly hue rotation runs once, at each frame's own position,
  # with the blends before and after it chosen per position.
  hue_at = jnp.argmax(order == _HUE, axis=1)[:, None]
  jittered = planes
  factors = params[:, COLOR_BRIGHTNESS:COLOR_SATURATION + 1, 0]

  def enhance_at(planes, position):
    op = order[:, position, None]
    return _enhance(planes, op, jnp.take_along_axis(factors, jnp.minimum(op, 2), axis=1))

  for position in range(3):
    jittered = _where(position < hue_at, enhance_at(jittered, position), jittered)
  jittered = _adjust_hue(jittered, params[:, COLOR_HUE_SHIFT])
  for position in range(1, 4):
    jittered = _where(position > hue_at, enhance_at(jittered, position), jittered)
  planes = _where(params[:, COLOR_JITTER] > 0, jittered, planes)
  planes = _where(params[:, COLOR_GRAYSCALE] > 0, (_luma(planes),) * 3, planes)
  return _from_planes(planes, video.shape)


_HUE = 3  # The hue rotation's number in `COLOR_ORDER`; 0-2 are the three blends.


def _to_planes(frames: jax.Array) -> Planes:
  """uint8 `[..., H, W, 3]` -> three float32 `[N, H*W]` planes."""
  flat = frames.reshape(-1, frames.shape[-3] * frames.shape[-2], 3).astype(jnp.float32)
  return flat[..., 0], flat[..., 1], flat[..., 2]


def _from_planes(planes: Planes, shape: tuple[int, ...]) -> jax.Array:
  return jnp.stack(planes, axis=-1).astype(jnp.uint8).reshape(shape)


def _where(condition: jax.Array, if_true: Planes, if_false: Planes) -> Planes:
  return tuple(jnp.where(condition, a, b) for a, b in zip(if_true, if_false))


def _luma(planes: Planes) -> jax.Array:
  """PIL's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point (exact: every term < 2^24)."""
  r, g, b = planes
  return jnp.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _enhance(planes: Planes, op, factor: jax.Array) -> Planes:
  """Brightness, contrast or saturation (`op` 0, 1, 2, or `[N, 1]` of them): PIL's blend with
  black, the frame's mean gray (`int(mean + .5)`) or each pixel's gray, by `factor` `[N, 1]`."""
  luma = _luma(planes)
  pixels = luma.shape[-1]
  total = luma.astype(jnp.int32).sum(axis=-1, keepdims=True)
  mean = _round_div(total, pixels).astype(jnp.float32)
  degenerate = jnp.where(op == 0, 0.0, jnp.where(op == 1, mean, luma))
  return tuple(_blend(degenerate, x, factor) for x in planes)


def _floor_div(numerator: jax.Array, divisor) -> jax.Array:
  """Exact `numerator // divisor` of non-negative whole numbers: int32, or float32 below 2^24.

  A float estimate (off by at most one: the division or the int32 -> float32 rounding may
  miss by an ulp), corrected by its remainder.
  """
  quotient = jnp.floor(numerator.astype(jnp.float32) / divisor).astype(numerator.dtype)
  remainder = numerator - quotient * divisor
  return quotient - (remainder < 0) + (remainder >= divisor)


def _round_div(numerator: jax.Array, divisor) -> jax.Array:
  """`round(numerator / divisor)`, halves up, exactly (as `_floor_div`)."""
  quotient = _floor_div(numerator, divisor)
  return quotient + (2 * (numerator - quotient * divisor) >= divisor)


def _blend(degenerate: jax.Array, x: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL's `Image.blend(degenerate, x, factor)`: `d + factor * (x - d)` in float32, clipped and
  truncated."""
  delta = x - degenerate
  # PIL rounds the product before adding; XLA fuses multiply-adds, which moves results that
  # are whole numbers to just below them. Halves of 12 significant bits multiply exactly, so
  # their sum is the rounded product under either evaluation.
  bits = jax.lax.bitcast_convert_type(jnp.asarray(factor, jnp.float32), jnp.uint32)
  high = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
  product = high * delta + (factor - high) * delta
  return jnp.clip(jnp.floor(degenerate + product), 0, 255)


def _adjust_hue(planes: Planes, shift: jax.Array) -> Planes:
  """torchvision's PIL `adjust_hue`: rotate PIL's 8-bit HSV hue by `shift` `[N, 1]` / 256 of a turn."""
  hue, saturation, value = _rgb_to_hsv(planes)
  hue = hue + shift
  return _hsv_to_rgb(jnp.where(hue >= 256, hue - 256, hue), saturation, value)


def _rgb_to_hsv(planes: Planes) -> Planes:
  """PIL's 8-bit HSV: hue in 1/255 turns and saturation, both truncated."""
  r, g, b = planes
  value = jnp.maximum(jnp.maximum(r, g), b)
  chroma = value - jnp.minimum(jnp.minimum(r, g), b)
  # The hue in units of chroma / 6 of a turn.
  sixths = jnp.where(r == value, g - b, jnp.where(g == value, 2 * chroma + b - r, 4 * chroma + r - g))
  sixths = jnp.where(sixths < 0, sixths + 6 * chroma, sixths)
  gray = chroma == 0
  hue = jnp.where(gray, 0.0, _floor_div(255 * sixths, 6 * jnp.maximum(chroma, 1)))
  saturation = jnp.where(gray, 0.0, _floor_div(255 * chroma, jnp.maximum(value, 1)))
  return hue, saturation, value


def _hsv_to_rgb(hue: jax.Array, saturation: jax.Array, value: jax.Array) -> Planes:
  """PIL's HSV -> RGB: `p, q, t = round(v * (1 - s * ...))`, computed as exact fractions."""
  sector = _floor_div(6 * hue, 255)
  rest = 6 * hue - 255 * sector  # the fraction f of the sector, in 1/255
  sector = jnp.where(sector == 6, 0, sector)
  v, s = value, saturation
  p = _round_div(v * (255 - s), 255)
  q = _round_div(v * (65025 - s * rest), 65025)
  t = _round_div(v * (65025 - s * (255 - rest)), 65025)

  def pick(*by_sector):  # the channel's value in each of the six sectors
    out = by_sector[5]
    for k in range(5):
      out = jnp.where(sector == k, by_sector[k], out)
    return out

  return pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)


def _on_frames(planar_fn):
  """A planes -> planes function as uint8 `[..., H, W, 3]` -> uint8 `[..., H, W, 3]`."""

  def apply(frames: jax.Array, *args) -> jax.Array:
    n = int(np.prod(frames.shape[:-3]))
    args = [jnp.broadcast_to(jnp.asarray(a, jnp.float32).reshape(-1, 1), (n, 1)) for a in args]
    return _from_planes(planar_fn(_to_planes(frames), *args), frames.shape)

  return apply


def adjust_brightness(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Brightness` of uint8 `[..., H, W, 3]`: blend with black."""
  return _on_frames(lambda planes, f: _enhance(planes, 0, f))(frames, factor)


def adjust_contrast(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Contrast`: blend each image with its mean gray level, rounded."""
  return _on_frames(lambda planes, f: _enhance(planes, 1, f))(frames, factor)


def adjust_saturation(frames: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `ImageEnhance.Color`: blend every pixel with its own gray level."""
  return _on_frames(lambda planes, f: _enhance(planes, 2, f))(frames, factor)


def adjust_hue(frames: jax.Array, shift: jax.Array) -> jax.Array:
  """torchvision's PIL `adjust_hue` of uint8 `[..., H, W, 3]` by `shift` / 256 of a turn."""
  return _on_frames(_adjust_hue)(frames, shift)


def to_grayscale(frames: jax.Array) -> jax.Array:
  """PIL's `convert("L")` replicated to 3 channels."""
  return _on_frames(lambda planes: (_luma(planes),) * 3)(frames)


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
