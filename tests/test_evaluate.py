"""Zero-shot evaluation: the official scoring formula, sample-exact counting, reports, protocols."""

import csv
import functools

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from data import synthetic
from ezclip_jax import evaluate
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import sharding
from tests import references

CONFIG = references.TINY
NUM_CLASSES = len(synthetic.CLASSES)


def _official_numpy(frames, texts):
  """The official `validate` scoring in float64: frames `[B, T, D]`, texts `[K, C, D]` -> `[B, C]`."""
  num_texts, num_classes, dim = texts.shape
  video = frames.astype(np.float64).mean(axis=1)
  video /= np.linalg.norm(video, axis=-1, keepdims=True)
  flat = texts.reshape(num_texts * num_classes, dim).astype(np.float64)  # row k*C + c
  flat /= np.linalg.norm(flat, axis=-1, keepdims=True)
  similarity = (100.0 * video @ flat.T).reshape(len(video), num_texts, num_classes)
  exp = np.exp(similarity - similarity.max(axis=-1, keepdims=True))
  return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=1)


def _official_torch(frames, texts):
  num_texts, num_classes, dim = texts.shape
  video = torch.from_numpy(frames).mean(dim=1)
  video = video / video.norm(dim=-1, keepdim=True)
  flat = torch.from_numpy(texts).reshape(-1, dim)
  flat = flat / flat.norm(dim=-1, keepdim=True)
  similarity = 100.0 * video @ flat.T
  return similarity.view(len(video), num_texts, -1).softmax(dim=-1).mean(dim=1).numpy()


def _features(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_scoring_equals_official_formula():
  frames, texts = _features(0, 6, 4, 64), _features(1, 3, 7, 64)
  got = np.asarray(evaluate.class_probabilities(frames, texts))
  assert got.shape == (6, 7)
  np.testing.assert_allclose(got, _official_numpy(frames, texts), atol=2e-6)
  np.testing.assert_allclose(got, _official_torch(frames, texts), atol=2e-6)
  np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-6)


def test_scoring_uses_k_major_text_rows():
  # Class 1's texts point at the video in every template; a class-major reading would not.
  video = np.zeros((1, 2, 4), np.float32)
  video[..., 0] = 1.0
  texts = np.zeros((3, 2, 4), np.float32)
  texts[:, 0, 1] = 1.0
  texts[:, 1, 0] = 1.0
  np.testing.assert_allclose(evaluate.class_probabilities(video, texts), [[0.0, 1.0]], atol=1e-6)


def test_multi_view_averages_view_probabilities():
  frames, texts = _features(2, 3, 2, 4, 64), _features(3, 2, 5, 64)
  want = np.mean([_official_numpy(frames[:, v], texts) for v in range(2)], axis=0)
  np.testing.assert_allclose(evaluate.class_probabilities(frames, texts), want, atol=2e-6)


# ------------------------------------------------------------------------------ counting


def test_accumulator_matches_hand_built_confusion():
  accumulator = evaluate.Accumulator(num_classes=3)
  accumulator.update(np.array([[.7, .2, .1], [.1, .8, .1], [.5, .4, .1], [.2, .2, .6]]), np.array([0, 1, 1, 0]))
  # The last two rows are padding: their (garbage) labels and scores must not count.
  accumulator.update(np.array([[.1, .1, .8], [.9, .05, .05], [.3, .3, .4]]), np.array([2, -1, 7]),
                     np.array([True, False, False]))
  result = accumulator.result()
  np.testing.assert_array_equal(result.confusion, [[1, 0, 1], [1, 1, 0], [0, 0, 1]])
  assert result.num_samples == 5
  assert result.top1 == pytest.approx(100 * 3 / 5)
  assert result.topk == 3 and result.top5 == 100.0  # k clipped to the 3 classes
  np.testing.assert_allclose(result.per_class_accuracy, [50.0, 50.0, 100.0])
  assert result.mean_class_accuracy == pytest.approx(200 / 3)


def test_top5_counts_rank_five_not_rank_six():
  probs = np.array([[.30, .20, .15, .12, .10, .08, .05],   # label 4: rank 5
                    [.30, .20, .15, .12, .10, .08, .05],   # label 5: rank 6
                    [.05, .08, .10, .12, .15, .20, .30]])  # label 6: rank 1
  accumulator = evaluate.Accumulator(num_classes=7)
  accumulator.update(probs, np.array([4, 5, 6]))
  result = accumulator.result()
  assert result.topk == 5
  assert result.top5 == pytest.approx(200 / 3)
  assert result.top1 == pytest.approx(100 / 3)
  assert np.isnan(result.per_class_accuracy[0])  # no samples of class 0


def test_unmasked_bad_label_is_an_error():
  with pytest.raises(ValueError, match="Label -1"):
    evaluate.Accumulator(3).update(np.full((2, 3), 1 / 3), np.array([0, -1]))


# -------------------------------------------------------------- the real eval loader, 13 videos


def _text_ids(num_texts=2):
  rng = np.random.default_rng(5)
  ids = np.zeros((num_texts, NUM_CLASSES, CONFIG.context_length), np.int32)
  ids[..., 0] = 998
  ids[..., 1:5] = rng.integers(1, 990, (num_texts, NUM_CLASSES, 4))
  ids[..., 5] = references.EOT
  return ids


@pytest.fixture(scope="module")
def thirteen_videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  dataset = synthetic.make_dataset(root, videos_per_class=2, num_frames=8, height=40, width=48)
  lines = dataset.frames_list.read_text().splitlines()[:13]
  list_file = root / "thirteen.txt"
  list_file.write_text("\n".join(lines) + "\n")
  labels = np.array([int(line.split()[-1]) for line in lines])
  return input_pipeline.ListSource(list_file, dataset.labels_csv), labels


@functools.cache
def _variables():
  return references.random_variables(CONFIG)


def _batches(source, num_clips=1):
  loader = input_pipeline.eval_dataset(source, batch_size=4, num_frames=CONFIG.num_frames, num_clips=num_clips,
                                       resize_size=32, crop_size=32, num_threads=2)
  return list(loader)


def _reference(batches, variables, text_ids):
  """Per-video (label, top-1 prediction, in top 5) from single-video model calls and the numpy
  official formula, for the unmasked rows."""
  model = model_lib.EZCLIP(CONFIG)
  texts = np.asarray(model.apply(variables, text_ids.reshape(-1, CONFIG.context_length), method=model.encode_text))
  texts = texts.reshape(*text_ids.shape[:2], -1)
  rows = []
  for batch in batches:
    for video, label, real in zip(batch["video"], batch["label"], batch["mask"]):
      if not real:
        continue
      clips = input_pipeline.normalize(video)
      frames = np.asarray(model.apply(variables, clips, method=model.encode_video))  # [V, T, D]
      probs = np.mean([_official_numpy(frames[v:v + 1], texts)[0] for v in range(len(frames))], axis=0)
      rows.append((int(label), int(np.argmax(probs)), int(label in np.argsort(-probs)[:5])))
  return np.array(rows)


@pytest.mark.parametrize("num_clips", [1, 2])
def test_thirteen_videos_in_batches_of_four_count_thirteen(thirteen_videos, num_clips):
  source, list_labels = thirteen_videos
  batches = _batches(source, num_clips)
  assert [len(b["label"]) for b in batches] == [4, 4, 4, 4]
  assert sum(int(b["mask"].sum()) for b in batches) == 13
  assert batches[0]["video"].shape[1] == num_clips
  variables, text_ids = _variables(), _text_ids()
  labels, predictions, in_top5 = _reference(batches, variables, text_ids).T
  np.testing.assert_array_equal(labels, list_labels)
  confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
  for label, prediction in zip(labels, predictions):
    confusion[label, prediction] += 1

  result = evaluate.evaluate(model_lib.EZCLIP(CONFIG), variables, batches, text_ids)
  assert result.num_samples == 13
  np.testing.assert_array_equal(result.confusion, confusion)
  assert result.top1 == pytest.approx(100 * np.sum(labels == predictions) / 13)
  assert result.top5 == pytest.approx(100 * in_top5.sum() / 13)

  # 8 devices: every batch of 4 is padded to 8 rows, the extra rows masked out. Every
  # host-to-device copy is an explicit one.
  mesh = sharding.make_mesh((-1, 1, 1))
  with jax.transfer_guard("disallow"):
    sharded = evaluate.evaluate(model_lib.EZCLIP(CONFIG), variables, batches, text_ids, mesh=mesh)
  np.testing.assert_array_equal(sharded.confusion, result.confusion)
  assert sharded.topk_correct == result.topk_correct


def test_encode_class_texts_keeps_k_c_order():
  model = model_lib.EZCLIP(CONFIG)
  variables, text_ids = _variables(), _text_ids(num_texts=3)
  want = [[np.asarray(model.apply(variables, text_ids[k, c][None], method=model.encode_text))[0]
           for c in range(NUM_CLASSES)] for k in range(3)]
  got = evaluate.encode_class_texts(model, variables, text_ids, batch=5)  # 24 rows: 5 calls, 1 padded
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  mesh = sharding.make_mesh((2, 2, 2))
  np.testing.assert_allclose(evaluate.encode_class_texts(model, variables, text_ids, batch=5, mesh=mesh), want,
                             rtol=1e-5, atol=1e-5)


def test_eval_batch_without_video_is_a_clear_error():
  with pytest.raises(KeyError, match="no 'video'"):
    evaluate.evaluate(model_lib.EZCLIP(CONFIG), _variables(), [{"frames": np.zeros(1), "label": np.zeros(1)}],
                      _text_ids())


# ------------------------------------------------------------------------------- reports


def test_confusion_png_size(tmp_path):
  names = [f"class_{i}" for i in range(101)]
  matrix = np.random.default_rng(0).integers(0, 5, (101, 101))
  path = tmp_path / "confusion.png"
  evaluate.save_confusion_matrix_png(matrix, names, path, title="UCF101")
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size == (300 + 15 * 101, 300 + 15 * 101)
  evaluate.save_confusion_matrix_png(np.eye(3, dtype=int), ["a", "b", "c"], tmp_path / "plots" / "small.png")
  with Image.open(tmp_path / "plots" / "small.png") as image:
    assert image.size == (600, 600)
  # Up to 30 classes the cells hold counts, so they get 30 pixels each.
  assert evaluate.confusion_png_pixels(30) == 300 + 30 * 30 and evaluate.confusion_png_pixels(31) == 300 + 15 * 31
  with pytest.raises(ValueError, match="3 class names"):
    evaluate.save_confusion_matrix_png(matrix, names[:3], path)


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB")).astype(int)


def test_confusion_png_writes_counts_and_title(tmp_path):
  # Two classes, all right: two cells of the darkest blue, each with its count in white.
  evaluate.save_confusion_matrix_png(np.array([[7, 0], [0, 9]]), ["a", "b"], tmp_path / "titled.png",
                                     title="UCF101, step 300")
  pixels = _pixels(tmp_path / "titled.png")
  dark = np.abs(pixels - [0x08, 0x30, 0x6B]).sum(axis=-1) < 40  # Blues at 1.0
  top, left = np.argwhere(dark)[0]  # the first dark pixel: the top-left corner of cell (0, 0)
  right = left + np.argmin(dark[top, left:])
  bottom = top + np.argmin(dark[top:, left])
  assert right - left > 100 and bottom - top > 100
  cell = pixels[top:bottom, left:right]
  assert (cell > 200).all(axis=-1).sum() > 10  # the white "7"
  assert (pixels[:top - 5] < 100).all(axis=-1).sum() > 20  # the title above the matrix
  evaluate.save_confusion_matrix_png(np.array([[7, 0], [0, 9]]), ["a", "b"], tmp_path / "untitled.png")
  assert not (_pixels(tmp_path / "untitled.png")[:top - 5] < 100).all(axis=-1).any()


def test_per_class_csv(tmp_path):
  result = evaluate.EvalResult(np.array([[3, 1, 0], [0, 0, 0], [1, 0, 1]]), topk_correct=6, topk=3)
  evaluate.save_per_class_csv(result, ["jump", "run", "swim"], tmp_path / "classes.csv")
  with open(tmp_path / "classes.csv", newline="") as f:
    rows = list(csv.reader(f))
  assert rows == [["id", "name", "samples", "correct", "accuracy"], ["0", "jump", "4", "3", "75.0000"],
                  ["1", "run", "0", "0", ""], ["2", "swim", "2", "1", "50.0000"]]


# ----------------------------------------------------------------------------- protocols


def _result_with_top1(correct, total=8):
  confusion = np.zeros((2, 2), np.int64)
  confusion[0, 0], confusion[0, 1] = correct, total - correct
  return evaluate.EvalResult(confusion, topk_correct=total, topk=2)


def test_zero_shot_mean_and_std_over_three_splits():
  summary = evaluate.zero_shot_summary([_result_with_top1(4), _result_with_top1(5), _result_with_top1(6)])
  # top-1 50, 62.5, 75: mean 62.5, population std sqrt((12.5**2 * 2) / 3) = 10.2062...
  assert summary["top1_mean"] == pytest.approx(62.5)
  assert summary["top1_std"] == pytest.approx(10.206207261596575)
  assert summary["top5_mean"] == 100.0 and summary["top5_std"] == 0.0
  assert summary["num_splits"] == 3


def test_base_to_novel_harmonic_mean():
  assert evaluate.harmonic_mean(80.0, 60.0) == pytest.approx(480 / 7)  # 2*80*60/140
  assert evaluate.harmonic_mean(0.0, 0.0) == 0.0
  summary = evaluate.base_to_novel_summary([80.0, 82.0, _result_with_top1(6)], [60.0, 58.0, 62.0])
  # base (80 + 82 + 75) / 3 = 79, novel 60, HM 2*79*60/139.
  assert summary["base"] == pytest.approx(79.0)
  assert summary["novel"] == pytest.approx(60.0)
  assert summary["hm"] == pytest.approx(9480 / 139)
  with pytest.raises(ValueError, match="one base and one novel"):
    evaluate.base_to_novel_summary([80.0], [60.0, 61.0])
