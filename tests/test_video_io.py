"""Tests for ezclip_jax/video_io.py: frame folders and seeking video decoding, and their errors."""

import pathlib

import av
import numpy as np
import pytest
from PIL import Image

from data import synthetic
from ezclip_jax import video_io


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("media")
  synthetic.make_dataset(root, videos_per_class=1, num_frames=64, height=48, width=64,
                         classes=("rotating_clockwise",), videos=True)
  clip = np.random.default_rng(0).integers(0, 256, size=(20, 32, 48, 3), dtype=np.uint8)
  synthetic.write_video(root / "noise.webm", clip, codec="libvpx")
  synthetic.write_video(root / "noise.avi", clip, codec="mpeg4")
  return root


def _all_frames(path) -> np.ndarray:
  """Reference: every frame, decoded in order from the start."""
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_jpeg_frames_match_pil(media):
  folder = media / "frames" / "rotating_clockwise_0000"
  indices = [5, 0, 5, 63]
  frames = video_io.read_jpeg_frames(str(folder), indices)
  ref = np.stack([np.asarray(Image.open(folder / f"img_{i + 1:05d}.jpg").convert("RGB")) for i in indices])
  assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames, ref)  # both libjpeg-turbo with the same settings


def test_png_frames(tmp_path):
  clip = np.random.default_rng(0).integers(0, 256, size=(3, 8, 10, 3), dtype=np.uint8)
  for i, frame in enumerate(clip):
    Image.fromarray(frame).save(tmp_path / f"f{i}.png")
  np.testing.assert_array_equal(video_io.read_jpeg_frames(str(tmp_path), [2, 0, 2], "f{:d}.png", 0), clip[[2, 0, 2]])


def test_jpeg_template_and_index_bias(tmp_path):
  for i, value in enumerate((10, 20, 30)):
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / f"frame{i}.jpg")
  frames = video_io.read_jpeg_frames(str(tmp_path), [2, 0], template="frame{:d}.jpg", index_bias=0)
  np.testing.assert_allclose(frames[:, 0, 0, 0], [30, 10], atol=2)


@pytest.mark.parametrize("name", ["videos/rotating_clockwise/rotating_clockwise_0000.mp4", "noise.webm", "noise.avi"])
def test_video_frames_equal_sequential_decoding(media, name):
  path = media / name
  reference = _all_frames(path)
  assert video_io.probe_num_frames(str(path)) == len(reference)
  rng = np.random.default_rng(0)
  cases = [[0], [len(reference) - 1], [3, 3, 1], list(range(len(reference)))]
  cases += [sorted(rng.choice(len(reference), size=8)) for _ in range(5)]
  cases += [list(rng.permutation(len(reference))[:5])]
  for indices in cases:
    np.testing.assert_array_equal(video_io.read_video_frames(str(path), indices), reference[indices])


def test_video_seeks_instead_of_decoding_everything(media):
  path = str(media / "videos/rotating_clockwise/rotating_clockwise_0000.mp4")  # 64 frames, keyframe every 8
  log = []
  video_io.read_video_frames(path, [3, 60], decode_log=log)
  assert len(log) <= 2 * synthetic.GOP_SIZE, log
  assert 60 in log and not set(range(8, 56)) & set(log)
  log = []
  video_io.read_video_frames(path, [2, 30, 60], decode_log=log)
  assert len(log) <= 3 * synthetic.GOP_SIZE, log
  # Jumps shorter than a seek's cost decode forward instead.
  log = []
  video_io.read_video_frames(path, [1, 9, 17], decode_log=log)
  assert log == list(range(18))


def test_jpeg_errors(tmp_path):
  for i in range(1, 4):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"img_{i:05d}.jpg")
  with pytest.raises(video_io.DataError, match=r"Missing frame file .*img_00005\.jpg"):
    video_io.read_jpeg_frames(str(tmp_path), [0, 4])
  good = (tmp_path / "img_00002.jpg").read_bytes()
  (tmp_path / "img_00002.jpg").write_bytes(good[:len(good) // 2])
  with pytest.raises(video_io.DataError, match=r"Corrupt image .*img_00002\.jpg"):
    video_io.read_jpeg_frames(str(tmp_path), [1])
  (tmp_path / "img_00002.jpg").write_bytes(b"")
  with pytest.raises(video_io.DataError, match=r"Corrupt image .*img_00002\.jpg"):
    video_io.read_jpeg_frames(str(tmp_path), [1])
  noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(tmp_path / "img_00002.jpg")
  good = (tmp_path / "img_00002.jpg").read_bytes()
  # Zeros in the middle of the entropy-coded data: OpenCV returns an image with a warning.
  (tmp_path / "img_00002.jpg").write_bytes(good[:len(good) // 2] + bytes(200) + good[len(good) // 2 + 200:])
  with pytest.raises(video_io.DataError, match=r"Corrupt image .*img_00002\.jpg"):
    video_io.read_jpeg_frames(str(tmp_path), [1])
  Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "img_00003.jpg")
  with pytest.raises(video_io.DataError, match="differ in size"):
    video_io.read_jpeg_frames(str(tmp_path), [0, 2])


def test_video_errors(media, tmp_path):
  good = media / "videos/rotating_clockwise/rotating_clockwise_0000.mp4"
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  with pytest.raises(video_io.DataError, match=r"Unreadable video .*empty\.mp4: the file is empty"):
    video_io.read_video_frames(str(empty), [0])
  with pytest.raises(video_io.DataError, match=r"Unreadable video .*empty\.mp4"):
    video_io.probe_num_frames(str(empty))
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"not a video" * 100)
  with pytest.raises(video_io.DataError, match=r"Unreadable video .*junk\.mp4"):
    video_io.read_video_frames(str(junk), [0])
  cut = tmp_path / "cut.mp4"
  cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
  with pytest.raises(video_io.DataError, match=r"Unreadable video .*cut\.mp4"):
    video_io.read_video_frames(str(cut), [0])
  with pytest.raises(video_io.DataError, match=r"Missing video file .*nothere\.mp4"):
    video_io.read_video_frames(str(tmp_path / "nothere.mp4"), [0])
  with pytest.raises(video_io.DataError, match=r"has 64 frames \(container header\), fewer than the 80 listed"):
    video_io.read_video_frames(str(good), [0], expected_frames=80)
  with pytest.raises(video_io.DataError, match=r"noise\.webm has only 20 decodable frames; frame index 25"):
    video_io.read_video_frames(str(media / "noise.webm"), [2, 25])
