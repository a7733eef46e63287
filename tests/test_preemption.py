"""Trainings that are killed, preempted or stopped resume to exactly the uninterrupted run.

Every run here is `python -m ezclip_jax.main` on 2 CPU devices with the tiny 4-frame config of
test_main plus a validation split evaluated every epoch: 12 steps, evaluations at 4, 8 and 12,
checkpoints every 2 steps. One uninterrupted run is the reference of all tests.
"""

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data import synthetic
from ezclip_jax import metrics
from tests import references
from tests import test_main

VALIDATION = """
  config.data.evals = {{"val": common.dataset(name="val", role="val", list_file={list_file!r},
                                             labels_csv={labels_csv!r})}}
  config.train.eval_every_epochs = 1
  return config
"""

# Runs the command line, but SIGKILLs itself at the moment a finished best/ would be moved into place.
_KILLED_DURING_BEST_WRITE = """
import os, signal, sys
replace = os.replace
def replace_unless_best(src, dst, *args, **kwargs):
  if os.path.basename(dst) == "best":
    os.kill(os.getpid(), signal.SIGKILL)
  return replace(src, dst, *args, **kwargs)
os.replace = replace_unless_best
from ezclip_jax import main
sys.exit(main.cli(["ezclip_jax.main", *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> pathlib.Path:
  tmp = tmp_path_factory.mktemp("preemption")
  dataset = synthetic.make_dataset(tmp / "data", videos_per_class=4, num_frames=8, height=64, width=64,
                                   classes=test_main.CLASSES)
  text = test_main.CONFIG_FILE.replace("  return config\n", VALIDATION)
  path = tmp / "tiny_val.py"
  path.write_text(text.format(list_file=str(dataset.frames_list), labels_csv=str(dataset.labels_csv)))
  return path


def _args(config_file, workdir) -> list[str]:
  return [f"--config={config_file}", f"--workdir={workdir}"]


def _start(config_file, workdir, prefix=("-m", "ezclip_jax.main")) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, *prefix, *_args(config_file, workdir)],
                          env=references.subprocess_environment(), cwd=test_main.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
  output = process.communicate(timeout=timeout)[0]
  assert process.returncode == 0, output[-3000:]
  return output


@pytest.fixture(scope="module")
def straight(config_file, tmp_path_factory) -> pathlib.Path:
  """The uninterrupted run."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  _finish(_start(config_file, workdir))
  return workdir


def _best(workdir) -> tuple[dict, list[np.ndarray]]:
  best = pathlib.Path(workdir) / "best"
  params = ocp.StandardCheckpointer().restore((best / "params").absolute())
  return json.loads((best / "best.json").read_text()), jax.tree.leaves(params)


def _evals(workdir) -> list[tuple[int, float]]:
  return [(r["step"], r["values"]["top1"]) for r in metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")
          if r["split"] == "eval/val"]


def _assert_same_run(got, want) -> None:
  assert references.train_records(got) == references.train_records(want)
  assert _evals(got) == _evals(want)
  got_best, want_best = _best(got), _best(want)
  assert got_best[0] == want_best[0]
  for a, b in zip(got_best[1], want_best[1], strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(references.trained_params(got), references.trained_params(want), strict=True):
    np.testing.assert_array_equal(a, b)


def _wait_for(condition, process, what: str, timeout: float = 240) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return
    if process.poll() is not None:
      pytest.fail(f"training ended (exit {process.returncode}) before {what}: {process.stdout.read()[-3000:]}")
    time.sleep(0.02)
  pytest.fail(f"no {what} within {timeout} s")


def _best_step(workdir) -> int | None:
  try:
    return json.loads((pathlib.Path(workdir) / "best" / "best.json").read_text())["step"]
  except (OSError, ValueError):
    return None


def _sigterm_at_step_5(config_file, workdir) -> None:
  """SIGTERM once step 5 is logged: the run saves the step it reached and exits 0 within 60 s."""
  process = _start(config_file, workdir)
  _wait_for(lambda: any(r["step"] >= 5 for r in _train_records(workdir)), process, "step 5")
  sent = time.monotonic()
  process.send_signal(signal.SIGTERM)
  output = _finish(process, timeout=60)
  assert time.monotonic() - sent < 60
  reached = max(r["step"] for r in _train_records(workdir))
  assert 5 <= reached < 12
  assert (f"Stopped by SIGTERM after step {reached} of 12: saved {workdir / 'checkpoints' / str(reached)}; "
          "rerun the same command to resume.") in output.splitlines(), output[-3000:]
  assert ocp.CheckpointManager((workdir / "checkpoints").absolute()).latest_step() == reached
  assert {"data", "state"} <= {p.name for p in (workdir / "checkpoints" / str(reached)).iterdir()}
  assert not (workdir / "lock").exists()


def _train_records(workdir) -> list[dict]:
  return references.train_records(workdir) if (workdir / "metrics.jsonl").exists() else []


def test_sigkill_and_rerun_equals_an_uninterrupted_run(config_file, straight, tmp_path):
  kill_at = random.Random().randint(3, 10)  # of 12 steps; any step must work
  process = _start(config_file, tmp_path / "killed")
  _wait_for(lambda: any(r["step"] >= kill_at for r in _train_records(tmp_path / "killed")), process,
            f"step {kill_at}")
  process.send_signal(signal.SIGKILL)
  process.wait()
  _finish(_start(config_file, tmp_path / "killed"))
  assert [r["step"] for r in _train_records(straight)] == list(range(1, 13))
  _assert_same_run(tmp_path / "killed", straight)


def test_killed_and_preempted_runs_resume_to_the_uninterrupted_one(config_file, straight, tmp_path):
  evals = _evals(straight)
  assert [step for step, _ in evals] == [4, 8, 12]
  # The reference must tell a forgotten best from a kept one: its first evaluation is its best.
  assert evals[0][1] > max(top1 for _, top1 in evals[1:]), evals
  workdir = tmp_path / "run"
  # 1. SIGKILLed at the first evaluation's best write: best/ is not there yet.
  process = _start(config_file, workdir, prefix=("-c", _KILLED_DURING_BEST_WRITE))
  process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL and (workdir / ".best.partial").is_dir()
  assert not (workdir / "best").exists()
  # 2. The rerun redoes that evaluation; SIGKILLed right after it has set the best.
  process = _start(config_file, workdir)
  _wait_for(lambda: _best_step(workdir) is not None, process, "a best checkpoint")
  process.send_signal(signal.SIGKILL)
  process.wait()
  # 3. SIGTERM (preemption) at step 5, 4. the last rerun finishes.
  _sigterm_at_step_5(config_file, workdir)
  _finish(_start(config_file, workdir))
  _assert_same_run(workdir, straight)
