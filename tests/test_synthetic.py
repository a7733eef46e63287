"""Tests for data/synthetic.py: layout, order-only classes, real motion, videos, seeding."""

import pathlib

import av
import numpy as np
import pytest
from PIL import Image

from data import synthetic


def _frames(root: pathlib.Path, video_id: str, num_frames: int) -> np.ndarray:
  return np.stack([np.asarray(Image.open(root / "frames" / video_id / f"img_{i:05d}.jpg")) for i in
                   range(1, num_frames + 1)]).astype(np.int32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return synthetic.make_dataset(tmp_path_factory.mktemp("motion"), videos_per_class=2, num_frames=12, height=48,
                                width=64, seed=3, videos=True)


def test_layout_and_lists(dataset):
  root = dataset.root
  assert dataset.class_names == synthetic.CLASSES
  expected_labels = ["id,name"] + [f"{i},{c}" for i, c in enumerate(synthetic.CLASSES)]
  assert dataset.labels_csv.read_text().splitlines() == expected_labels
  frame_lines = dataset.frames_list.read_text().splitlines()
  video_lines = dataset.video_list.read_text().splitlines()
  assert len(frame_lines) == len(video_lines) == 2 * len(synthetic.CLASSES)
  assert frame_lines[3] == f"{root}/frames/moving_right_0001 12 1"
  assert video_lines[3] == f"{root}/videos/moving_right/moving_right_0001.mp4 1"
  folder = root / "frames" / "moving_right_0001"
  assert sorted(p.name for p in folder.iterdir()) == [f"img_{i:05d}.jpg" for i in range(1, 13)]
  with Image.open(folder / "img_00001.jpg") as image:
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 48))


def test_opposite_classes_hold_the_same_frames_in_reverse(dataset):
  for forward, backward in zip(synthetic.CLASSES[::2], synthetic.CLASSES[1::2]):
    for k in range(2):
      a = dataset.root / "frames" / f"{forward}_{k:04d}"
      b = dataset.root / "frames" / f"{backward}_{k:04d}"
      a_bytes = [(a / f"img_{i:05d}.jpg").read_bytes() for i in range(1, 13)]
      b_bytes = [(b / f"img_{i:05d}.jpg").read_bytes() for i in range(1, 13)]
      assert a_bytes == b_bytes[::-1], (forward, k)
      assert a_bytes[0] != a_bytes[-1], "a palindrome would make the pair indistinguishable"


def _object_mask(clip: np.ndarray) -> np.ndarray:
  """Pixels away from the static background (the per-pixel median over time)."""
  return np.abs(clip - np.median(clip, axis=0)).sum(-1) > 60


def test_motion_goes_the_way_the_class_says(dataset):
  def trajectory(video_id):
    mask = _object_mask(_frames(dataset.root, video_id, 12))
    ys, xs = np.mgrid[:48, :64]
    area = mask.sum((1, 2))
    return (xs * mask).sum((1, 2)) / area, (ys * mask).sum((1, 2)) / area, area

  x, _, _ = trajectory("moving_right_0000")
  assert x[-1] - x[0] > 15
  x, _, _ = trajectory("moving_left_0001")
  assert x[0] - x[-1] > 15
  _, y, _ = trajectory("moving_down_0000")
  assert y[-1] - y[0] > 10
  _, y, _ = trajectory("moving_up_0000")
  assert y[0] - y[-1] > 10
  # Growing: the object covers more and more of the first frame's background.
  clip = _frames(dataset.root, "growing_0000", 12)
  changed = (np.abs(clip - clip[0]).sum(-1) > 60).sum((1, 2))
  assert changed[-1] > 150 and changed[-1] > 3 * changed[3], changed
  clip = _frames(dataset.root, "shrinking_0001", 12)
  changed = (np.abs(clip - clip[-1]).sum(-1) > 60).sum((1, 2))
  assert changed[0] > 150 and changed[0] > 3 * changed[-4], changed


def _orientation(mask: np.ndarray) -> float:
  """Principal-axis angle in image coordinates (x right, y down), from second moments."""
  ys, xs = np.nonzero(mask)
  xs, ys = xs - xs.mean(), ys - ys.mean()
  return 0.5 * np.arctan2(2 * (xs * ys).mean(), (xs * xs).mean() - (ys * ys).mean())


def test_rotation_direction(dataset):
  # With y pointing down, a growing angle turns clockwise on screen.
  for video_id, sign in (("rotating_clockwise_0000", 1), ("rotating_anticlockwise_0000", -1)):
    clip = _frames(dataset.root, video_id, 12)
    angles = [_orientation(m) for m in _object_mask(clip)]
    steps = (np.diff(angles) + np.pi / 2) % np.pi - np.pi / 2  # axis angles are modulo pi
    assert sign * steps.sum() > 1.0, (video_id, steps)


def test_videos_hold_the_same_frames(dataset):
  path = dataset.root / "videos" / "growing" / "growing_0001.mp4"
  with av.open(str(path)) as container:
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int32)
    assert container.streams.video[0].codec_context.name in ("h264", "mpeg4")
  jpeg = _frames(dataset.root, "growing_0001", 12)
  assert decoded.shape == jpeg.shape == (12, 48, 64, 3)
  assert np.abs(decoded - jpeg).mean() < 4


def test_seeded(tmp_path):
  kwargs = dict(videos_per_class=1, num_frames=4, height=32, width=32, classes=("growing", "shrinking"))
  a = synthetic.make_dataset(tmp_path / "a", seed=1, **kwargs)
  b = synthetic.make_dataset(tmp_path / "b", seed=1, **kwargs)
  c = synthetic.make_dataset(tmp_path / "c", seed=2, **kwargs)
  image = "frames/growing_0000/img_00002.jpg"
  assert (a.root / image).read_bytes() == (b.root / image).read_bytes()
  assert (a.root / image).read_bytes() != (c.root / image).read_bytes()
  assert a.video_list is None
  assert a.labels_csv.read_text() == "id,name\n0,growing\n1,shrinking\n"


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="Unknown synthetic class 'jumping'"):
    synthetic.make_dataset(tmp_path, classes=["jumping"])
  with pytest.raises(ValueError, match="even frame sizes"):
    synthetic.make_dataset(tmp_path, height=33, videos=True)
