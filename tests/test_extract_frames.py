"""data/extract_frames.py: frame folders + official list from synthetic videos.

References: the mp4s decoded with PyAV and the synthetic frame-folder JPEGs decoded with
PIL, here in the test.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import extract_frames
from data import synthetic
from tests import references

NUM_FRAMES = 12
CLASSES = ("moving_up", "moving_down", "rotating_clockwise")


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
  return synthetic.make_dataset(tmp_path_factory.mktemp("motion"), videos_per_class=2, num_frames=NUM_FRAMES,
                                classes=CLASSES, frames=True, videos=True)


def _read_folder(directory) -> np.ndarray:
  files = sorted(os.listdir(directory))
  assert files == [f"img_{i:05d}.jpg" for i in range(1, len(files) + 1)]
  return np.stack([np.asarray(Image.open(directory / name).convert("RGB")) for name in files]).astype(np.float32)


def _parse_list(path) -> list[tuple[str, int, int]]:
  return [(p, int(n), int(label)) for p, n, label in (line.split() for line in path.read_text().splitlines())]


def test_cli_extracts_class_folders(tmp_path, motion):
  out, listing = tmp_path / "frames", tmp_path / "lists" / "train.txt"
  result = subprocess.run([sys.executable, "-m", "data.extract_frames", str(motion.root / "videos"), str(out),
                           "--list", str(listing), "--workers", "2"], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr

  sorted_classes = sorted(CLASSES)
  assert (tmp_path / "lists" / "labels.csv").read_text() == "id,name\n" + "".join(
      f"{i},{name}\n" for i, name in enumerate(sorted_classes))
  expected = [(str(out / f"{name}_{k:04d}"), NUM_FRAMES, i) for i, name in enumerate(sorted_classes) for k in range(2)]
  assert _parse_list(listing) == expected
  for path, _, label in expected:
    video_id = os.path.basename(path)
    frames = _read_folder(out / video_id)
    video = motion.root / "videos" / sorted_classes[label] / f"{video_id}.mp4"
    decoded = references.decode_video(video).astype(np.float32)
    assert frames.shape == decoded.shape == (NUM_FRAMES, 64, 64, 3)
    assert np.abs(frames - decoded).mean() < 3
    originals = _read_folder(motion.root / "frames" / video_id)
    assert np.abs(frames - originals).mean() < 6
    distance = np.abs(frames[:, None] - originals[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(NUM_FRAMES))


def test_existing_labels_csv_fixes_the_ids(tmp_path, motion):
  listing = tmp_path / "train.txt"
  code = extract_frames.main([str(motion.root / "videos"), str(tmp_path / "frames"), "--list", str(listing),
                              "--labels", str(motion.labels_csv), "--workers", "1"])
  assert code == 0
  assert {(os.path.basename(p), label) for p, _, label in _parse_list(listing)} == {
      (f"{name}_{k:04d}", i) for i, name in enumerate(CLASSES) for k in range(2)}


def test_video_list_input_with_keep_extension(tmp_path, motion):
  listing = tmp_path / "train.txt"
  code = extract_frames.main([str(tmp_path), str(tmp_path / "frames"), "--list", str(listing),
                              "--videos", str(motion.video_list), "--labels", str(motion.labels_csv),
                              "--keep-extension", "--workers", "1"])
  assert code == 0
  expected = [line.split() for line in motion.video_list.read_text().splitlines()]
  assert _parse_list(listing) == [(str(tmp_path / "frames" / os.path.basename(p)), NUM_FRAMES, int(label))
                                  for p, label in expected]


def test_fps_and_short_side(tmp_path, motion):
  listing = tmp_path / "train.txt"
  code = extract_frames.main([str(motion.root / "videos"), str(tmp_path / "frames"), "--list", str(listing),
                              "--short-side", "32", "--fps", "12.5", "--workers", "1"])
  assert code == 0
  assert {n for _, n, _ in _parse_list(listing)} == {NUM_FRAMES // 2}
  frames = _read_folder(tmp_path / "frames" / "moving_up_0001")
  decoded = references.decode_video(motion.root / "videos" / "moving_up" / "moving_up_0001.mp4")
  halved = np.stack([np.asarray(Image.fromarray(f).resize((32, 32), Image.BILINEAR)) for f in decoded])
  halved = halved.astype(np.float32)
  assert frames.shape == (NUM_FRAMES // 2, 32, 32, 3)
  assert np.abs(frames - halved[::2]).mean() < 3
  distance = np.abs(frames[:, None] - halved[None]).mean(axis=(2, 3, 4))
  np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(0, NUM_FRAMES, 2))


def test_corrupt_video_is_reported_by_name(tmp_path, motion, capsys):
  videos = tmp_path / "videos"
  shutil.copytree(motion.root / "videos", videos)
  bad = videos / "moving_down" / "broken.mp4"
  bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
  listing = tmp_path / "train.txt"
  args = [str(videos), str(tmp_path / "frames"), "--list", str(listing), "--workers", "1"]

  assert extract_frames.main(args) == 1
  err = capsys.readouterr().err
  assert re.search(f"FAILED {re.escape(str(bad))}: ", err) and "1 of 7 videos failed" in err
  assert not listing.exists()

  assert extract_frames.main(args + ["--skip-bad"]) == 0
  captured = capsys.readouterr()
  assert f"FAILED {bad}" in captured.err and "skipped 1 that failed" in captured.out
  names = [os.path.basename(p) for p, _, _ in _parse_list(listing)]
  assert len(names) == 6 and "broken" not in names


def test_bad_list_line_names_the_line(tmp_path, motion, capsys):
  bad = tmp_path / "videos.txt"
  bad.write_text(motion.video_list.read_text() + "videos/x.mp4 7\n")
  assert extract_frames.main([str(tmp_path), str(tmp_path / "frames"), "--list", str(tmp_path / "l.txt"),
                              "--videos", str(bad), "--labels", str(motion.labels_csv)]) == 2
  assert capsys.readouterr().err == (f"error: {bad}:{len(CLASSES) * 2 + 1}: expected 'path label' with 0 <= label "
                                     f"< 3 (the classes of {motion.labels_csv}), got 'videos/x.mp4 7'\n")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["videos.txt"]


def _snapshot(root) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_into_the_input_folder_changes_no_existing_file(tmp_path, motion, capsys):
  videos = tmp_path / "V"
  shutil.copytree(motion.root / "videos", videos)
  (videos / "moving_up" / "notes.txt").write_text("my notes")
  # Its frame folder would be V/moving_up: the class folder holding it and another video.
  shutil.copy(videos / "moving_down" / "moving_down_0000.mp4", videos / "moving_down" / "moving_up.mp4")
  before = _snapshot(videos)
  args = [str(videos), str(videos), "--list", str(videos / "list.txt"), "--workers", "1"]
  assert extract_frames.main(args) == 2
  err = capsys.readouterr().err
  assert err.endswith(f"error: {videos / 'moving_up'} (holding moving_up_0000.mp4, moving_up_0001.mp4, notes.txt, "
                      "...) already exist and were not written by data.extract_frames; nothing was changed: choose "
                      "another OUT_ROOT or --list, or move them away\n"), err
  assert _snapshot(videos) == before
  (videos / "moving_down" / "moving_up.mp4").unlink()
  del before["moving_down/moving_up.mp4"]
  for _ in range(2):  # a rerun replaces only what the first run wrote
    assert extract_frames.main(args) == 0
    after = _snapshot(videos)
    assert {k: after[k] for k in before} == before
    assert len(_parse_list(videos / "list.txt")) == 6
  (videos / "moving_up_0000" / "mine.txt").write_text("added later")
  assert extract_frames.main(args) == 2
  assert "moving_up_0000 (holding img_00001.jpg" in capsys.readouterr().err
  assert (videos / "moving_up_0000" / "mine.txt").read_text() == "added later"
