"""Tests for ezclip_jax/search.py on an index of the demo's held-out clips and its trained model.

Labels must equal what predict gives for the same clips (predict decodes again, through the
grain evaluation pipeline); search for a class description must rank that class's clips first.
"""

import json
import pathlib

import numpy as np
import pytest

from ezclip_jax import embed
from ezclip_jax import predict
from ezclip_jax import search

PER_CLASS = 8


@pytest.fixture(scope="module")
def demo_index(trained_demo, tmp_path_factory) -> tuple[pathlib.Path, list[pathlib.Path]]:
  frames = trained_demo.eval_root / "frames"
  clips = [frames / f"{name}_{k:04d}" for name in ("growing", "shrinking") for k in range(PER_CLASS)]
  index = tmp_path_factory.mktemp("search") / "index"
  assert embed.main(["--checkpoint", str(trained_demo.checkpoint), "--out", str(index), "--windows",
                     *map(str, clips)]) == 0
  return index, clips


def _descriptions(trained_demo) -> list[str]:
  data = trained_demo.eval_root
  return ["--label-file", str(data / "labels.csv"), "--descriptions", str(data / "descriptions.csv")]


def test_labelling_an_index_gives_predicts_probabilities(trained_demo, demo_index, capsys):
  index, clips = demo_index
  assert search.main([str(index), *_descriptions(trained_demo), "--json", "--no-cache"]) == 0
  labelled = {row["path"]: row["predictions"] for row in json.loads(capsys.readouterr().out)}
  assert predict.main(["--checkpoint", str(trained_demo.checkpoint), *_descriptions(trained_demo), "--json",
                       "--no-cache", *map(str, clips)]) == 0
  predicted = {row["path"]: row["predictions"] for row in json.loads(capsys.readouterr().out)}
  assert sorted(labelled) == sorted(predicted) == sorted(map(str, clips))
  for path, want in predicted.items():
    assert [p["label"] for p in labelled[path]] == [p["label"] for p in want]
    np.testing.assert_allclose([p["probability"] for p in labelled[path]], [p["probability"] for p in want],
                               atol=1e-5)
  # Windows: each clip (0.96 s) is one window, labelled alike.
  assert search.main([str(index), *_descriptions(trained_demo), "--json", "--no-cache", "--windows"]) == 0
  windows = json.loads(capsys.readouterr().out)
  assert [(w["start"], w["end"]) for w in windows] == [(0.0, pytest.approx(0.96))] * len(clips)
  for window in windows:
    np.testing.assert_allclose([p["probability"] for p in window["predictions"]],
                               [p["probability"] for p in predicted[window["path"]]], atol=1e-5)


@pytest.mark.parametrize("name", ["growing", "shrinking"])
def test_search_for_a_class_description_ranks_its_clips_first(trained_demo, demo_index, capsys, name):
  index, _ = demo_index
  data = trained_demo.eval_root
  assert search.main([str(index), name, "--descriptions", str(data / "descriptions.csv"), "--top-k",
                      str(PER_CLASS), "--json"]) == 0
  results = json.loads(capsys.readouterr().out)
  assert len(results) == PER_CLASS
  assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)
  precision = np.mean([pathlib.Path(r["path"]).name.startswith(name + "_") for r in results])
  assert precision >= 0.9


def test_search_with_another_model_is_refused(trained_demo, demo_index, capsys):
  index, _ = demo_index
  other = trained_demo.workdir / "frame_average"
  assert search.main([str(index), "growing", "--checkpoint", str(other)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {index / 'model.json'}: the index was built with another model (params sha256 ")
  assert err.endswith(f"than --checkpoint {other} (params sha256 "
                      f"{err.rsplit('(params sha256 ', 1)[1].split(',')[0]}, float32, T=8, 64 px).\n")
  assert err.count("\n") == 1
