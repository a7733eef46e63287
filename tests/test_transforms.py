"""Tests for ezclip_jax/transforms.py against hand-derived official values and PIL references."""

import collections
import itertools

import jax
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ezclip_jax import transforms


class _EdgeRng:
  """Stands in for np.random.Generator: every `integers(low, high)` draw returns its lowest
  (`low`) or highest (`high - 1`) value, so the official formulas can be worked out by hand."""

  def __init__(self, highest: bool):
    self.highest = highest

  def integers(self, low, high=None, size=None):
    if high is None:
      low, high = 0, low
    value = np.asarray(high) - 1 if self.highest else np.broadcast_to(low, np.shape(high))
    return np.broadcast_to(value, size) if size is not None else value


# Official `_sample_indices` / `_get_val_indices` (index_bias 1, seg_length 1) minus 1, derived
# by hand. Train, n > T: ticks = i*n//T; lowest draw = tick, highest = next tick - 1. Train,
# n <= T: every frame once plus T - n draws, sorted. Eval: int(i*n/T + (n/T - 1)/2); n <= T:
# i*n//T; T == 1: n//2.
TRAIN_TABLE = [
    # (num_frames, T, lowest draws, highest draws)
    (100, 8, [0, 12, 25, 37, 50, 62, 75, 87], [11, 24, 36, 49, 61, 74, 86, 99]),
    (300, 8, [0, 37, 75, 112, 150, 187, 225, 262], [36, 74, 111, 149, 186, 224, 261, 299]),
    (9, 8, [0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 8]),
    (8, 8, [0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]),
    (5, 8, [0, 0, 0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 4, 4, 4]),
    (1, 4, [0, 0, 0, 0], [0, 0, 0, 0]),
    (20, 1, [0], [19]),
]
EVAL_TABLE = [
    # (num_frames, T, num_clips, expected [clips][T])
    (100, 8, 1, [[5, 18, 30, 43, 55, 68, 80, 93]]),
    (300, 8, 1, [[18, 55, 93, 130, 168, 205, 243, 280]]),
    (10, 4, 1, [[0, 3, 5, 8]]),
    (9, 8, 1, [[0, 1, 2, 3, 4, 5, 6, 7]]),
    (8, 8, 1, [[0, 1, 2, 3, 4, 5, 6, 7]]),
    (5, 8, 1, [[0, 0, 1, 1, 2, 3, 3, 4]]),
    (10, 1, 1, [[5]]),
    (11, 1, 1, [[5]]),
    # Two temporal views: centres of the halves of each segment.
    (100, 8, 2, [[2, 15, 27, 40, 52, 65, 77, 90], [8, 21, 33, 46, 58, 71, 83, 96]]),
    (5, 8, 2, [[0, 0, 1, 1, 2, 3, 3, 4], [0, 0, 1, 1, 2, 3, 3, 4]]),
]


@pytest.mark.parametrize("num_frames,num_segments,lowest,highest", TRAIN_TABLE)
def test_train_indices_table(num_frames, num_segments, lowest, highest):
  np.testing.assert_array_equal(transforms.train_frame_indices(num_frames, num_segments, _EdgeRng(False)), lowest)
  np.testing.assert_array_equal(transforms.train_frame_indices(num_frames, num_segments, _EdgeRng(True)), highest)


@pytest.mark.parametrize("num_frames,num_segments,num_clips,expected", EVAL_TABLE)
def test_eval_indices_table(num_frames, num_segments, num_clips, expected):
  np.testing.assert_array_equal(transforms.eval_frame_indices(num_frames, num_segments, num_clips), expected)


def test_train_indices_cover_each_segment():
  rng = np.random.default_rng(0)
  ticks = [0, 12, 25, 37, 50, 62, 75, 87, 100]
  draws = np.stack([transforms.train_frame_indices(100, 8, rng) for _ in range(2000)])
  for i in range(8):
    assert set(draws[:, i]) == set(range(ticks[i], ticks[i + 1])), i
  short = np.stack([transforms.train_frame_indices(3, 6, rng) for _ in range(500)])
  assert all(sorted(set(row)) == [0, 1, 2] and list(row) == sorted(row) for row in short)
  assert len({tuple(row) for row in short}) == 10  # multisets of 3 extra draws from 3 frames


def test_sampling_rejects_empty_videos():
  with pytest.raises(ValueError, match="num_frames=0"):
    transforms.eval_frame_indices(0, 8)


# Official GroupMultiScaleCrop on 320x240 to 224: crop sides int(240 * s) = 240, 210, 180, 158
# (none within 3 of 224), paired at most one scale apart.
CROP_SIZES_320x240 = [(240, 240), (210, 240), (240, 210), (210, 210), (180, 210), (210, 180), (180, 180),
                      (158, 180), (180, 158), (158, 158)]
# Positions of the 210x180 crop: w_step = (320 - 210) // 4 = 27, h_step = (240 - 180) // 4 = 15.
OFFSETS_210x180 = [(0, 0), (108, 0), (0, 60), (108, 60), (54, 30), (0, 30), (108, 30), (54, 60), (54, 0),
                   (27, 15), (81, 15), (27, 45), (81, 45)]


def test_multi_scale_crop_candidates():
  assert sorted(transforms.multi_scale_crop_sizes(320, 240, 224)) == sorted(CROP_SIZES_320x240)
  assert transforms.multi_scale_crop_offsets(320, 240, 210, 180) == OFFSETS_210x180
  assert transforms.multi_scale_crop_offsets(320, 240, 210, 180, more_fix_crop=False) == OFFSETS_210x180[:5]
  # A side within 3 pixels of the output size snaps to it: 256 * .875 = 224.
  assert (224, 224) in transforms.multi_scale_crop_sizes(300, 256, 224)
  rng = np.random.default_rng(0)
  boxes = {transforms.sample_multi_scale_box(320, 240, rng) for _ in range(5000)}
  assert {(w, h) for _, _, w, h in boxes} == set(CROP_SIZES_320x240)
  assert {(x, y) for x, y, w, h in boxes if (w, h) == (210, 180)} == set(OFFSETS_210x180)


def _textured_clip(num_frames=3, height=60, width=80, seed=0):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, size=(num_frames, height // 4, width // 4, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in small])


def _pil_crop_resize(clip, box, size):
  x, y, w, h = box
  return np.stack([np.asarray(Image.fromarray(f).crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR))
                   for f in clip]).astype(int)


def test_crop_resize_matches_pil():
  clip = _textured_clip()
  out = transforms.crop_resize(clip, (10, 5, 40, 30), 64)
  assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
  assert np.abs(out - _pil_crop_resize(clip, (10, 5, 40, 30), 64)).max() <= 2  # enlarging: plain bilinear
  big = _textured_clip(height=120, width=160)
  # Shrinking vs PIL's antialiased filter: bilinear up to 2x, pixel-area beyond (bilinear
  # would give 8.4 there, bicubic 2 and 4.2 in the first two cases, nearest 12+).
  for box, size, mean in (((8, 4, 100, 90), 84, 1.5), ((10, 0, 150, 120), 80, 3.0), ((0, 0, 120, 120), 40, 5.0)):
    diff = np.abs(transforms.crop_resize(big, box, size) - _pil_crop_resize(big, box, size))
    assert diff.mean() < mean, (box, diff.mean())


_apply_color = jax.jit(transforms.apply_color)


def _train_chain(element, seed, per_frame=True):
  rng = np.random.default_rng(seed)
  for transform in (transforms.RandomMultiScaleCrop(32), transforms.RandomHorizontalFlip(),
                    transforms.RandomColorJitter(per_frame=per_frame), transforms.RandomGrayscale()):
    element = transform.random_map(element, rng)
  assert element["color"].shape == (len(element["frames"]), transforms.COLOR_SIZE)
  return np.asarray(_apply_color(element["frames"][None], element["color"][None]))[0]


def test_one_clip_shares_one_crop_and_flip_and_per_clip_jitter():
  clip = _textured_clip(num_frames=4)
  outputs = []
  for seed in range(12):
    out = _train_chain({"frames": clip}, seed, per_frame=False)
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.uint8
    # Each frame alone, with the same random draws, gets exactly what it got inside the clip:
    # with per-clip jitter nothing was drawn per frame.
    for t in range(4):
      np.testing.assert_array_equal(_train_chain({"frames": clip[t:t + 1]}, seed, per_frame=False)[0], out[t])
    same = _train_chain({"frames": np.repeat(clip[:1], 4, axis=0)}, seed, per_frame=False)
    assert all(np.array_equal(same[0], f) for f in same)
    outputs.append(out)
  assert len({o.tobytes() for o in outputs}) == 12


def test_per_frame_jitter_adjusts_each_frame_of_a_clip_its_own_way():
  still = np.repeat(_textured_clip(num_frames=1), 4, axis=0)  # four identical frames
  differing = 0
  for seed in range(12):
    out = _train_chain({"frames": still}, seed)
    rng = np.random.default_rng(seed)  # the same draws: was this clip jittered and not grayed?
    for transform in (transforms.RandomMultiScaleCrop(32), transforms.RandomHorizontalFlip()):
      transform.random_map({"frames": still}, rng)
    jittered = rng.random() < 0.8
    differing += jittered and len({f.tobytes() for f in out}) == 4
    if not jittered:
      assert all(np.array_equal(out[0], f) for f in out)
  assert differing >= 6


def _draw_colors(clips=3000, frames=8, per_frame=True, seed=0):
  rng = np.random.default_rng(seed)
  jitter, gray = transforms.RandomColorJitter(per_frame=per_frame), transforms.RandomGrayscale()
  element = {"frames": np.zeros((frames, 1, 1, 3), np.uint8)}
  return np.stack([gray.random_map(jitter.random_map(element, rng), rng)["color"] for _ in range(clips)])


def _ks_uniform(values, low, high):
  """Kolmogorov-Smirnov distance between the values' ECDF and U(low, high)."""
  x = np.sort(values)
  cdf = (x - low) / (high - low)
  n = len(x)
  return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


def _check_torchvision_color_jitter_statistics(colors):
  clips, frames, _ = colors.shape
  assert colors.dtype == np.float32 and colors.shape[2] == 10
  # One p=0.8 jitter draw and one p=0.2 grayscale draw per clip, shared by its frames.
  for column, p in ((0, 0.8), (9, 0.2)):
    assert (colors[:, :, column] == colors[:, :1, column]).all(), f"column {column} varies within a clip"
    assert abs(colors[:, 0, column].mean() - p) < 4 * np.sqrt(p * (1 - p) / clips)
  jittered = colors[:, 0, 0] == 1
  np.testing.assert_array_equal(colors[~jittered][:, :, :9], np.broadcast_to(
      [0, 1, 1, 1, 0, 0, 1, 2, 3], (sum(~jittered), frames, 9)))
  drawn = colors[jittered]  # [clips, T, 10]
  flat = drawn.reshape(-1, 10)
  n = len(flat)
  for column, (low, high) in ((1, (0.6, 1.4)), (2, (0.6, 1.4)), (3, (0.8, 1.2))):
    values = flat[:, column]
    assert low <= values.min() < low + 0.005 and high - 0.005 < values.max() <= high, column
    assert _ks_uniform(values, low, high) < 1.95 / np.sqrt(n), column  # KS test at 0.1%
    # Independent across the frames of a clip: neighbours uncorrelated.
    corr = np.corrcoef(drawn[:, :-1, column].ravel(), drawn[:, 1:, column].ravel())[0, 1]
    assert abs(corr) < 4 / np.sqrt(n), (column, corr)
  # torchvision: int(uniform(-.1, .1) * 255) % 256 of uniform(-25.5, 25.5): rotations of
  # -25..25 steps. Truncation towards zero gives 0 the width (-1, 1), +-25 only half a step.
  shifts = flat[:, 4].astype(int)
  assert set(shifts) == set(range(26)) | set(range(231, 256))
  widths = np.zeros(256)
  widths[np.r_[1:25, 232:256]], widths[[25, 231]], widths[0] = 1, 0.5, 2
  expected = n * widths / 51
  counts = np.bincount(shifts, minlength=256)
  assert (np.abs(counts - expected) < 5 * np.sqrt(expected) + 1).all()
  # The order: one of the 24 permutations, uniformly, drawn anew for every frame.
  orders = [tuple(row) for row in flat[:, 5:9].astype(int)]
  assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
  counts = np.array(list(collections.Counter(orders).values()))
  assert len(counts) == 24 and np.abs(counts - n / 24).max() < 5 * np.sqrt(n / 24)
  same_as_next = (drawn[:, :-1, 5:9] == drawn[:, 1:, 5:9]).all(axis=-1).mean()
  assert abs(same_as_next - 1 / 24) < 0.01


def test_per_frame_colour_parameters_follow_torchvision_color_jitter():
  _check_torchvision_color_jitter_statistics(_draw_colors())


@pytest.mark.parametrize("broken", ["per_clip", "fixed_order", "wrong_range", "per_frame_grayscale"])
def test_the_colour_statistics_check_catches_a_wrong_jitter(broken):
  colors = _draw_colors(clips=1500)
  rng = np.random.default_rng(1)
  jittered = colors[:, 0, 0] == 1
  if broken == "per_clip":
    colors = _draw_colors(clips=1500, per_frame=False)
  elif broken == "fixed_order":
    colors[jittered, :, 5:9] = [3, 0, 1, 2]
  elif broken == "wrong_range":
    colors[jittered, :, 3] = rng.uniform(0.6, 1.4, colors[jittered, :, 3].shape)
  else:
    colors[:, :, 9] = rng.random(colors.shape[:2]) < 0.2
  with pytest.raises(AssertionError):
    _check_torchvision_color_jitter_statistics(colors)


def _pil_frames(clip, op):
  return np.stack([np.asarray(op(Image.fromarray(f))) for f in clip]).astype(int)


@pytest.mark.parametrize("factor", [0.61, 0.93, 1.37])
def test_colour_adjustments_equal_pil(factor):
  clip = _textured_clip()
  for adjust, enhance in ((transforms.adjust_brightness, ImageEnhance.Brightness),
                          (transforms.adjust_contrast, ImageEnhance.Contrast),
                          (transforms.adjust_saturation, ImageEnhance.Color)):
    out = np.asarray(jax.jit(adjust)(clip, np.float32(factor)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _pil_frames(clip, lambda im: enhance(im).enhance(factor)), adjust.__name__)
  gray = np.asarray(transforms.to_grayscale(clip))
  np.testing.assert_array_equal(gray, _pil_frames(clip, lambda im: im.convert("L").convert("RGB")))


def _colour_cube(step=97, width=512):
  """Every `step`-th colour of the RGB cube, as one `[1, H, width, 3]` clip."""
  codes = np.arange(0, 1 << 24, step)
  codes = codes[:len(codes) // width * width]
  return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8).reshape(1, -1, width, 3)


def _pil_hue(image, shift):
  """torchvision's `adjust_hue` for PIL images, with its shift `int(hue_factor * 255)`."""
  h, s, v = image.convert("HSV").split()
  shifted = (np.asarray(h).astype(int) + shift) % 256
  return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def _assert_close_to_pil_hue(out, ref, fraction=0.005):
  # PIL computes the hue in floats; on the ~0.3% of colours whose exact hue is a whole step
  # it lands one step lower, which moves a channel by up to 7 levels. All else is equal.
  diff = np.abs(out.astype(int) - ref).max(axis=-1)
  assert (diff > 0).mean() < fraction and diff.max() <= 7, ((diff > 0).mean(), diff.max())


@pytest.mark.parametrize("shift", [0, 13, 231])
def test_hue_rotation_matches_pil(shift):
  cube = _colour_cube()
  out = np.asarray(jax.jit(transforms.adjust_hue)(cube, np.float32(shift)))
  _assert_close_to_pil_hue(out, _pil_frames(cube, lambda im: _pil_hue(im, shift)))
  if shift:
    assert np.abs(out.astype(int) - cube).mean() > 3  # it did rotate


def test_hue_rotation_by_hand():
  # Pure red (hue 0) turned by 85/256: PIL's sector 6 * 85 // 255 = 2 at its start -> pure green.
  # Gray has no hue and stays. (200, 100, 100): hue 0, s = 255 * 100 // 200 = 127, v = 200;
  # turned by 43: sector 1, f = (258 - 255) / 255, so p = round(200 * 128 / 255) = 100,
  # q = round(200 * (1 - 127 * 3 / 255^2)) = 199 -> (q, v, p) = (199, 200, 100).
  pixels = np.array([[[255, 0, 0], [90, 90, 90], [200, 100, 100]]], np.uint8)
  np.testing.assert_array_equal(transforms.adjust_hue(pixels, np.float32(85))[0, :2], [[0, 255, 0], [90, 90, 90]])
  np.testing.assert_array_equal(transforms.adjust_hue(pixels, np.float32(43))[0, 2], [199, 200, 100])


def _color(order=(), brightness=1.0, contrast=1.0, saturation=1.0, hue_shift=0, grayscale=0):
  """A `color` vector by its documented layout; a non-empty `order` turns the jitter on."""
  return np.array([1 if order else 0, brightness, contrast, saturation, hue_shift, *(order or (0, 1, 2, 3)),
                   grayscale], np.float32)


def _pil_color(clip, color):
  """torchvision's ColorJitter (adjustments in the given order) and RandomGrayscale, frame by
  frame with each frame's own `color` row (`color` `[T, 10]`, or one row for every frame)."""
  frames = []
  for frame, row in zip(clip, np.broadcast_to(color, (len(clip), 10))):
    adjust = (lambda im: ImageEnhance.Brightness(im).enhance(float(row[1])),
              lambda im: ImageEnhance.Contrast(im).enhance(float(row[2])),
              lambda im: ImageEnhance.Color(im).enhance(float(row[3])),
              lambda im: _pil_hue(im, int(row[4])))
    image = Image.fromarray(frame)
    for op in row[5:9].astype(int) if row[0] else ():
      image = adjust[op](image)
    if row[9]:
      image = image.convert("L").convert("RGB")
    frames.append(np.asarray(image))
  return np.stack(frames).astype(int)


COLORS = [_color((0, 1, 2, 3), 1.3, 0.7, 1.15, 250), _color((3, 2, 1, 0), 1.3, 0.7, 1.15, 250),
          _color((1, 3, 0, 2), 0.65, 1.35, 0.85, 9), _color((2, 0, 3, 1), 0.9, 1.2, 1.1, 0, grayscale=1)]


def _per_clip(colors, frames):
  return np.repeat(np.stack(colors)[:, None], frames, axis=1)


def test_apply_color_matches_pil_per_clip():
  clips = np.stack([_textured_clip(num_frames=2, height=48, width=64, seed=seed) for seed in range(6)])
  colors = _per_clip(COLORS + [_color(), _color(grayscale=1)], 2)
  out = np.asarray(_apply_color(clips, colors))
  assert out.shape == clips.shape and out.dtype == np.uint8
  for clip, color, result in zip(clips, colors, out):
    _assert_close_to_pil_hue(result, _pil_color(clip, color), fraction=0.01)  # later steps may spread a hue step
  np.testing.assert_array_equal(out[4], clips[4])
  np.testing.assert_array_equal(out[5], _pil_color(clips[5], colors[5]))
  # The first two parameter sets differ only in the order, which the comparison notices.
  reordered = np.asarray(_apply_color(clips[:1], colors[1:2]))[0]
  with pytest.raises(AssertionError):
    _assert_close_to_pil_hue(reordered, _pil_color(clips[0], colors[0]), fraction=0.01)


def test_apply_color_matches_pil_with_each_frame_its_own_parameters():
  rng = np.random.default_rng(3)
  clips = np.stack([_textured_clip(num_frames=4, height=40, width=56, seed=seed) for seed in range(3)])
  jitter = transforms.RandomColorJitter(p=1.0)
  colors = np.stack([jitter.random_map({"frames": clip}, rng)["color"] for clip in clips])
  assert len({row.tobytes() for row in colors.reshape(-1, 10)}) == 12
  out = np.asarray(_apply_color(clips, colors))
  for clip, color, result in zip(clips, colors, out):
    _assert_close_to_pil_hue(result, _pil_color(clip, color), fraction=0.01)
  # Frame 0's parameters on every frame: not what PIL gives with each frame's own.
  shared = np.asarray(_apply_color(clips[:1], np.repeat(colors[:1, :1], 4, axis=1)))[0]
  with pytest.raises(AssertionError):
    _assert_close_to_pil_hue(shared, _pil_color(clips[0], colors[0]), fraction=0.01)


def test_apply_color_matches_pil_in_every_order():
  orders = list(itertools.permutations(range(4)))
  clips = _textured_clip(num_frames=len(orders), height=48, width=64)[None]  # one frame per order
  colors = np.stack([_color(order, 1.25, 0.75, 1.3, 40) for order in orders])[None]
  out = np.asarray(_apply_color(clips, colors))[0]
  for t, order in enumerate(orders):
    try:
      _assert_close_to_pil_hue(out[t:t + 1], _pil_color(clips[0, t:t + 1], colors[0, t]), fraction=0.01)
    except AssertionError as e:
      raise AssertionError(f"order {order}") from e


def test_contrast_is_exact_at_full_resolution():
  # 336x336 frames: the contrast mean sums more gray levels than float32 holds exactly
  # (255 * 336^2 > 2^24).
  for size in (224, 336):
    clip = _textured_clip(num_frames=2, height=size, width=size, seed=size)
    for factor in (0.61, 1.37):
      out = np.asarray(jax.jit(transforms.adjust_contrast)(clip, np.float32(factor)))
      np.testing.assert_array_equal(out, _pil_frames(clip, lambda im: ImageEnhance.Contrast(im).enhance(factor)))


def test_eval_transform_equals_pil_reference():
  rng = np.random.default_rng(1)
  clip = rng.integers(0, 256, size=(2, 3, 240, 320, 3), dtype=np.uint8)  # [clips, T, H, W, 3]
  element = {"frames": clip}
  resized = transforms.ResizeShortSide(256).map(element)
  assert resized["frames"].shape == (2, 3, 256, 341, 3)  # int(256 * 320 / 240) = 341
  single = transforms.SpatialCrops(224, 1).map(resized)["frames"]
  triple = transforms.SpatialCrops(224, 3).map(resized)["frames"]
  assert single.shape == (2, 3, 224, 224, 3) and triple.shape == (6, 3, 224, 224, 3)
  # Official: GroupScale(256) (PIL bicubic) then GroupCenterCrop(224): top round(32 / 2) = 16,
  # left round(117 / 2) = 58 (round half to even). Three crops: left 0, 58, 117.
  for c in range(2):
    for t in range(3):
      big = Image.fromarray(clip[c, t]).resize((341, 256), Image.BICUBIC)
      np.testing.assert_array_equal(single[c, t], np.asarray(big.crop((58, 16, 282, 240))))
      for k, left in enumerate((0, 58, 117)):
        np.testing.assert_array_equal(triple[3 * c + k, t], np.asarray(big.crop((left, 16, left + 224, 240))))


def test_eval_transform_portrait_and_no_op():
  assert transforms.resized_shape(320, 240, 256) == (341, 256)
  assert transforms.spatial_crop_boxes(341, 256, 224, 3) == [(0, 16), (58, 16), (117, 16)]
  frames = np.zeros((1, 2, 256, 300, 3), np.uint8)
  assert transforms.ResizeShortSide(256).map({"frames": frames})["frames"] is frames
  with pytest.raises(ValueError, match="Cannot crop 224 pixels from frames of 100x120"):
    transforms.SpatialCrops(224).map({"frames": np.zeros((1, 1, 100, 120, 3), np.uint8)})
