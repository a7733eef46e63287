"""Tests for ezclip_jax/predict.py: the prediction command and its Python API.

Probabilities are checked against a computation written here from the model's own
`encode_video` / `encode_text` on frames decoded, sampled, resized and cropped with PyAV,
PIL and numpy (the official evaluation recipe), not through predict's helpers. The
trained demo checkpoint (tests/conftest.py) must rank the true class of held-out clips first.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from data import synthetic
from ezclip_jax import checkpoint
from ezclip_jax import load_pretrained
from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import text_prompts
from ezclip_jax import tokenizer
from tests.references import CLIP_MEAN, CLIP_STD, decoded_frames, eval_clip

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = dataclasses.replace(model_lib.TINY, num_frames=4)
LABELS = ("archery", "juggling", "playing_guitar")


def _perturbed(params, seed: int, keep=lambda path: False):
  """Every parameter plus noise (so adapters and the temporal embedding matter), except where `keep`."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(seed)
  out = [np.asarray(x) if keep(jax.tree_util.keystr(path))
         else np.asarray(x) + 0.02 * rng.standard_normal(np.shape(x)).astype(np.float32)
         for path, x in leaves]
  return jax.tree_util.tree_unflatten(treedef, out)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> pathlib.Path:
  params = model_lib.init_variables(CONFIG, jax.random.key(0))["params"]
  return checkpoint.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny", CONFIG, _perturbed(params, 0))


def _texture(rng, frames: int, height: int, width: int) -> np.ndarray:
  """Smooth random frames, uint8 `[frames, H, W, 3]` (compress well, unlike white noise)."""
  coarse = rng.integers(0, 256, (frames, height // 8, width // 8, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in coarse])


def _write_folder(directory: pathlib.Path, frames: np.ndarray, name=lambda i: f"img_{i + 1:05d}.jpg"):
  directory.mkdir(parents=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(directory / name(i), quality=95)
  return directory


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("media")
  rng = np.random.default_rng(1)
  synthetic.write_video(root / "clip.mp4", _texture(rng, 13, 48, 80))
  _write_folder(root / "folder", _texture(rng, 10, 72, 56))
  (root / "bad.mp4").write_bytes(b"not a video at all " * 50)
  return root


def _reference_probabilities(directory, path: pathlib.Path, labels) -> np.ndarray:
  """Mean over the 16 templates of softmax(100 * cos(video, class text)), float64 `[C]`."""
  model, variables = load_pretrained(directory)
  cfg = model.config
  clip = eval_clip(decoded_frames(path), cfg.num_frames, cfg.image_resolution)
  video = ((clip / 255.0 - CLIP_MEAN) / CLIP_STD).astype(np.float32)
  frames = np.asarray(model.apply(variables, video[None], method=model.encode_video), np.float64)[0]
  v = frames.mean(axis=0)
  v /= np.linalg.norm(v)
  probs = []
  for template in text_prompts.TEMPLATES:
    ids = tokenizer.tokenize([template.format(name.replace("_", " ")) for name in labels])
    t = np.asarray(model.apply(variables, ids, method=model.encode_text), np.float64)
    logits = 100.0 * (t / np.linalg.norm(t, axis=-1, keepdims=True)) @ v
    probs.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
  return np.mean(probs, axis=0)


def _run(capsys, *argv) -> tuple[int, str, str]:
  """`predict.main(argv)` -> (exit code, stdout, stderr); argparse's exits count too."""
  try:
    code = predict.main([str(a) for a in argv])
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def _run_json(capsys, *argv) -> tuple[int, list[dict]]:
  code, out, err = _run(capsys, "--json", *argv)
  assert code in (0, 1), err
  return code, json.loads(out)


def _as_dict(entry: dict) -> dict[str, float]:
  return {p["label"]: p["probability"] for p in entry["predictions"]}


def test_probabilities_equal_a_direct_computation(ckpt, media, capsys):
  inputs = [media / "clip.mp4", media / "folder"]
  code, entries = _run_json(capsys, "--checkpoint", ckpt, "--labels", ",".join(LABELS), "--no-cache", *inputs)
  assert code == 0
  assert [e["path"] for e in entries] == [str(p) for p in inputs]
  for entry, path in zip(entries, inputs):
    want = _reference_probabilities(ckpt, path, LABELS)
    got = _as_dict(entry)
    assert list(got) == [LABELS[i] for i in np.argsort(-want)]  # most probable first
    np.testing.assert_allclose([got[name] for name in LABELS], want, atol=2e-5)
    assert want.max() - want.min() > 0.05  # the check can tell the classes apart


def test_views_and_batches_do_not_change_single_view_scores(ckpt, media, capsys):
  args = ["--checkpoint", ckpt, "--labels", ",".join(LABELS), "--no-cache", media / "clip.mp4", media / "folder",
          media / "clip.mp4"]
  _, one = _run_json(capsys, *args, "--batch-size", "1")
  _, two = _run_json(capsys, *args, "--batch-size", "2")
  for a, b in zip(one, two):
    for name, probability in _as_dict(a).items():
      assert _as_dict(b)[name] == pytest.approx(probability, abs=1e-6)
  _, views = _run_json(capsys, *args[:-1], "--num-clips", "2", "--num-crops", "3")
  assert all(abs(sum(_as_dict(e).values()) - 1) < 1e-5 for e in views)
  assert _as_dict(views[0]) != pytest.approx(_as_dict(one[0]), abs=1e-6)  # six views score differently


def test_table_output(ckpt, media, capsys):
  code, out, err = _run(capsys, "--checkpoint", ckpt, "--labels", ",".join(LABELS), "--no-cache", "--top-k", "2",
                        media / "clip.mp4", media / "bad.mp4")
  assert code == 1
  want = _reference_probabilities(ckpt, media / "clip.mp4", LABELS)
  order = np.argsort(-want)
  label_width = len("playing_guitar")
  lines = out.splitlines()
  assert lines[:-1] == [
      str(media / "clip.mp4"),
      f"  rank  {'label':<{label_width}}  probability",
      f"     1  {LABELS[order[0]]:<{label_width}}  {want[order[0]]:11.4f}",
      f"     2  {LABELS[order[1]]:<{label_width}}  {want[order[1]]:11.4f}",
      str(media / "bad.mp4"),
  ]
  assert lines[-1].startswith(f"  error: Unreadable video {media / 'bad.mp4'}: ") and "Invalid data" in lines[-1]
  assert "2 videos: 1 scored, 1 failed." in err


def test_corrupt_and_empty_files_are_reported_and_the_rest_scored(ckpt, media, tmp_path, capsys):
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  gap = _write_folder(tmp_path / "gap", _texture(np.random.default_rng(2), 3, 32, 32),
                      name=lambda i: f"img_{2 * i + 1:05d}.jpg")
  code, entries = _run_json(capsys, "--checkpoint", ckpt, "--labels", ",".join(LABELS), "--no-cache",
                            media / "bad.mp4", empty, media / "folder", gap)
  assert code == 1
  assert [sorted(e) for e in entries] == [["error", "path"], ["error", "path"], ["path", "predictions"],
                                          ["error", "path"]]
  assert entries[0]["error"].startswith(f"Unreadable video {media / 'bad.mp4'}: ")
  assert entries[1]["error"] == f"Unreadable video {empty}: the file is empty (0 bytes)."
  assert entries[3]["error"] == f"Frame folder {gap}: frame img_00002.jpg is missing (frames are numbered from 1)."
  assert len(entries[2]["predictions"]) == 3


def test_label_files(ckpt, media, tmp_path, capsys):
  lines = tmp_path / "names.txt"
  lines.write_text("archery\n\njuggling\n  playing_guitar  \n")
  table = tmp_path / "labels.csv"
  table.write_text("id,name\n0,archery\n1,juggling\n2,playing_guitar\n")
  results = [_run_json(capsys, "--checkpoint", ckpt, *flag, "--no-cache", media / "folder")[1]
             for flag in (["--labels", " archery, juggling ,playing_guitar"], ["--label-file", lines],
                          ["--label-file", table])]
  assert results[0] == results[1] == results[2]
  assert sorted(_as_dict(results[0][0])) == sorted(LABELS)


def test_text_features_are_cached_and_reused(ckpt, media, tmp_path, capsys):
  cache = tmp_path / "cache"
  args = ["--checkpoint", ckpt, "--labels", ",".join(LABELS), "--cache-dir", cache, media / "folder"]
  code, out, err = _run(capsys, "--json", *args)
  assert code == 0
  files = list((cache / "text_features").iterdir())
  assert len(files) == 1 and f"class text features cached in {files[0]}" in err
  first = _as_dict(json.loads(out)[0])

  # The file holds the templates' embeddings [16, C, D].
  model, variables = load_pretrained(ckpt)
  cached = np.load(files[0])
  ids = tokenizer.tokenize([text_prompts.TEMPLATES[3].format("playing guitar")])
  # (atol 1e-5: one text alone and the batch of all texts round their matmuls differently.)
  np.testing.assert_allclose(cached[3, 2], np.asarray(model.apply(variables, ids, method=model.encode_text))[0],
                             rtol=1e-5, atol=1e-5)

  # The next call reads it: swapping two classes' cached features swaps their probabilities.
  np.save(files[0], cached[:, [1, 0, 2]])
  code, out, err = _run(capsys, "--json", *args)
  assert f"class text features read from {files[0]}" in err
  second = _as_dict(json.loads(out)[0])
  assert second["archery"] == pytest.approx(first["juggling"], abs=1e-6)
  assert second["juggling"] == pytest.approx(first["archery"], abs=1e-6)
  assert len(list((cache / "text_features").iterdir())) == 1

  # Other labels, or another text tower, get their own entries; the EZCLIP_JAX_CACHE default is honoured.
  _run(capsys, *args[:3], "archery,juggling", *args[4:])
  assert len(list((cache / "text_features").iterdir())) == 2
  params = _perturbed(variables["params"], 1, keep=lambda path: "visual" in path)
  other = checkpoint.save_pretrained(tmp_path / "other_text", CONFIG, params)
  os.environ[predict.CACHE_ENV] = str(cache)
  try:
    _run(capsys, "--checkpoint", other, *args[2:4], media / "folder")
  finally:
    del os.environ[predict.CACHE_ENV]
  assert len(list((cache / "text_features").iterdir())) == 3


def test_only_the_text_tower_keys_the_cache(ckpt, media, tmp_path, capsys):
  cache = tmp_path / "cache"
  _, variables = load_pretrained(ckpt)
  same_text = checkpoint.save_pretrained(tmp_path / "same_text", CONFIG,
                                         _perturbed(variables["params"], 3, keep=lambda path: "visual" not in path))
  for directory in (ckpt, same_text):
    code, _, err = _run(capsys, "--checkpoint", directory, "--labels", "archery,juggling", "--cache-dir", cache,
                        media / "folder")
    assert code == 0
  assert "read from" in err and len(list((cache / "text_features").iterdir())) == 1


def test_directories_are_searched_recursively(ckpt, tmp_path, capsys):
  rng = np.random.default_rng(3)
  frames = _texture(rng, 12, 40, 40)
  root = tmp_path / "root"
  _write_folder(root / "a" / "padded", frames)
  _write_folder(root / "a" / "plain", frames, name=lambda i: f"{i + 1}.jpg")
  synthetic.write_video(root / "b" / "clip.mp4", frames)
  synthetic.write_video(root / "z.avi", frames, codec="mpeg4")
  (root / "notes.txt").write_text("not a video")
  (root / "c" / "empty").mkdir(parents=True)
  want = [root / "a" / "padded", root / "a" / "plain", root / "b" / "clip.mp4", root / "z.avi"]
  assert predict.find_videos([root]) == [str(p) for p in want]
  assert predict.find_videos([root / "a" / "plain", root / "b"]) == [str(want[1]), str(want[2])]
  code, entries = _run_json(capsys, "--checkpoint", ckpt, "--labels", ",".join(LABELS), "--no-cache", root)
  assert code == 0 and [e["path"] for e in entries] == [str(p) for p in want]
  assert entries[0]["predictions"] == entries[1]["predictions"]  # the same frames, numbered differently
  for entry, path in zip(entries, want):
    np.testing.assert_allclose([_as_dict(entry)[n] for n in LABELS], _reference_probabilities(ckpt, path, LABELS),
                               atol=2e-5)


def test_frame_folder_layout(tmp_path):
  frames = _texture(np.random.default_rng(4), 3, 16, 16)
  folder = _write_folder(tmp_path / "f", frames, name=lambda i: f"frame{{x}}_{i + 9}.JPG")
  assert predict.frame_folder_layout(folder) == ("frame{{x}}_{:01d}.JPG", 9, 3)
  mixed = _write_folder(tmp_path / "mixed", frames[:2], name=lambda i: f"{'a' if i else 'b'}_{i + 1}.jpg")
  with pytest.raises(predict.video_io.DataError, match=r"mixes frame names a_N\.jpg and b_N\.jpg"):
    predict.frame_folder_layout(mixed)
  unnumbered = _write_folder(tmp_path / "unnumbered", frames[:1], name=lambda i: "cover.jpg")
  with pytest.raises(predict.video_io.DataError, match=r"'cover\.jpg' is not a numbered frame file"):
    predict.frame_folder_layout(unnumbered)
  padding = _write_folder(tmp_path / "padding", frames[:2], name=lambda i: ["1.jpg", "02.jpg"][i])
  with pytest.raises(predict.video_io.DataError, match=r"'02\.jpg' is not numbered like '2\.jpg'"):
    predict.frame_folder_layout(padding)


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/nowhere", "--labels", "a,b", "{media}/folder"], "--checkpoint: no such directory"),
    (["--checkpoint", "{tmp}", "--labels", "a,b", "{media}/folder"], "model_config.json not found"),
    (["--labels", " ", "{media}/folder"], "--labels: no class names."),
    (["--labels", "a,,b", "{media}/folder"], "--labels: class 2 of 3 is empty."),
    (["--labels", "a,b,a", "{media}/folder"], "--labels: class 'a' is listed twice."),
    (["--label-file", "{tmp}/missing.txt", "{media}/folder"], "Cannot read the label file"),
    (["--label-file", "{tmp}/dup.txt", "{media}/folder"], "dup.txt: class 'x' is listed twice."),
    (["--label-file", "{tmp}/bad.csv", "{media}/folder"], "bad.csv:3: expected '1,<class name>'"),
    (["--labels", "a,b", "{tmp}/missing.mp4"], "No such file or directory: {tmp}/missing.mp4"),
    (["--labels", "a,b", "{tmp}/empty_dir"], "empty_dir holds no video files"),
    (["--labels", "a,b", "--top-k", "0", "{media}/folder"], "--top-k must be at least 1"),
    (["--labels", "a,b", "--descriptions", "{tmp}/desc.csv", "{media}/folder"],
     "--descriptions: {tmp}/desc.csv has no description for class 'b'"),
    (["--labels", "a", "--label-file", "{tmp}/dup.txt", "{media}/folder"], "not allowed with argument"),
    (["--labels", "a"], "the following arguments are required: VIDEO_OR_DIR"),
])
def test_usage_errors_exit_2(ckpt, media, tmp_path, capsys, argv, message):
  (tmp_path / "dup.txt").write_text("x\ny\nx\n")
  (tmp_path / "bad.csv").write_text("id,name\n0,x\n2,y\n")
  (tmp_path / "desc.csv").write_text("SNo,Class Name,description\n1,a,a is a thing\n")
  (tmp_path / "empty_dir").mkdir()
  fill = lambda s: s.format(tmp=tmp_path, media=media)
  argv = [fill(a) for a in argv]
  if "--checkpoint" not in argv:
    argv = ["--checkpoint", str(ckpt)] + argv
  code, out, err = _run(capsys, *argv)
  assert code == 2 and out == ""
  assert fill(message) in err


def test_help_describes_the_inputs(capsys):
  code, out, _ = _run(capsys, "--help")
  assert code == 0
  text = " ".join(out.split())
  assert "frame folders (a directory of numbered JPEG frames" in text
  assert "searched recursively" in text and "Exit status: 0 every video scored, 1 some" in text


def test_python_api(ckpt, media, tmp_path):
  model, variables = load_pretrained(ckpt)
  predictions = predict.predict_videos(model, variables, [media], LABELS, cache_dir=tmp_path)
  assert [p.path for p in predictions] == [str(media / n) for n in ("bad.mp4", "clip.mp4", "folder")]
  assert predictions[0].probabilities is None and "Unreadable video" in predictions[0].error
  top = predictions[1].top(LABELS, 2)
  want = _reference_probabilities(ckpt, media / "clip.mp4", LABELS)
  assert [name for name, _ in top] == [LABELS[i] for i in np.argsort(-want)[:2]]
  np.testing.assert_allclose(predictions[1].probabilities, want, atol=2e-5)


def test_trained_demo_checkpoint_ranks_the_true_class_first(trained_demo, tmp_path):
  config = trained_demo.config
  demo = config.demo
  clips = synthetic.make_dataset(
      tmp_path / "clips", videos_per_class=demo.eval_videos_per_class, num_frames=demo.source_frames,
      height=demo.frame_size, width=demo.frame_size, classes=tuple(demo.classes), seed=2 * config.seed + 1,
      videos=True, frames=False)
  corrupt = clips.root / "videos" / "corrupt.mp4"
  corrupt.write_bytes(os.urandom(4096))
  result = subprocess.run(
      [sys.executable, "-m", "ezclip_jax.predict", "--checkpoint", str(trained_demo.checkpoint), "--label-file",
       str(clips.labels_csv), "--descriptions", str(trained_demo.eval_root / "descriptions.csv"), "--json",
       "--cache-dir", str(tmp_path / "cache"), str(clips.root / "videos")],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 1, result.stderr
  entries = {pathlib.Path(e["path"]): e for e in json.loads(result.stdout)}
  assert entries.pop(corrupt)["error"].startswith(f"Unreadable video {corrupt}: ")
  assert len(entries) == len(demo.classes) * demo.eval_videos_per_class
  correct = [e["predictions"][0]["label"] == path.parent.name for path, e in entries.items()]
  accuracy = 100.0 * np.mean(correct)
  print(f"predict on {len(correct)} held-out demo videos: top-1 {accuracy:.1f}%")
  assert accuracy >= 90.0


# --------------------------------------------------------------- the training's text setup, long labels, loops


def test_training_records_its_descriptions_and_predict_uses_them(trained_demo, capsys):
  workdir = trained_demo.checkpoint
  trained_with = trained_demo.workdir / "data" / "train" / "descriptions.csv"
  assert json.loads((workdir / "text_setup.json").read_text()) == {
      "texts": "descriptions", "descriptions": str(trained_with),
      "descriptions_sha256": __import__("hashlib").sha256(trained_with.read_bytes()).hexdigest()}
  clip = trained_demo.eval_root / "frames" / "shrinking_0000"
  # The README's basic command, no --descriptions: the training's descriptions, said on stderr.
  code, out, err = _run(capsys, "--checkpoint", workdir, "--labels", "growing,shrinking", "--json", "--no-cache", clip)
  assert code == 0
  assert (f"note: using the descriptions {workdir} was trained with: {trained_with} (--templates for the 16 "
          "templates).\n") in err
  auto = json.loads(out)[0]["predictions"]
  _, out, _ = _run(capsys, "--checkpoint", workdir, "--labels", "growing,shrinking", "--json", "--no-cache",
                   "--descriptions", trained_with, clip)
  assert json.loads(out)[0]["predictions"] == auto and auto[0]["label"] == "shrinking"
  # Templates on request, or when the descriptions lack a class: a warning.
  _, _, err = _run(capsys, "--checkpoint", workdir, "--labels", "growing,shrinking", "--templates", "--no-cache", clip)
  assert (f"warning: {workdir} was trained with the descriptions in {trained_with}; scoring with the 16 templates "
          "(--templates) instead.\n") in err
  _, _, err = _run(capsys, "--checkpoint", workdir, "--labels", "growing,juggling", "--no-cache", clip)
  assert (f"warning: {workdir} was trained with the descriptions in {trained_with}, but {trained_with} has no "
          "description for class 'juggling' (1 of 2 classes missing); scoring with the 16 templates, which it was "
          "not trained with (pass --descriptions).\n") in err


def test_descriptions_for_a_model_trained_with_templates_warn(ckpt, media, tmp_path, capsys):
  from ezclip_jax import text_prompts  # pylint: disable=import-outside-toplevel,reimported
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  for f in ckpt.iterdir():
    os.symlink(f, workdir / f.name)
  text_prompts.save_setup(workdir, None)
  descriptions = tmp_path / "d.csv"
  descriptions.write_text("SNo,Class Name,description\n0,archery,shooting arrows\n1,juggling,throwing balls\n")
  _, _, err = _run(capsys, "--checkpoint", workdir, "--labels", "archery,juggling", "--descriptions", descriptions,
                   "--no-cache", media / "folder")
  assert err.startswith(f"warning: {workdir} was trained with the 16 templates; scoring with --descriptions "
                        f"{descriptions} instead.\n")


def test_labels_longer_than_the_context_warn(ckpt, media, capsys):
  # 80 words of "a" are 80 tokens; with the start and end tokens and any template, more than 77.
  long_a, long_b = "a " * 80 + "archery", "a " * 80 + "juggling"
  code, out, err = _run(capsys, "--checkpoint", ckpt, "--labels", f"{long_a},{long_b},surfing", "--json", "--no-cache",
                        media / "folder")
  assert code == 0
  # The longest text of each class: "Can you recognize the action of {}?" (7 tokens), 80 "a", the name
  # (archery: 1 token, juggling: 2 with CLIP's BPE), start and end: 90 and 91 tokens.
  shown = "Can you recognize the action of a a a a a a a a a a a a a..."
  for name, length in ((long_a.strip(), 90), (long_b.strip(), 91)):
    assert (f"warning: class {name!r}: the text {shown!r} is {length} tokens, more than the model's 77; it is cut, "
            "so classes that differ only after token 77 score alike.\n") in err
  assert "surfing" not in err
  scores = {p["label"]: p["probability"] for p in json.loads(out)[0]["predictions"]}
  assert scores[long_a.strip()] == scores[long_b.strip()]  # what the warning is about


def test_symlink_loops_and_repeated_paths_count_each_video_once(ckpt, media, tmp_path, capsys):
  root = tmp_path / "root"
  (root / "sub").mkdir(parents=True)
  (root / "sub" / "clip.mp4").write_bytes((media / "clip.mp4").read_bytes())
  os.symlink(root, root / "sub" / "loop")           # a loop back up the tree
  os.symlink(root / "sub", root / "again")          # the same folder twice
  # Found first as again/clip.mp4 (sorted); then again/loop, sub/clip.mp4, sub/loop and the argument repeat it.
  code, out, err = _run(capsys, "--checkpoint", ckpt, "--labels", "a,b", "--json", "--no-cache", root,
                        root / "sub" / "clip.mp4")
  assert code == 0
  assert [e["path"] for e in json.loads(out)] == [str(root / "again" / "clip.mp4")]
  assert err.splitlines()[0] == (
      f"warning: 4 paths led to a video or folder already found (symlinks or repeated arguments), each video is "
      f"scored once: e.g. {root / 'again' / 'loop'} is {root}.")
