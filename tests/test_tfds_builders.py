"""TFDS builders (data/tfds_builders.py) and their reader (ezclip_jax/tfds_source.py).

References are computed here: frames by decoding the mp4 with PyAV and the frame-folder
JPEGs with PIL; split membership from split files written in the tests.
"""

import json
import pickle
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data import extract_frames
from data import synthetic
from data import tfds_builders
from ezclip_jax import tfds_source
from ezclip_jax import video_io
from tests import references

NUM_FRAMES = 12
CLASSES = ("moving_left", "moving_right", "growing", "shrinking")


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
  return synthetic.make_dataset(tmp_path_factory.mktemp("motion"), videos_per_class=2, num_frames=NUM_FRAMES,
                                classes=CLASSES, frames=True, videos=True)


def _read_folder(directory, num_frames) -> np.ndarray:
  return np.stack([np.asarray(Image.open(directory / f"img_{i:05d}.jpg").convert("RGB"))
                   for i in range(1, num_frames + 1)]).astype(np.float32)


def _build(builder_cls, manual_dir, data_dir, **kwargs):
  builder = builder_cls(data_dir=data_dir, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _labels_by_id(builder, split) -> dict[str, int]:
  source = tfds_source.TfdsVideoSource(builder.data_dir, split)
  return {source[i]["video_id"]: source[i]["label"] for i in range(len(source))}


def _video_list_dir(tmp_path, motion, extra_lines=()):
  manual = tmp_path / "manual"
  manual.mkdir()
  shutil.copy(motion.labels_csv, manual / "labels.csv")
  (manual / "train.txt").write_text(motion.video_list.read_text() + "".join(extra_lines))
  return manual


def test_video_list_reads_back_the_frames(tmp_path, motion):
  manual = _video_list_dir(tmp_path, motion)
  builder = _build(tfds_builders.VideoList, manual, tmp_path / "tfds", config="default")
  source = tfds_source.TfdsVideoSource("ezclip_video_list/default", "train", tmp_path / "tfds")

  assert len(source) == len(CLASSES) * 2
  assert builder.info.features["label"].names == list(CLASSES)
  ids = set()
  for i in range(len(source)):
    record = source[i]
    video_id = record["video_id"]
    class_name = video_id.rsplit("_", 1)[0]
    ids.add(video_id)
    assert record["label"] == CLASSES.index(class_name)
    assert record["num_frames"] == NUM_FRAMES == len(record["frames_jpeg"])
    frames = source.read_frames(record, np.arange(NUM_FRAMES)).astype(np.float32)
    assert frames.shape == (NUM_FRAMES, 64, 64, 3)
    decoded = references.decode_video(motion.root / "videos" / class_name / f"{video_id}.mp4").astype(np.float32)
    assert np.abs(frames - decoded).mean() < 3  # only our JPEG re-encoding separates them
    folder = _read_folder(motion.root / "frames" / video_id, NUM_FRAMES)
    # The mp4 (yuv420) and the folder JPEGs are two lossy copies of one clip: each stored
    # frame must be closest to its own folder frame, and close overall.
    assert np.abs(frames - folder).mean() < 6
    distance = np.abs(frames[:, None] - folder[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(NUM_FRAMES))
  assert ids == {f"{name}_{k:04d}" for name in CLASSES for k in range(2)}
  raw = tfds.data_source("ezclip_video_list/default", split="train", data_dir=tmp_path / "tfds")[0]
  assert raw["fps"] == synthetic.FPS
  assert "tensorflow" not in sys.modules


def test_source_reads_selected_frames_and_is_stable(tmp_path, motion):
  manual = _video_list_dir(tmp_path, motion)
  builder = _build(tfds_builders.VideoList, manual, tmp_path / "tfds")
  source = tfds_source.TfdsVideoSource(builder.data_dir, "train")
  record = source[3]
  every = source.read_frames(record, np.arange(NUM_FRAMES))
  np.testing.assert_array_equal(source.read_frames(record, np.array([5, 0, 5, 11])), every[[5, 0, 5, 11]])
  assert repr(source) == f"TfdsVideoSource(name_or_builder_dir={str(builder.data_dir)!r}, split='train', data_dir=None)"
  copy = pickle.loads(pickle.dumps(source))
  assert repr(copy) == repr(source) and copy[3]["frames_jpeg"] == record["frames_jpeg"]
  assert [r["video_id"] for r in source.__getitems__([3, 1])] == [source[3]["video_id"], source[1]["video_id"]]
  with pytest.raises(video_io.DataError, match=f"{record['video_id']} has {NUM_FRAMES} frames; index 12"):
    source.read_frames(record, np.array([0, 12]))
  broken = dict(record, frames_jpeg=[b"not a jpeg"] * NUM_FRAMES)
  with pytest.raises(video_io.DataError, match=f"corrupt JPEG for frame 2 .*{record['video_id']}"):
    source.read_frames(broken, np.array([2]))


def test_resize_and_frame_rate(tmp_path, motion):
  manual = _video_list_dir(tmp_path, motion)
  config = tfds_builders.VideoConfig(name="small", short_side=32, fps=12.5)
  builder = _build(tfds_builders.VideoList, manual, tmp_path / "tfds", config=config)
  source = tfds_source.TfdsVideoSource(builder.data_dir, "train")
  record = source[0]
  class_name = record["video_id"].rsplit("_", 1)[0]
  # 25 fps thinned to 12.5 keeps every second frame: 0, 2, ..., 10.
  assert record["num_frames"] == NUM_FRAMES // 2
  frames = source.read_frames(record, np.arange(record["num_frames"])).astype(np.float32)
  decoded = references.decode_video(motion.root / "videos" / class_name / f"{record['video_id']}.mp4")
  halved = np.stack([np.asarray(Image.fromarray(f).resize((32, 32), Image.BILINEAR)) for f in decoded])
  halved = halved.astype(np.float32)
  assert frames.shape == (NUM_FRAMES // 2, 32, 32, 3)
  assert np.abs(frames - halved[::2]).mean() < 3
  distance = np.abs(frames[:, None] - halved[None]).mean(axis=(2, 3, 4))
  np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(0, NUM_FRAMES, 2))


def test_bad_video_is_an_error_or_skipped_and_counted(tmp_path, motion, caplog):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  manual = _video_list_dir(tmp_path, motion, [f"{bad} 1\n", f"{empty} 2\n"])
  with pytest.raises(extract_frames.VideoDecodeError, match=re.escape(str(bad))):
    _build(tfds_builders.VideoList, manual, tmp_path / "strict")

  builder = _build(tfds_builders.VideoList, manual, tmp_path / "lenient", skip_bad=True, num_workers=2)
  assert builder.info.splits["train"].num_examples == len(CLASSES) * 2
  skipped = tfds.builder_from_directory(builder.data_dir).info.metadata["skipped_videos"]["train"]
  assert [s.split(":")[0] for s in skipped] == [str(bad), str(empty)]
  assert any("skipped 2 of 10 videos" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("line", ["videos/x.mp4 one\n", "videos/x.mp4 4\n", "videos/x.mp4\n"])
def test_list_errors_name_the_line(tmp_path, motion, line):
  manual = _video_list_dir(tmp_path, motion, [line])
  with pytest.raises(ValueError, match=re.escape(f"{manual / 'train.txt'}:{len(CLASSES) * 2 + 1}: expected 'path "
                                                 "label' with 0 <= label < 4")):
    _build(tfds_builders.VideoList, manual, tmp_path / "tfds")


def _copy_video(motion, dst):
  dst.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy(motion.root / "videos" / "growing" / "growing_0000.mp4", dst)


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


def test_ucf101_splits(tmp_path, motion):
  manual = tmp_path / "ucf"
  videos = {"ApplyEyeMakeup": ["v_ApplyEyeMakeup_g01_c01", "v_ApplyEyeMakeup_g08_c01"],
            "Archery": ["v_Archery_g01_c01", "v_Archery_g08_c02"],
            "YoYo": ["v_YoYo_g01_c01", "v_YoYo_g08_c01"]}
  for class_name, names in videos.items():
    for name in names:
      _copy_video(motion, manual / "UCF-101" / class_name / f"{name}.avi")
  lists = manual / "ucfTrainTestlist"
  # Official format: CRLF lines, 1-based labels in train lists, none in test lists.
  _write(lists / "classInd.txt", "1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")
  _write(lists / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
         "Archery/v_Archery_g08_c02.avi 2\r\nYoYo/v_YoYo_g08_c01.avi 3\r\n")
  _write(lists / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n"
         "YoYo/v_YoYo_g01_c01.avi\r\n")
  _write(lists / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\nYoYo/v_YoYo_g01_c01.avi 3\r\n")
  _write(lists / "testlist02.txt", "Archery/v_Archery_g08_c02.avi\r\n")

  split1 = _build(tfds_builders.Ucf101, manual, tmp_path / "tfds", config="split1")
  assert split1.info.features["label"].names == ["ApplyEyeMakeup", "Archery", "YoYo"]
  assert _labels_by_id(split1, "train") == {"v_ApplyEyeMakeup_g08_c01": 0, "v_Archery_g08_c02": 1,
                                            "v_YoYo_g08_c01": 2}
  assert _labels_by_id(split1, "test") == {"v_ApplyEyeMakeup_g01_c01": 0, "v_Archery_g01_c01": 1,
                                           "v_YoYo_g01_c01": 2}
  split2 = _build(tfds_builders.Ucf101, manual, tmp_path / "tfds", config="split2")
  assert _labels_by_id(split2, "train") == {"v_ApplyEyeMakeup_g01_c01": 0, "v_YoYo_g01_c01": 2}
  assert _labels_by_id(split2, "test") == {"v_Archery_g08_c02": 1}

  _write(lists / "trainlist03.txt", "Archery/v_Archery_g08_c02.avi 3\r\n")
  _write(lists / "testlist03.txt", "Archery/v_Archery_g01_c01.avi\r\n")
  with pytest.raises(ValueError, match=re.escape(f"{lists / 'trainlist03.txt'}:1: label 3 disagrees")):
    _build(tfds_builders.Ucf101, manual, tmp_path / "tfds", config="split3")


def test_hmdb51_splits(tmp_path, motion):
  manual = tmp_path / "hmdb"
  splits = {"brush_hair": {"a_brush_hair_0.avi": 1, "b_brush_hair_1.avi": 2, "c_brush_hair_2.avi": 0},
            "climb_stairs": {"d_climb_stairs_0.avi": 2, "e_climb_stairs_1.avi": 1}}
  for class_name, videos in splits.items():
    for name in videos:
      _copy_video(motion, manual / "hmdb51_org" / class_name / name)
    # Official files end lines with a space.
    _write(manual / "testTrainMulti_7030_splits" / f"{class_name}_test_split1.txt",
           "".join(f"{name} {flag} \n" for name, flag in videos.items()))
  builder = _build(tfds_builders.Hmdb51, manual, tmp_path / "tfds", config="split1")
  assert builder.info.features["label"].names == ["brush_hair", "climb_stairs"]
  assert _labels_by_id(builder, "train") == {"a_brush_hair_0": 0, "e_climb_stairs_1": 1}
  assert _labels_by_id(builder, "test") == {"b_brush_hair_1": 0, "d_climb_stairs_0": 1}

  bad = manual / "testTrainMulti_7030_splits" / "brush_hair_test_split2.txt"
  _write(bad, "a_brush_hair_0.avi 1\na_brush_hair_1.avi 3\n")
  with pytest.raises(ValueError, match=re.escape(f"{bad}:2: expected '<video>.avi <0|1|2>'")):
    _build(tfds_builders.Hmdb51, manual, tmp_path / "tfds", config="split2")


def test_kinetics_splits(tmp_path, motion):
  manual = tmp_path / "k400"
  header = "label,youtube_id,time_start,time_end,split\n"
  _write(manual / "annotations" / "train.csv", header + "abseiling,aaa,5,15,train\n\"air drumming\",bbb,0,10,train\n")
  _write(manual / "annotations" / "val.csv", header + "air drumming,ccc,31,41,val\n")
  for name in ("train/aaa_000005_000015", "train/bbb_000000_000010", "val/ccc_000031_000041"):
    _copy_video(motion, manual / f"{name}.mp4")
  builder = _build(tfds_builders.Kinetics400, manual, tmp_path / "tfds")
  assert builder.info.features["label"].names == ["abseiling", "air drumming"]
  assert set(builder.info.splits) == {"train", "validation"}
  assert _labels_by_id(builder, "train") == {"aaa_000005_000015": 0, "bbb_000000_000010": 1}
  assert _labels_by_id(builder, "validation") == {"ccc_000031_000041": 1}


def test_something_something_v2_splits(tmp_path, motion):
  manual = tmp_path / "ssv2"
  _write(manual / "labels.json", json.dumps({"Pushing something from left to right": "1",
                                             "Holding something next to something": "0"}))
  _write(manual / "train.json", json.dumps([
      {"id": "11", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right",
       "placeholders": ["a cup"]},
      {"id": "12", "label": "holding a pen next to a cup", "template": "Holding [something] next to [something]",
       "placeholders": ["a pen", "a cup"]}]))
  _write(manual / "validation.json", json.dumps([
      {"id": "13", "label": "x", "template": "Holding [something] next to [something]", "placeholders": []}]))
  for video_id in ("11", "12", "13"):
    _copy_video(motion, manual / "20bn-something-something-v2" / f"{video_id}.webm")
  builder = _build(tfds_builders.SomethingSomethingV2, manual, tmp_path / "tfds")
  assert builder.info.features["label"].names == ["Holding something next to something",
                                                  "Pushing something from left to right"]
  assert _labels_by_id(builder, "train") == {"11": 1, "12": 0}
  assert _labels_by_id(builder, "validation") == {"13": 0}


def _last_line(capsys) -> str:
  return capsys.readouterr().out.splitlines()[-1]


def test_command_line_says_whether_it_built_reused_or_rebuilt(tmp_path, motion, capsys):
  manual = _video_list_dir(tmp_path, motion)
  args = ["ezclip_video_list/default", "--manual_dir", str(manual), "--data_dir", str(tmp_path / "tfds")]
  assert tfds_builders.main(args) == 0
  data_dir = tmp_path / "tfds" / "ezclip_video_list" / "default" / "1.0.0"
  assert _last_line(capsys) == f"Built ezclip_video_list/default/1.0.0 in {data_dir}: train 8"
  built = {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
  (manual / "train.txt").write_text("".join(motion.video_list.read_text().splitlines(keepends=True)[:3]))
  assert tfds_builders.main(args) == 0
  assert _last_line(capsys) == (f"Reused the existing build of ezclip_video_list/default/1.0.0 in {data_dir} "
                                f"(train 8); {manual} was not read. Pass --rebuild to build it again from there.")
  assert {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()} == built
  assert tfds_builders.main(args + ["--rebuild"]) == 0
  assert _last_line(capsys) == f"Rebuilt ezclip_video_list/default/1.0.0 in {data_dir}: train 3"
  assert len(tfds_source.TfdsVideoSource("ezclip_video_list/default", "train", tmp_path / "tfds")) == 3
