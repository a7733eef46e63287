"""End-to-end training runs: resume after SIGKILL, a crash mid-checkpoint, a NaN stop, loading a workdir."""

import importlib.util
import json
import math
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import common
from data import synthetic
from ezclip_jax import checkpoint
from ezclip_jax import input_pipeline
from ezclip_jax import load_pretrained
from ezclip_jax import metrics
from ezclip_jax import train

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


def _trainable(workdir):
  _, variables = load_pretrained(workdir)
  return jax.tree.leaves(variables["params"])


def _train_records(workdir):
  return [r for r in metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl") if r["split"] == "train"]


def _command(config_file, workdir):
  return [sys.executable, "-m", "ezclip_jax.main", "--config", str(config_file), "--workdir", str(workdir)]


def _environment():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env


def _wait_for_step(workdir, step, process, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process.poll() is not None:
      pytest.fail(f"training ended (exit {process.returncode}) before step {step}")
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if path.exists() and any(r["step"] >= step for r in _train_records(workdir)):
      return
    time.sleep(0.05)
  pytest.fail(f"no step {step} within {timeout} s")


def test_sigkill_and_rerun_equals_an_uninterrupted_run(dataset, tmp_path):
  config_file = write_config_file(dataset, tmp_path / "tiny.py")
  env = _environment()
  subprocess.run(_command(config_file, tmp_path / "straight"), env=env, cwd=REPO, check=True,
                 capture_output=True)
  kill_at = random.Random().randint(3, 10)  # of 12 steps; any step must work
  process = subprocess.Popen(_command(config_file, tmp_path / "killed"), env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_step(tmp_path / "killed", kill_at, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  subprocess.run(_command(config_file, tmp_path / "killed"), env=env, cwd=REPO, check=True,
                 capture_output=True)
  want, got = _train_records(tmp_path / "straight"), _train_records(tmp_path / "killed")
  assert [r["step"] for r in want] == list(range(1, 13))
  assert got == want, f"killed at step {kill_at}"
  for a, b in zip(_trainable(tmp_path / "killed"), _trainable(tmp_path / "straight")):
    np.testing.assert_array_equal(a, b)


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
  assert _train_records(tmp_path / "run") == _train_records(tmp_path / "straight")
  for a, b in zip(_trainable(tmp_path / "run"), _trainable(tmp_path / "straight")):
    np.testing.assert_array_equal(a, b)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
  train.train_and_evaluate(_config(dataset, tmp_path, epochs=2), tmp_path / "run")  # checkpoints at 2, 4
  good = _trainable(tmp_path / "run")
  config = _config(dataset, tmp_path, epochs=4)
  config.optim.lr = math.nan
  with pytest.raises(train.NonFiniteLossError, match="step 5"):
    train.train_and_evaluate(config, tmp_path / "run", allow_config_change=True)
  assert checkpoint.checkpoint_manager(tmp_path / "run", keep=3).latest_step() == 4
  after = _trainable(tmp_path / "run")
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


def test_best_checkpoint_is_selected_on_validation_and_evaluates_again(dataset, tmp_path):
  config = _config(dataset, tmp_path, epochs=2, eval_every_epochs=1)
  eval_spec = dict(list_file=str(dataset.frames_list), labels_csv=str(dataset.labels_csv))
  config.data.evals = {"val": common.dataset(name="val", role="val", **eval_spec),
                       "test": common.dataset(name="test", role="test", **eval_spec)}
  results = train.train_and_evaluate(config, tmp_path / "run")
  best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
  assert best["step"] in (2, 4) and best["val/top1"] == pytest.approx(
      max(r["values"]["top1"] for r in metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl")
          if r["split"] == "eval/val"))
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
