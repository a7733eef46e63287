"""Tests for ezclip_jax/input_pipeline.py: sources, loaders, sharding, resume, bad input."""

import json
import logging
import os
import shutil

import grain
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from data import synthetic
from ezclip_jax import input_pipeline
from ezclip_jax import text_prompts
from ezclip_jax import video_io

NUM_VIDEOS = 24  # 8 classes x 3
SMALL = dict(num_frames=4, crop_size=32)
NO_SHARDING = grain.sharding.NoSharding()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return synthetic.make_dataset(tmp_path_factory.mktemp("motion"), videos_per_class=3, num_frames=16, height=48,
                                width=64, videos=True)


@pytest.fixture(scope="module")
def frames_source(dataset):
  return input_pipeline.ListSource(dataset.frames_list, dataset.labels_csv)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ------------------------------------------------------------------ official list files

# Lines copied from the official split files (dataset_splits/..., UCF_101_txt/...): each kind
# of path prefix, frame folders and video names, and a last line without a newline.
OFFICIAL_LINES = {
    "UCF/Zero_shot/test.txt": "/cluster/datastore/shahzaa/data_for_action_clip/UCF/v_SoccerPenalty_g04_c03 70 84\n"
                              "/cluster/datastore/shahzaa/data_for_action_clip/UCF/v_JumpingJack_g06_c05 70 46\n",
    "UCF/Few_shot/my_ucf_few_shot_2.txt": "/media/sdb_access/Data_for_Action_CLIP/UCF_101/"
                                          "v_BasketballDunk_g17_c07 75 8\n",
    "UCF/Zero_shot/test_DS.txt": "/media/sdb_access/Data_for_Action_CLIP/UCF_101-DS/"
                                 "Haircut_unusual_-NSS6NsVZr0-2-of-2 120 33\n"
                                 "/media/sdb_access/Data_for_Action_CLIP/UCF_101-DS/"
                                 "Hula_Hoop_dark+unusual_xz7bYa0Hio0-16-of-22 300 42",
    "UCF_101_txt/train.txt": "/media/shahzaa/b945bf86-6e1a-4a4a-8420-ee7e35f529d1/Data_for_Action_CLIP/UCF_101/"
                             "v_JavelinThrow_g12_c04 61 44\n",
    "HMDB/Zero_shot/train.txt": "/cluster/datastore/shahzaa/data_for_action_clip/hmdb/"
                                "50_FIRST_DATES_dive_f_cm_np1_ri_bad_32.avi 44 7\n",
    "HMDB/base_to_novel/hmdb_base_val.txt": "/media/sdb_access/Data_for_Action_CLIP/HMDB51/"
                                            "Catch_Me_If_You_Can_run_u_cm_np1_fr_med_9.avi 83 7\n",
    "HMDB/Few_shot/my_hmdb_few_shot_16.txt": "/media/sdb_access/Data_for_Action_CLIP/HMDB51/"
                                             "#20_Rhythm_clap_u_nm_np1_fr_goo_2.avi 78 4\n",
    "K-400/Zero_shot/val.txt": "/media/datastore/shahzad/Data_for_Action_CLIP/Kinetics_400/"
                               "OCQSpPkCAWw_000005_000015 300 176\n",
    "K-400/base_to_novel/FS_base_train_s1.txt": "/media/datastore/shahzad/Data_for_Action_CLIP/Kinetics_400/"
                                                "c1O_FxuKCI0_000110_000120 159 0\n",
    "K-600/Zero_shot/test_600_exclusive.txt": "/cluster/datastore/shahzaa/data_for_action_clip/K_600_exclusive/"
                                              "SnWaq5utkfE_000003_000013.mp4 250 130\n",
    "SSv2/base_to_novel/SS_novel_val.txt": "/cluster/datastore/shahzaa/data_for_action_clip/Something_something_final/"
                                           "137291.webm 58 48\n",
    "SSv2/Few_shot/ss_few_shot_2.txt": "/cluster/datastore/shahzaa/data_for_action_clip/Something_something_final/"
                                       "110669.webm 37 164\n",
}
# Class lists as the official files store them: CRLF line ends.
OFFICIAL_CLASS_LISTS = {
    "hmdb_base_train_class_list.csv": "id,name\r\n0,pour\r\n1,pullup\r\n2,kick ball\r\n",
    "SS_novel_val_class_list.csv": "id,name\r\n0,Poking a hole into some substance\r\n"
                                   "1,Spilling something behind something\r\n",
    "kinetics_400_labels.csv": "id,name\n0,abseiling\n1,air drumming\n2,answering questions\n",
}


def test_official_split_files_load_as_is(tmp_path):
  labels = tmp_path / "labels.csv"
  labels.write_text("id,name\n" + "".join(f"{i},class {i}\n" for i in range(400)))
  for name, text in OFFICIAL_LINES.items():
    list_file = tmp_path / name.replace("/", "_")
    list_file.write_text(text)
    source = input_pipeline.ListSource(list_file, labels, root="/data/videos", media="auto")
    expected = [line.split() for line in text.strip().split("\n")]
    assert len(source) == len(expected), name
    for i, (path, num_frames, label) in enumerate(expected):
      record = source[i]
      assert record["path"] == "/data/videos/" + path.rsplit("/", 1)[1]
      assert (record["num_frames"], record["label"]) == (int(num_frames), int(label))
      assert record["origin"] == f"{list_file}:{i + 1}"
  assert "0x" not in repr(source) and repr(source) == repr(
      input_pipeline.ListSource(list_file, labels, root="/data/videos", media="auto"))


def test_official_class_lists_load_as_is(tmp_path):
  names = {}
  for name, text in OFFICIAL_CLASS_LISTS.items():
    (tmp_path / name).write_bytes(text.encode())
    names[name] = text_prompts.read_class_names(tmp_path / name)
  assert names["hmdb_base_train_class_list.csv"] == ("pour", "pullup", "kick ball")
  assert names["SS_novel_val_class_list.csv"][1] == "Spilling something behind something"
  assert names["kinetics_400_labels.csv"] == ("abseiling", "air drumming", "answering questions")


# ------------------------------------------------------------------------------ loaders


def test_eval_batch_equals_pil_reference(dataset, frames_source):
  ds = input_pipeline.eval_dataset(frames_source, batch_size=4, num_frames=4, resize_size=32, crop_size=28,
                                   shard_options=NO_SHARDING)
  batch = next(iter(ds))
  assert batch["video"].shape == (4, 1, 4, 28, 28, 3) and batch["video"].dtype == np.uint8
  np.testing.assert_array_equal(batch["label"], [0, 0, 0, 1])
  # Official eval indices for 16 frames, T = 4: int(4i + 1.5) = 1, 5, 9, 13 -> files 2, 6, 10, 14.
  # Resize 64x48 -> 42x32 (bicubic), centre crop 28: top round(2) = 2, left round(7) = 7.
  folder = dataset.root / "frames" / "moving_right_0000"
  for t, number in enumerate((2, 6, 10, 14)):
    image = Image.open(folder / f"img_{number:05d}.jpg").convert("RGB").resize((42, 32), Image.BICUBIC)
    ref = np.asarray(image.crop((7, 2, 35, 30))).astype(int)
    assert np.abs(batch["video"][3, 0, t].astype(int) - ref).max() <= 2


def test_video_files_give_the_frames_of_the_folders(dataset, frames_source):
  videos = input_pipeline.ListSource(dataset.video_list, dataset.labels_csv, media="video")  # "path label"
  assert videos[5]["num_frames"] == 16
  kwargs = dict(batch_size=8, num_frames=4, num_clips=2, resize_size=48, crop_size=48, shard_options=NO_SHARDING)
  from_frames = next(iter(input_pipeline.eval_dataset(frames_source, **kwargs)))
  from_videos = next(iter(input_pipeline.eval_dataset(videos, **kwargs)))
  np.testing.assert_array_equal(from_frames["label"], from_videos["label"])
  frames, videos = from_frames["video"].astype(int), from_videos["video"].astype(int)
  matched = np.abs(frames - videos).mean()
  assert matched < 4.5  # JPEG vs H.264 (4:2:0 chroma)
  # The two clips sample frames 0, 4, 8, 12 and 2, 6, 10, 14: frames two apart differ more.
  assert matched < 0.8 * np.abs(frames - videos[:, ::-1]).mean()


def test_video_folder_source(dataset, tmp_path):
  source = input_pipeline.VideoFolderSource(dataset.root / "videos", dataset.labels_csv)
  assert len(source) == NUM_VIDEOS
  # Folders in name order: growing (label 4), moving_down (3), ..., shrinking (5); 3 videos each.
  assert [source[i]["label"] for i in (0, 3, 23)] == [4, 3, 5]
  assert source[3]["video_id"] == "moving_down_0000.mp4"
  batch = next(iter(input_pipeline.train_dataset(source, global_batch_size=4, shard_options=NO_SHARDING, **SMALL)))
  assert batch["video"].shape == (4, 4, 32, 32, 3)
  spaced = tmp_path / "spaced.csv"
  spaced.write_text("id,name\n0,moving left\n")
  os.makedirs(tmp_path / "v" / "moving_left")
  shutil.copy(dataset.root / "videos/moving_left/moving_left_0000.mp4", tmp_path / "v/moving_left/a.mp4")
  assert input_pipeline.VideoFolderSource(tmp_path / "v", spaced)[0]["label"] == 0
  os.makedirs(tmp_path / "v" / "juggling")
  with pytest.raises(video_io.DataError, match=r"Class folder .*juggling is not a class of .*spaced\.csv"):
    input_pipeline.VideoFolderSource(tmp_path / "v", spaced)
  assert len(input_pipeline.VideoFolderSource(tmp_path / "v", spaced, skip_bad=True)) == 1


def test_train_epochs_and_texts(frames_source):
  tokens = text_prompts.build_prompts(synthetic.CLASSES).tokens
  ds = input_pipeline.train_dataset(frames_source, global_batch_size=5, num_epochs=2, seed=3, text_tokens=tokens,
                                    shard_options=NO_SHARDING, **SMALL)
  batches = list(ds)
  assert len(batches) == 2 * NUM_VIDEOS // 5  # the last partial batch is dropped
  batch = batches[0]
  assert batch["video"].shape == (5, 4, 32, 32, 3) and batch["video"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["text"].shape == (5, 77)
  assert batch["color"].shape == (5, 4, 10) and batch["color"].dtype == np.float32  # per frame, applied on device
  for label, text in zip(batch["label"], batch["text"]):
    assert any(np.array_equal(text, tokens[k, label]) for k in range(16))
  index = np.concatenate([b["index"] for b in batches])
  assert sorted(index[:NUM_VIDEOS]) == list(range(NUM_VIDEOS))  # epoch 1: every video once
  assert list(index[:NUM_VIDEOS]) != list(range(NUM_VIDEOS))  # shuffled
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, index // 3)
  assert len({tuple(b["text"][0]) for b in batches}) > 1


def test_workers_give_identical_batches_and_resume(frames_source):
  kwargs = dict(global_batch_size=4, seed=1, shard_options=NO_SHARDING, **SMALL)
  expected = _take(iter(input_pipeline.train_dataset(frames_source, **kwargs)), 9)
  iterator = iter(input_pipeline.train_dataset(frames_source, num_workers=2, **kwargs))
  try:
    first = _take(iterator, 4)
    state = json.loads(json.dumps(iterator.get_state()))
    rest = _take(iterator, 5)
  finally:
    iterator.close()
  _assert_batches_equal(first + rest, expected)
  resumed = iter(input_pipeline.train_dataset(frames_source, num_workers=2, **kwargs))
  try:
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 5), rest)
  finally:
    resumed.close()


def test_resume_mid_epoch_without_workers(frames_source):
  kwargs = dict(global_batch_size=4, seed=7, shard_options=NO_SHARDING, **SMALL)
  iterator = iter(input_pipeline.train_dataset(frames_source, **kwargs))
  _take(iterator, 3)
  state = iterator.get_state()
  rest = _take(iterator, 6)  # crosses into the second epoch (6 batches per epoch)
  resumed = iter(input_pipeline.train_dataset(frames_source, **kwargs))
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 6), rest)
  other_seed = _take(iter(input_pipeline.train_dataset(frames_source, **{**kwargs, "seed": 8})), 1)
  assert not np.array_equal(other_seed[0]["index"], _take(iter(input_pipeline.train_dataset(frames_source, **kwargs)),
                                                          1)[0]["index"])


def test_two_processes_see_disjoint_shards_covering_the_dataset(frames_source):
  shards = [grain.sharding.ShardOptions(shard_index=i, shard_count=2) for i in range(2)]
  # Evaluation: 24 videos, 2 processes, batch 5 -> 12 each, padded to 15: 3 batches each.
  counted = []
  for options in shards:
    batches = list(input_pipeline.eval_dataset(frames_source, batch_size=5, shard_options=options, resize_size=32,
                                               crop_size=28, **{"num_frames": 2}))
    assert len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 12 and not mask[12:].any()
    counted.append(set(np.concatenate([b["index"] for b in batches])[mask]))
  assert not counted[0] & counted[1] and counted[0] | counted[1] == set(range(NUM_VIDEOS))
  # Training: one epoch per process, global batch 4 -> 2 per process.
  seen = []
  for options in shards:
    ds = input_pipeline.train_dataset(frames_source, global_batch_size=4, num_epochs=1, shard_options=options,
                                      **SMALL)
    batches = list(ds)
    assert all(b["video"].shape[0] == 2 for b in batches)
    seen.append([int(i) for b in batches for i in b["index"]])
  assert len(seen[0]) == len(set(seen[0])) == 12 and not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(NUM_VIDEOS))


def test_eval_counts_every_sample_once(frames_source):
  ds = input_pipeline.eval_dataset(frames_source, batch_size=7, num_frames=2, num_crops=3, resize_size=32,
                                   crop_size=28, shard_options=NO_SHARDING)
  batches = list(ds)
  assert len(batches) == 4 and batches[0]["video"].shape == (7, 3, 2, 28, 28, 3)
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(NUM_VIDEOS))
  assert mask.sum() == NUM_VIDEOS and (index[~mask] == -1).all()


def test_normalize():
  video = jnp.asarray(np.array([[0, 128, 255]], np.uint8))
  expected = [(0 - 0.48145466) / 0.26862954, (128 / 255 - 0.4578275) / 0.26130258, (1 - 0.40821073) / 0.27577711]
  out = input_pipeline.normalize(video)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out)[0], expected, rtol=1e-6)


# ---------------------------------------------------------------------------- bad input


def _copy_dataset(dataset, tmp_path):
  root = tmp_path / "copy"
  shutil.copytree(dataset.root, root)
  lines = dataset.frames_list.read_text().replace(str(dataset.root), str(root))
  (root / "frames.txt").write_text(lines)
  return root


def _eval_all(source, **kwargs):
  return list(input_pipeline.eval_dataset(source, batch_size=8, num_frames=8, resize_size=32, crop_size=28,
                                          shard_options=NO_SHARDING, **kwargs))


def test_malformed_lines_and_bad_labels(dataset, tmp_path, caplog):
  good = f"{dataset.root}/frames/moving_left_0000 16 0\n"
  cases = {
      "a/b 16\n": r"bad\.txt:2: expected 'path num_frames label', got 'a/b 16'",
      "a/b sixteen 3\n": r"bad\.txt:2: expected 'path num_frames label'",
      "a/b 0 3\n": r"bad\.txt:2: .*num_frames must be positive",
      "a/b 16 8\n": r"bad\.txt:2: label 8 is not an id of .*labels\.csv \(0\.\.7\)",
      "a/b 16 -1\n": r"bad\.txt:2: label -1 is not an id",
  }
  for line, message in cases.items():
    (tmp_path / "bad.txt").write_text(good + line + good)
    with pytest.raises(video_io.DataError, match=message):
      input_pipeline.ListSource(tmp_path / "bad.txt", dataset.labels_csv)
  with caplog.at_level(logging.WARNING):
    source = input_pipeline.ListSource(tmp_path / "bad.txt", dataset.labels_csv, skip_bad=True)
  assert len(source) == 2 and source.num_bad_lines == 1
  assert "bad.txt:2" in caplog.text and "skipped 1 bad lines of 3" in caplog.text


def test_missing_and_corrupt_frames(dataset, tmp_path, caplog):
  root = _copy_dataset(dataset, tmp_path)
  # Eval sampling of 16 frames with T = 8 reads files 1, 3, 5, ... (0-based 0, 2, 4, ...).
  os.remove(root / "frames/moving_right_0001/img_00005.jpg")
  data = (root / "frames/growing_0002/img_00003.jpg").read_bytes()
  (root / "frames/growing_0002/img_00003.jpg").write_bytes(data[:len(data) // 3])
  source = input_pipeline.ListSource(root / "frames.txt", dataset.labels_csv)
  with pytest.raises(video_io.DataError, match=r"frames\.txt:5: Missing frame file .*moving_right_0001/img_00005\.jpg"):
    _eval_all(source)
  with pytest.raises(video_io.DataError, match=r"frames\.txt:15: Corrupt image .*growing_0002/img_00003\.jpg"):
    source.read_frames(source[14], [2])
  with caplog.at_level(logging.WARNING):
    batches = _eval_all(input_pipeline.ListSource(root / "frames.txt", dataset.labels_csv), skip_bad=True)
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  assert sorted(index[mask]) == sorted(set(range(NUM_VIDEOS)) - {4, 14})
  assert skipped.sum() == 2 and mask.sum() == NUM_VIDEOS - 2
  assert "img_00005.jpg" in caplog.text and "eval epoch 1: 2 bad samples skipped (masked out)" in caplog.text


def test_fewer_frames_than_listed(dataset, tmp_path):
  root = _copy_dataset(dataset, tmp_path)
  text = (root / "frames.txt").read_text().replace("moving_up_0000 16", "moving_up_0000 20")
  (root / "frames.txt").write_text(text)
  source = input_pipeline.ListSource(root / "frames.txt", dataset.labels_csv)
  with pytest.raises(video_io.DataError, match=r"frames\.txt:7: Frame folder .*moving_up_0000 lacks img_00020\.jpg: "
                                               r"it has fewer than the 20 listed frames"):
    source.read_frames(source[6], [0])
  videos = tmp_path / "videos.txt"
  videos.write_text(f"{dataset.root}/videos/growing/growing_0000.mp4 32 4\n")
  source = input_pipeline.ListSource(videos, dataset.labels_csv, media="video")
  with pytest.raises(video_io.DataError, match=r"videos\.txt:1: Video .*growing_0000\.mp4 has 16 frames"):
    _eval_all(source)


def test_unreadable_videos_and_skipping_in_training(dataset, tmp_path, caplog):
  empty, junk = tmp_path / "empty.mp4", tmp_path / "junk.mp4"
  empty.write_bytes(b"")
  junk.write_bytes(b"\x00" * 1000)
  lines = dataset.video_list.read_text().splitlines()
  lines[2] = f"{empty} 0"
  lines[9] = f"{junk} 3"
  (tmp_path / "videos.txt").write_text("\n".join(lines) + "\n")
  source = input_pipeline.ListSource(tmp_path / "videos.txt", dataset.labels_csv, media="video")
  with pytest.raises(video_io.DataError, match=r"videos\.txt:3: Unreadable video .*empty\.mp4: the file is empty"):
    source[2]
  with pytest.raises(video_io.DataError, match=r"videos\.txt:10: Unreadable video .*junk\.mp4"):
    source[9]
  kwargs = dict(global_batch_size=4, num_epochs=1, seed=0, shard_options=NO_SHARDING, **SMALL)
  with pytest.raises(video_io.DataError, match=r"videos\.txt:(3|10): Unreadable video"):
    list(input_pipeline.train_dataset(source, **kwargs))
  iterator = iter(input_pipeline.train_dataset(source, skip_bad=True, **kwargs))
  with caplog.at_level(logging.WARNING):
    batches = list(iterator)
  assert len(batches) == NUM_VIDEOS // 4
  index = np.concatenate([b["index"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  assert 2 not in index and 9 not in index and skipped.sum() == 2  # substituted by their successors
  assert len(index) == NUM_VIDEOS and len(set(index)) == NUM_VIDEOS - 2
  assert iterator.skipped_per_epoch == [2]
  assert "train epoch 1: 2 bad samples skipped (substituted)" in caplog.text


def test_the_epoch_training_ends_inside_reports_its_skipped_count(dataset, tmp_path, caplog):
  lines = dataset.video_list.read_text().splitlines()
  for i in range(0, NUM_VIDEOS, 3):  # a bad video in every stretch, so both epochs see some
    (tmp_path / f"bad{i}.mp4").write_bytes(b"")
    lines[i] = f"{tmp_path / f'bad{i}.mp4'} 0"
  (tmp_path / "videos.txt").write_text("\n".join(lines) + "\n")
  source = input_pipeline.ListSource(tmp_path / "videos.txt", dataset.labels_csv, media="video")
  # 24 videos in batches of 5: training steps 4 per epoch, so its 8 steps end 16 videos into epoch 2.
  iterator = iter(input_pipeline.train_dataset(source, global_batch_size=5, seed=0, skip_bad=True,
                                               shard_options=NO_SHARDING, **SMALL))
  with caplog.at_level(logging.WARNING):
    batches = _take(iterator, 8)
    iterator.report_last_epoch()
  skipped = [int(b["skipped"].sum()) for b in batches]
  first, second = sum(skipped[:5]), sum(skipped[5:])  # the 5th batch crosses into epoch 2
  assert second > 0 and iterator.skipped_per_epoch == [first, second]
  assert f"train epoch 2: {second} bad samples skipped (substituted)." in caplog.text


def test_train_without_colour_jitter(frames_source):
  kwargs = dict(global_batch_size=5, num_epochs=1, seed=3, shard_options=NO_SHARDING, **SMALL)
  plain = next(iter(input_pipeline.train_dataset(frames_source, color=False, **kwargs)))
  jittered = next(iter(input_pipeline.train_dataset(frames_source, **kwargs)))
  per_clip = next(iter(input_pipeline.train_dataset(frames_source, color_per_frame=False, **kwargs)))
  assert "color" not in plain and "color" in jittered
  np.testing.assert_array_equal(per_clip["color"], np.repeat(per_clip["color"][:, :1], 4, axis=1))
  assert (jittered["color"][:, 1:, 1:9] != jittered["color"][:, :1, 1:9]).any()
  # The colour draws come after the crop and flip, so the same seed gives the same pixels.
  np.testing.assert_array_equal(plain["video"], jittered["video"])
  np.testing.assert_array_equal(plain["index"], jittered["index"])
