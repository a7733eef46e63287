"""End-to-end training runs: a crash mid-checkpoint, a NaN stop, loading a workdir (kills: test_preemption)."""

import importlib.util
import json
import math
import pathlib
import re

import numpy as np
import pytest

from configs import common
from data import synthetic
from ezclip_jax import checkpoint
from ezclip_jax import input_pipeline
from ezclip_jax import metrics
from ezclip_jax import model_setup
from ezclip_jax import train
from ezclip_jax import video_io
from tests import references

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("moving_left", "moving_right", "growing", "shrinking")

CONFIG_FILE = """
from configs import common

def get_config():
  config = common.get_config()
  config.seed = 0
  config.model.arch = "tiny"
  config.model.num_frames = 4
  config.data.train = common.dataset(name="train", list_file={list_file!r}, labels_csv={labels_csv!r})
  config.data.batch_size = 4
  config.data.num_workers = 0
  config.optim.lr = 1e-3
  config.optim.warmup_epochs = 1
  config.train.epochs = 3
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2
  return config
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return synthetic.make_dataset(root, videos_per_class=4, num_frames=8, height=64, width=64, classes=CLASSES)


def write_config_file(dataset, path: pathlib.Path) -> pathlib.Path:
  path.write_text(CONFIG_FILE.format(list_file=str(dataset.frames_list), labels_csv=str(dataset.labels_csv)))
  return path


def load_config_file(path):
  spec = importlib.util.spec_from_file_location("tiny_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _config(dataset, tmp_path, **train_overrides):
  """The subprocess runs' config, with a batch that fills this process's 8 simulated devices."""
  config = load_config_file(write_config_file(dataset, tmp_path / "tiny.py"))
  config.data.batch_size = 8
  config.train.update(train_overrides)
  return config


def test_crash_during_a_checkpoint_write_keeps_the_previous_one(dataset, tmp_path, monkeypatch):
  config = _config(dataset, tmp_path, epochs=4)  # 2 steps per epoch; checkpoints at 2, 4, 6, 8
  get_state = input_pipeline._EpochReportIterator.get_state
  calls = []

  def failing_get_state(self):
    calls.append(1)
    if len(calls) == 2:  # the data half of the second checkpoint (step 4)
      raise OSError("simulated crash while writing a checkpoint")
    return get_state(self)

  monkeypatch.setattr(input_pipeline._EpochReportIterator, "get_state", failing_get_state)
  with pytest.raises(OSError, match="simulated crash"):
    train.train_and_evaluate(config, tmp_path / "run")
  monkeypatch.setattr(input_pipeline._EpochReportIterator, "get_state", get_state)
  manager = checkpoint.checkpoint_manager(tmp_path / "run", keep=3)
  assert manager.latest_step() == 2
  train.train_and_evaluate(config, tmp_path / "run")
  train.train_and_evaluate(config, tmp_path / "straight")
  assert references.train_records(tmp_path / "run") == references.train_records(tmp_path / "straight")
  for a, b in zip(references.trained_params(tmp_path / "run"), references.trained_params(tmp_path / "straight")):
    np.testing.assert_array_equal(a, b)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(dataset, tmp_path, capsys):
  train.train_and_evaluate(_config(dataset, tmp_path, epochs=2), tmp_path / "run")  # checkpoints at 2, 4
  good = references.trained_params(tmp_path / "run")
  config = _config(dataset, tmp_path, epochs=4)
  config.optim.lr = math.nan
  with pytest.raises(train.NonFiniteLossError, match="step 5"):
    train.train_and_evaluate(config, tmp_path / "run", allow_config_change=True)
  assert "\nresumed from step 4 of 8; compiling the train step... " in capsys.readouterr().out
  assert checkpoint.checkpoint_manager(tmp_path / "run", keep=3).latest_step() == 4
  after = references.trained_params(tmp_path / "run")
  for a, b in zip(after, good):
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_missing_paths_fail_before_compiling(dataset, tmp_path):
  config = _config(dataset, tmp_path)
  config.model.pretrained = str(tmp_path / "no_such_checkpoint")
  config.data.train.labels_csv = str(tmp_path / "labels_missing.csv")
  with pytest.raises(FileNotFoundError, match="model.pretrained=.*no_such_checkpoint.*labels_missing"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_best_checkpoint_is_selected_on_validation_and_evaluates_again(dataset, tmp_path, capsys):
  config = _config(dataset, tmp_path, epochs=2, eval_every_epochs=1)
  eval_spec = dict(list_file=str(dataset.frames_list), labels_csv=str(dataset.labels_csv))
  config.data.evals = {"val": common.dataset(name="val", role="val", **eval_spec),
                       "test": common.dataset(name="test", role="test", **eval_spec)}
  results = train.train_and_evaluate(config, tmp_path / "run")
  best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
  assert best["step"] in (2, 4) and best["val/top1"] == pytest.approx(
      max(r["values"]["top1"] for r in metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl")
          if r["split"] == "eval/val"))
  # The console: a line per dataset and evaluation with its logged top-1, and where the best is.
  out = capsys.readouterr().out
  printed = re.findall(r"^eval step (\d+) \| (\w+): top-1 ([\d.]+)%", out, re.M)
  assert printed == [(str(r["step"]), r["split"][5:], f"{r['values']['top1']:.2f}") for r in
                     metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"].startswith("eval/")]
  assert printed and f"best checkpoint {tmp_path / 'run' / 'best'} (step {best['step']}, val/top1 " in out
  assert (tmp_path / "run" / "plots" / "confusion_val_4.png").is_file()
  assert (tmp_path / "run" / "plots" / "curves.png").is_file()
  # --mode eval on the workdir scores its best checkpoint.
  config.model.pretrained = str(tmp_path / "run")
  again = train.evaluate_pretrained(config, tmp_path / "eval")
  assert again["val"] == pytest.approx(best["val/top1"])
  assert set(results) == {"val", "test"}


def test_wrong_dataset_root_fails_before_training(dataset, tmp_path):
  config = _config(dataset, tmp_path)
  config.data.evals = {"val": common.dataset(name="val", role="val", list_file=str(dataset.frames_list),
                                             labels_csv=str(dataset.labels_csv), root=str(tmp_path))}
  with pytest.raises(FileNotFoundError, match="dataset 'val': cannot read its first videos"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_bad_list_line_fails_before_the_model_loads(dataset, tmp_path, monkeypatch):
  lines = dataset.frames_list.read_text().splitlines()
  bad_list = tmp_path / "frames.txt"
  bad_list.write_text("\n".join(lines[:2] + ["a/b sixteen 3"] + lines[2:]) + "\n")
  config = _config(dataset, tmp_path)
  config.data.train.list_file = str(bad_list)

  def load_model(_):
    raise AssertionError("the model was loaded before the training list was read")

  monkeypatch.setattr(model_setup, "initial_params", load_model)
  with pytest.raises(video_io.DataError, match=r"frames\.txt:3: expected 'path num_frames label'"):
    train.train_and_evaluate(config, tmp_path / "run")
