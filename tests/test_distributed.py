"""Several jax.distributed processes on this machine (CPU, gloo collectives)."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from data import synthetic
from ezclip_jax import checkpoint
from ezclip_jax import load_pretrained
from ezclip_jax import metrics
from tests import test_main

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(args: list[str], num_processes: int, devices_per_process: int) -> None:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
  port = str(_free_port())
  processes = [subprocess.Popen([sys.executable, str(WORKER), args[0], str(i), str(num_processes), port, *args[1:]],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(num_processes)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for p, output in zip(processes, outputs):
    assert p.returncode == 0, output[-3000:]


def test_two_processes_equal_one(tmp_path):
  _run(["step", str(tmp_path / "one.npz")], num_processes=1, devices_per_process=4)
  _run(["step", str(tmp_path / "two.npz")], num_processes=2, devices_per_process=2)
  one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
  names = [n for n in one.files if n != "losses"]
  assert len(names) > 10
  for name in names:
    np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _start_training(config_file, workdir, port: int) -> list[subprocess.Popen]:
  """`python -m ezclip_jax.main` itself on 2 processes, told where the cluster is by flags (GPU hosts
  without a scheduler); --log_level=info shows each process's "process i/N" line."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return [subprocess.Popen(
      [sys.executable, "-m", "ezclip_jax.main", f"--config={config_file}", f"--workdir={workdir}",
       "--config.distributed=True", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}", "--log_level=info"], cwd=pathlib.Path(__file__).parents[1], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(processes, timeout: float = 300) -> list[str]:
  outputs = [p.communicate(timeout=timeout)[0] for p in processes]
  for p, output in zip(processes, outputs):
    assert p.returncode == 0, output[-3000:]
  return outputs


def _train_records(workdir) -> list[dict]:
  path = workdir / "metrics.jsonl"
  return [r for r in metrics.read_jsonl(path) if r["split"] == "train"] if path.exists() else []


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """(config file, workdir, outputs) of an uninterrupted 2-process training."""
  tmp = tmp_path_factory.mktemp("two_processes")
  data = synthetic.make_dataset(tmp / "data", videos_per_class=4, num_frames=8, height=64, width=64,
                                classes=test_main.CLASSES)
  config_file = test_main.write_config_file(data, tmp / "tiny.py")
  outputs = _finish(_start_training(config_file, tmp / "run", _free_port()))
  return config_file, tmp / "run", outputs


def test_two_process_training_checkpoints_and_logs_once(two_process_run):
  _, workdir, outputs = two_process_run
  for i, output in enumerate(outputs):
    assert f"process {i}/2" in output, output[-3000:]
  records = _train_records(workdir)
  assert [r["step"] for r in records] == list(range(1, 13))  # one writer, no duplicates
  assert all(np.isfinite(r["values"]["loss"]) for r in records)
  assert checkpoint.checkpoint_manager(workdir, keep=3).latest_step() == 12
  data_states = sorted(p.name for p in (workdir / "checkpoints" / "12" / "data").iterdir())
  assert any("process_0" in n for n in data_states) and any("process_1" in n for n in data_states), data_states


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_rerun_is_exact(two_process_run, tmp_path):
  config_file, straight, _ = two_process_run
  workdir = tmp_path / "run"
  processes = _start_training(config_file, workdir, _free_port())
  deadline = time.monotonic() + 240
  while not any(r["step"] >= 5 for r in _train_records(workdir)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "no step 5"
    time.sleep(0.02)
  sent = time.monotonic()
  processes[1].send_signal(signal.SIGTERM)  # a preemption notice reaches one host
  outputs = _finish(processes, timeout=60)
  assert time.monotonic() - sent < 60
  reached = max(r["step"] for r in _train_records(workdir))
  assert 5 <= reached < 12
  stopped = (f"Stopped by SIGTERM after step {reached} of 12: saved {workdir / 'checkpoints' / str(reached)}; "
             "rerun the same command to resume.")
  assert stopped in outputs[0].splitlines() and "Stopped by" not in outputs[1]
  assert checkpoint.checkpoint_manager(workdir, keep=3).latest_step() == reached
  _finish(_start_training(config_file, workdir, _free_port()))
  assert _train_records(workdir) == _train_records(straight)
  _, want = load_pretrained(straight)
  _, got = load_pretrained(workdir)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
