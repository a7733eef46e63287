"""Several jax.distributed processes on this machine (CPU, gloo collectives)."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
from data import synthetic
from ezclip_jax import checkpoint
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


def test_two_process_training_checkpoints_and_logs_once(tmp_path):
  data = synthetic.make_dataset(tmp_path / "data", videos_per_class=4, num_frames=8, height=64, width=64,
                                classes=test_main.CLASSES)
  config_file = test_main.write_config_file(data, tmp_path / "tiny.py")
  # `python -m ezclip_jax.main` itself, told where the cluster is by flags (GPU hosts without a scheduler);
  # --log_level=info shows each process's "process i/N" line.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  port = _free_port()
  processes = [subprocess.Popen(
      [sys.executable, "-m", "ezclip_jax.main", f"--config={config_file}", f"--workdir={tmp_path / 'run'}",
       "--config.distributed=True", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}", "--log_level=info"], cwd=pathlib.Path(__file__).parents[1], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for i, (p, output) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, output[-3000:]
    assert f"process {i}/2" in output, output[-3000:]
  records = [r for r in metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
  assert [r["step"] for r in records] == list(range(1, 13))  # one writer, no duplicates
  assert all(np.isfinite(r["values"]["loss"]) for r in records)
  assert checkpoint.checkpoint_manager(tmp_path / "run", keep=3).latest_step() == 12
  data_states = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "12" / "data").iterdir())
  assert any("process_0" in n for n in data_states) and any("process_1" in n for n in data_states), data_states
