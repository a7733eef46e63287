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
keep a clip's appearance consistent, which motion-sensitive training relies on.) Train-time
resampling and colour maths run in OpenCV on the whole clip, because per-frame PIL calls cost
more than decoding the frames; evaluation resizing uses PIL so it matches the official output.
"""

from collections.abc import Sequence

import cv2
import grain
import numpy as np
from PIL import Image

MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)


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

  Bilinear when enlarging (PIL's bilinear equals plain bilinear there); pixel-area averaging
  when shrinking, close to PIL's antialiased bilinear.
  """
  x, y, w, h = box
  interpolation = cv2.INTER_LINEAR if w <= size and h <= size else cv2.INTER_AREA
  return np.stack([cv2.resize(f[y:y + h, x:x + w], (size, size), interpolation=interpolation) for f in frames])


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """Mirrors all frames of a clip with probability `p`."""

  def __init__(self, p: float = 0.5):
    self.p = p

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    if rng.random() >= self.p:
      return element
    frames = element["frames"]
    return {**element, "frames": cv2.flip(_as_tall_image(frames), 1).reshape(frames.shape)}


def _as_tall_image(frames: np.ndarray) -> np.ndarray:
  """`[..., H, W, 3]` -> one contiguous `[N*H, W, 3]` image, so OpenCV makes one call per clip."""
  return np.ascontiguousarray(frames).reshape(-1, *frames.shape[-2:])


def _gray(frames: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma `[..., H, W]` uint8 (PIL's `convert("L")` to within 1 level)."""
  return cv2.cvtColor(_as_tall_image(frames), cv2.COLOR_RGB2GRAY).reshape(frames.shape[:-1])


def _apply_lut(frames: np.ndarray, lut: np.ndarray) -> np.ndarray:
  return cv2.LUT(_as_tall_image(frames), lut).reshape(frames.shape)


def adjust_brightness(frames: np.ndarray, factor: float) -> np.ndarray:
  """PIL `ImageEnhance.Brightness`: blend with black, truncated to uint8."""
  return _apply_lut(frames, np.clip(np.arange(256) * factor, 0, 255).astype(np.uint8))


def adjust_contrast(frames: np.ndarray, factor: float) -> np.ndarray:
  """PIL `ImageEnhance.Contrast` per frame: blend with the frame's mean gray level."""
  flat = frames.reshape(-1, *frames.shape[-3:])
  means = np.floor(_gray(flat).mean(axis=(1, 2)) + 0.5)
  luts = np.clip(means[:, None] + factor * (np.arange(256) - means[:, None]), 0, 255).astype(np.uint8)
  return np.stack([cv2.LUT(frame, lut) for frame, lut in zip(flat, luts)]).reshape(frames.shape)


def adjust_saturation(frames: np.ndarray, factor: float) -> np.ndarray:
  """PIL `ImageEnhance.Color`: blend every pixel with its own gray level."""
  tall = _as_tall_image(frames)
  gray = cv2.cvtColor(cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
  return cv2.addWeighted(tall, factor, gray, 1.0 - factor, 0.0).reshape(frames.shape)


def adjust_hue(frames: np.ndarray, factor: float) -> np.ndarray:
  """torchvision's PIL `adjust_hue`: rotate the 8-bit HSV hue by `factor` of a turn."""
  hsv = cv2.cvtColor(_as_tall_image(frames), cv2.COLOR_RGB2HSV_FULL)
  hsv[..., 0] += np.uint8(int(factor * 255) % 256)
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).reshape(frames.shape)


def to_grayscale(frames: np.ndarray) -> np.ndarray:
  """Luma replicated to 3 channels, `[..., H, W, 3]`."""
  gray = cv2.cvtColor(_as_tall_image(frames), cv2.COLOR_RGB2GRAY)
  return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB).reshape(frames.shape)


class RandomColorJitter(grain.transforms.RandomMap):
  """With probability `p`, torchvision `ColorJitter`: factors drawn once per clip, the four
  adjustments applied in a random order."""

  def __init__(self, p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
               saturation: float = 0.2, hue: float = 0.1):
    self.p = p
    self.brightness = brightness
    self.contrast = contrast
    self.saturation = saturation
    self.hue = hue

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    if rng.random() >= self.p:
      return element
    order = rng.permutation(4)
    factors = (rng.uniform(1 - self.brightness, 1 + self.brightness),
               rng.uniform(1 - self.contrast, 1 + self.contrast),
               rng.uniform(1 - self.saturation, 1 + self.saturation),
               rng.uniform(-self.hue, self.hue))
    adjust = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    frames = element["frames"]
    for i in order:
      frames = adjust[i](frames, factors[i])
    return {**element, "frames": frames}


class RandomGrayscale(grain.transforms.RandomMap):
  """Turns the whole clip gray with probability `p`."""

  def __init__(self, p: float = 0.2):
    self.p = p

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    if rng.random() >= self.p:
      return element
    return {**element, "frames": to_grayscale(element["frames"])}


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
