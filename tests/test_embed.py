"""Tests for ezclip_jax/embed.py: the resumable embedding index of a video collection.

The pooled embedding is checked against one computed here from PyAV frames, PIL resizing and
the model's `encode_video` (segment centres by hand); resumption against an uninterrupted run.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import av
import jax
import numpy as np
import pytest
from PIL import Image

from ezclip_jax import checkpoint
from ezclip_jax import embed
from ezclip_jax import model as model_lib
from ezclip_jax import synthetic

CONFIG = dataclasses.replace(model_lib.TINY, num_frames=4)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
GOOD = [f"clip{i}.mp4" for i in range(5)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> pathlib.Path:
  params = model_lib.init_variables(CONFIG, jax.random.key(0))["params"]
  return checkpoint.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny", CONFIG, params)


def _frames(seed: int, num_frames: int = 16) -> np.ndarray:
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (num_frames, 8, 10, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(f).resize((80, 64), Image.BILINEAR)) for f in coarse])


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("collection")
  for i, name in enumerate(GOOD):
    synthetic.write_video(root / name, _frames(i))
  synthetic.write_video(root / "one_frame.mp4", _frames(7, 1))  # short: embedded, its one frame T times
  (root / "corrupt.mp4").write_bytes(b"not a video at all " * 50)
  (root / "empty.mp4").write_bytes(b"")
  return root


def _embed(*argv) -> int:
  return embed.main([*argv])


def _arrays(index: pathlib.Path) -> dict[str, dict]:
  return {path: embed.load_embeddings(index, entry) for path, entry in embed.read_manifest(index).items()
          if entry["error"] is None}


def _manifest_lines(index: pathlib.Path) -> list[dict]:
  return [json.loads(line) for m in sorted(index.glob("manifest-*.jsonl")) for line in m.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_index(ckpt, collection, tmp_path_factory) -> pathlib.Path:
  """An uninterrupted run over the collection, with windows (1 s every 0.5 s)."""
  index = tmp_path_factory.mktemp("reference") / "index"
  assert _embed("--checkpoint", str(ckpt), "--out", str(index), "--windows", "--window", "0.4", "--stride", "0.2",
                str(collection)) == 1  # the corrupt and empty files fail
  return index


def test_pooled_embedding_matches_a_hand_computation(ckpt, collection, reference_index):
  with av.open(str(collection / "clip3.mp4")) as container:
    frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  # 16 frames, T = 4: segment centres int(4 i + 1.5) = 1, 5, 9, 13. Short side 64 -> round(64 * 256 / 224) = 73
  # (80x64 -> 91x73), centre crop 64: offsets round(4.5) = 4 and round(13.5) = 14.
  picked = [np.asarray(Image.fromarray(frames[i]).resize((91, 73), Image.BICUBIC))[4:68, 14:78] for i in (1, 5, 9, 13)]
  clip = ((np.stack(picked) / 255.0 - CLIP_MEAN) / CLIP_STD).astype(np.float32)[None]
  model, variables = checkpoint.load_pretrained(ckpt)
  encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_video))
  want = np.asarray(encode(variables, clip))[0].mean(axis=0)
  got = _arrays(reference_index)[str(collection / "clip3.mp4")]
  np.testing.assert_allclose(got["video"], want, atol=1e-5)
  # 16 frames at 25 fps = 0.64 s: 0.4 s windows (10 frames) every 0.2 s (5 frames) start at 0, 5 and 6 (the last
  # ends at the end).
  np.testing.assert_allclose(got["window_times"], [[0, 0.4], [0.2, 0.6], [0.24, 0.64]])
  assert got["windows"].shape == (3, CONFIG.embed_dim)


def test_bad_inputs_are_recorded_and_the_others_embedded(collection, reference_index):
  entries = embed.read_manifest(reference_index)
  assert sorted(entries) == sorted(str(collection / n) for n in GOOD + ["one_frame.mp4", "corrupt.mp4", "empty.mp4"])
  assert entries[str(collection / "empty.mp4")]["error"] == (
      f"Unreadable video {collection / 'empty.mp4'}: the file is empty (0 bytes).")
  assert entries[str(collection / "corrupt.mp4")]["error"].startswith(
      f"Unreadable video {collection / 'corrupt.mp4'}: [Errno 1094995529] Invalid data found")
  for name in GOOD:
    entry = entries[str(collection / name)]
    assert entry["error"] is None and entry["duration"] == pytest.approx(0.64) and entry["num_windows"] == 3
    assert entry["size"] == os.path.getsize(collection / name)
  short = entries[str(collection / "one_frame.mp4")]
  assert short["error"] is None and short["duration"] == pytest.approx(0.04) and short["num_windows"] == 1


def test_kill_9_and_rerun_resumes_without_recomputing(ckpt, collection, reference_index, tmp_path, capsys):
  index = tmp_path / "index"
  args = ["--checkpoint", str(ckpt), "--out", str(index), "--windows", "--window", "0.4", "--stride", "0.2",
          "--batch-size", "2", str(collection)]
  # kill -9 at the worst moment: the 3rd video's embeddings are written, its manifest line is not.
  script = textwrap.dedent(f"""
      import os, signal
      from ezclip_jax import embed
      append, calls = embed._append_manifest, []
      def killing_append(manifest, entry):
        calls.append(entry)
        if len(calls) == 3:
          os.kill(os.getpid(), signal.SIGKILL)
        append(manifest, entry)
      embed._append_manifest = killing_append
      embed.main({args!r})
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == -9, result.stderr[-2000:]
  first = {e["path"]: e for e in _manifest_lines(index)}
  assert len(first) == 2
  written = {p: os.stat(index / "embeddings" / e["file"]).st_mtime_ns for p, e in first.items()}

  assert _embed(*args) == 1
  assert "2 of 8 videos already embedded unchanged" in capsys.readouterr().err
  lines = _manifest_lines(index)
  assert sorted(e["path"] for e in lines) == sorted(embed.read_manifest(reference_index))  # each video once
  assert {p: os.stat(index / "embeddings" / e["file"]).st_mtime_ns for p, e in first.items()} == written
  want, got = _arrays(reference_index), _arrays(index)
  assert sorted(got) == sorted(want)
  for path in want:
    for key in want[path]:
      np.testing.assert_allclose(got[path][key], want[path][key], atol=1e-6, err_msg=f"{path} {key}")

  # A changed file (new content, size and mtime) is embedded again, and only it.
  changed = tmp_path / "changed"
  changed.mkdir()
  for name in GOOD[:2]:
    (changed / name).write_bytes((collection / name).read_bytes())
  changed_args = args[:-1] + [str(changed)]
  assert _embed(*changed_args) == 0
  capsys.readouterr()
  synthetic.write_video(changed / GOOD[0], _frames(9, 20))
  assert _embed(*changed_args) == 0
  assert "1 of 2 videos already embedded unchanged" in capsys.readouterr().err
  entry = embed.read_manifest(index)[str(changed / GOOD[0])]
  assert entry["duration"] == pytest.approx(0.8) and entry["size"] == os.path.getsize(changed / GOOD[0])


def test_processes_split_the_collection_and_the_index_merges(ckpt, collection, reference_index, tmp_path):
  index = tmp_path / "index"
  for process in ("0", "1"):
    _embed("--checkpoint", str(ckpt), "--out", str(index), "--windows", "--window", "0.4", "--stride", "0.2",
           "--process-index", process, "--process-count", "2", str(collection))
  per_process = [[json.loads(l)["path"] for l in (index / f"manifest-0000{p}.jsonl").read_text().splitlines()]
                 for p in (0, 1)]
  assert sorted(per_process[0] + per_process[1]) == sorted(embed.read_manifest(reference_index))
  assert len(per_process[0]) == len(per_process[1]) == 4
  want, got = _arrays(reference_index), _arrays(index)
  assert sorted(got) == sorted(want)
  for path in want:
    np.testing.assert_allclose(got[path]["video"], want[path]["video"], atol=1e-6)


def test_an_index_of_another_model_is_refused(ckpt, collection, reference_index, tmp_path, capsys):
  _, variables = checkpoint.load_pretrained(ckpt)
  params = jax.tree.map(np.asarray, variables["params"])
  params["logit_scale"] = params["logit_scale"] + 1.0  # one parameter differs
  other = checkpoint.save_pretrained(tmp_path / "other", CONFIG, params)
  before = sorted(p.name for p in reference_index.rglob("*"))
  assert _embed("--checkpoint", str(other), "--out", str(reference_index), "--windows", "--window", "0.4",
                "--stride", "0.2", str(collection)) == 2
  err = capsys.readouterr().err
  stored = json.loads((reference_index / "model.json").read_text())["model"]["params_sha256"][:12]
  new = embed.params_sha256(params)[:12]
  assert err == (f"error: {reference_index / 'model.json'}: the index was built with another model (params sha256 "
                 f"{stored}, float32, T=4, 64 px) than --checkpoint {other} (params sha256 {new}, float32, T=4, "
                 "64 px).\n")
  assert sorted(p.name for p in reference_index.rglob("*")) == before


def test_labelling_the_index_gives_predicts_probabilities(ckpt, collection, reference_index, capsys):
  from ezclip_jax import predict, search  # pylint: disable=import-outside-toplevel
  labels = ["--labels", "archery,juggling,surfing", "--json", "--no-cache"]
  assert search.main([str(reference_index), *labels]) == 0
  labelled = json.loads(capsys.readouterr().out)
  assert predict.main(["--checkpoint", str(ckpt), *labels, str(collection)]) == 1  # the two bad files
  predicted = {row["path"]: row for row in json.loads(capsys.readouterr().out)}
  assert sorted(row["path"] for row in labelled) == sorted(predicted)
  for row in labelled:
    want = predicted[row["path"]]
    if "error" in want:
      assert row["error"] == want["error"]
      continue
    assert [p["label"] for p in row["predictions"]] == [p["label"] for p in want["predictions"]]
    np.testing.assert_allclose([p["probability"] for p in row["predictions"]],
                               [p["probability"] for p in want["predictions"]], atol=1e-5)
