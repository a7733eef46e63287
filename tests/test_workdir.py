"""Training workdirs: refusing one without checkpoints, falling back from a damaged checkpoint,
the lock, the saved run config."""

import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common
from convert import flax_to_torch
from ezclip_jax import checkpoint
from ezclip_jax import load_pretrained
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import predict
from ezclip_jax import train
from ezclip_jax import workdir as workdir_lib


@pytest.fixture(scope="module")
def trained(trained_demo) -> pathlib.Path:
  """The demo's trained EZ-CLIP workdir (read-only for the tests: copy it)."""
  return trained_demo.checkpoint


def _copy_without_best(workdir: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[int]]:
  """A copy that `load_pretrained` reads from its checkpoints; their steps, oldest first."""
  copy = pathlib.Path(shutil.copytree(workdir, tmp_path / "copy"))
  shutil.rmtree(copy / "best", ignore_errors=True)
  steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
  assert len(steps) >= 2, steps
  return copy, steps


def _warnings(caplog) -> list[str]:
  """Every warning: the console shows them (no library noise wanted)."""
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _trainable_at(workdir: pathlib.Path, step: int) -> list[np.ndarray]:
  """The trainable leaves of checkpoint `step`, read by orbax directly (no fallback logic)."""
  restored = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) / "state").absolute())
  return jax.tree.leaves(restored["trainable"])


def _loaded_trainable(workdir: pathlib.Path) -> list[np.ndarray]:
  _, variables = load_pretrained(workdir)
  patterns = json.loads((workdir / "backbone" / "trainable_patterns.json").read_text())
  return jax.tree.leaves(optim.split_params(variables["params"], patterns)[0])


def _backbone_only(tmp_path: pathlib.Path) -> pathlib.Path:
  """A workdir as a run killed before its first checkpoint leaves it: the backbone alone."""
  config = model_lib.ARCHITECTURES["tiny"]
  params = model_lib.init_variables(config, jax.random.key(0))["params"]
  checkpoint.save_backbone(tmp_path / "run", config, params, tuple(common.get_config().train.trainable))
  return tmp_path / "run"


def test_a_workdir_without_checkpoints_is_refused_by_every_reader(tmp_path, capsys):
  workdir = _backbone_only(tmp_path)
  want = (f"{workdir.absolute()} has no trained parameters: {workdir.absolute() / 'best'} and "
          f"{workdir.absolute() / 'checkpoints'}/<step> are missing. Train it first, or pass a pretrained "
          "directory (python -m convert.torch_to_flax).")
  with pytest.raises(checkpoint.NoCheckpointError) as error:
    load_pretrained(workdir.absolute())
  assert str(error.value) == want
  assert flax_to_torch.main([str(workdir.absolute()), str(tmp_path / "model.pt")]) == 2
  assert capsys.readouterr().err == f"error: {want}\n"
  assert not (tmp_path / "model.pt").exists()
  video = tmp_path / "v.mp4"
  video.write_bytes(b"")
  assert predict.main([str(video), "--checkpoint", str(workdir.absolute()), "--labels", "a,b"]) == 2
  assert capsys.readouterr().err == f"error: --checkpoint {workdir.absolute()}: {want}\n"
  config = common.get_config()
  config.model.pretrained = str(workdir.absolute())
  with pytest.raises(checkpoint.NoCheckpointError, match="has no trained parameters"):
    train.evaluate_pretrained(config, tmp_path / "eval")
  assert sorted(p.name for p in workdir.iterdir()) == ["backbone"]


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path, caplog):
  workdir, steps = _copy_without_best(trained, tmp_path)
  want = _trainable_at(workdir, steps[-2])
  shutil.rmtree(workdir / "checkpoints" / str(steps[-1]) / "state")
  with caplog.at_level("WARNING"):
    got = _loaded_trainable(workdir)
  assert _warnings(caplog) == [
      f"checkpoint {workdir.absolute() / 'checkpoints' / str(steps[-1])} is damaged (state/ is missing); "
      "using the previous one."]
  assert len(got) == len(want) > 5
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_a_truncated_checkpoint_file_falls_back_too(trained, tmp_path, caplog):
  workdir, steps = _copy_without_best(trained, tmp_path)
  want = _trainable_at(workdir, steps[-2])
  latest = workdir / "checkpoints" / str(steps[-1]) / "state"
  files = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 1000]
  assert files
  for path in files:
    os.truncate(path, path.stat().st_size // 2)
  with caplog.at_level("WARNING"):
    got = _loaded_trainable(workdir)
  warnings = _warnings(caplog)
  assert len(warnings) == 1 and warnings[0].startswith(
      f"checkpoint {latest.parent.absolute()} is damaged ("), warnings
  assert "\n" not in warnings[0]
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def _snapshot(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _saved_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))


def test_a_second_training_fails_naming_the_holder_and_a_dead_holder_is_taken_over(trained, tmp_path, caplog):
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / "copy"))
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-12-02T10:00:00+00:00",
          "command": "python -m ezclip_jax.main --config configs/demo.py"}
  (workdir / "lock").write_text(json.dumps(lock))
  before = _snapshot(workdir)
  try:
    with pytest.raises(workdir_lib.WorkdirInUseError) as error:
      train.train_and_evaluate(_saved_config(workdir), workdir)
  finally:
    holder.kill()
    holder.wait()
  assert str(error.value) == (
      f"{workdir} is in use by pid {holder.pid} on {socket.gethostname()} since 2026-12-02T10:00:00+00:00 "
      f"(python -m ezclip_jax.main --config configs/demo.py); wait for it, use another --workdir, or delete "
      f"{workdir / 'lock'} if that run is gone")
  assert _snapshot(workdir) == before
  with caplog.at_level("WARNING"), workdir_lib.claimed(workdir, _saved_config(workdir)):
    assert json.loads((workdir / "lock").read_text())["pid"] == os.getpid()
  assert [r.getMessage() for r in caplog.records if r.filename == "workdir.py"] == [
      f"{workdir / 'lock'}: taking over the lock of a run that ended without releasing it: pid {holder.pid} on "
      f"{socket.gethostname()} since 2026-12-02T10:00:00+00:00 (python -m ezclip_jax.main --config configs/demo.py)."]
  before.pop("lock")
  assert _snapshot(workdir) == before


def test_resuming_with_another_config_lists_the_differences(trained, tmp_path, caplog):
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / "copy"))
  saved = (workdir / "config.json").read_text()
  changed = _saved_config(workdir)
  changed.optim.lr = 0.01
  changed.train.epochs = 30
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.ConfigChangedError) as error:
    train.train_and_evaluate(changed, workdir)
  assert str(error.value) == (
      f"{workdir} was trained with another config ({workdir / 'config.json'}); differing keys: optim.lr: 0.003 -> "
      "0.01; train.epochs: 20 -> 30. Rerun with that config, or pass --allow_config_change to continue with this one")
  assert _snapshot(workdir) == before
  with caplog.at_level("WARNING"), workdir_lib.claimed(workdir, changed, allow_config_change=True):
    pass
  assert (workdir / "config.1.json").read_text() == saved
  assert json.loads((workdir / "config.json").read_text())["optim"]["lr"] == 0.01
  assert any("continuing" in r.getMessage() and "optim.lr: 0.003 -> 0.01" in r.getMessage() for r in caplog.records)
