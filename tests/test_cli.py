"""`python -m ezclip_jax.main`: common mistakes are one line on stderr within seconds, before anything is written."""

import errno
import os
import pathlib
import subprocess
import sys

from absl import flags
import pytest

from data import synthetic
from ezclip_jax import main as main_lib
from ezclip_jax import train
from tests import references
from tests import test_main


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> pathlib.Path:
  tmp = tmp_path_factory.mktemp("cli")
  dataset = synthetic.make_dataset(tmp / "data", videos_per_class=2, num_frames=8, height=32, width=32,
                                   classes=test_main.CLASSES)
  return test_main.write_config_file(dataset, tmp / "tiny.py")


@pytest.fixture
def run(config_file, capsys, monkeypatch):
  """Runs the command line in this process: (exit status, stderr)."""

  def run_main(workdir, *overrides) -> tuple[int, str]:
    # main's default cache is $JAX_COMPILATION_CACHE_DIR: the session's cache (conftest), which
    # this process keeps using after the run.
    argv = ["main", f"--config={config_file}", f"--workdir={workdir}", *overrides]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the --config.* overrides from sys.argv
    try:
      return main_lib.cli(argv), capsys.readouterr().err
    finally:  # config_flags defines a flag per override, once per process
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
  return run_main


def test_a_config_typo_is_one_line_with_the_did_you_mean(run, tmp_path):
  code, err = run(tmp_path / "run", "--config.optim.lrr=0.1")
  assert (code, err) == (1, "error: --config.optim.lrr: the config has no field 'lrr'; "
                            "Did you mean \"lr\" instead of \"lrr\"?\n")
  code, err = run(tmp_path / "run", "--config.optim.lrr=0.1", "--verbose")
  assert code == 1 and err.startswith("Traceback (most recent call last):") and err.endswith(
      "error: --config.optim.lrr: the config has no field 'lrr'; Did you mean \"lr\" instead of \"lrr\"?\n")
  assert not (tmp_path / "run").exists()


def test_a_batch_size_the_mesh_cannot_split_fails_before_writing(run, tmp_path):
  code, err = run(tmp_path / "run", "--config.data.batch_size=4")  # 8 devices
  assert (code, err) == (1, "error: data.batch_size=4 is not divisible by the 8 batch shards (data x fsdp) of "
                            "the mesh (8, 1, 1); use a multiple of 8\n")
  assert not (tmp_path / "run").exists()


def test_a_mesh_that_does_not_fit_the_devices(run, tmp_path):
  code, err = run(tmp_path / "run", "--config.data.batch_size=8", "--config.mesh_shape=-1,3,1")
  assert (code, err) == (1, "error: mesh_shape (-1, 3, 1) does not fit the 8 devices (its fixed sizes multiply "
                            "to 3, which does not divide 8); e.g. mesh_shape (-1, 1, 1) is data parallel over "
                            "all 8\n")
  assert not (tmp_path / "run").exists()


def test_a_bad_list_line_is_one_line_and_leaves_no_workdir(run, tmp_path):
  listing = tmp_path / "list.txt"
  listing.write_text("frames/a 8 0\nframes/b eight 1\n")
  code, err = run(tmp_path / "run", "--config.data.batch_size=8",
                   f"--config.data.train.list_file={listing}")
  assert code == 1 and err.startswith(f"error: {listing}:2: ") and err.count("\n") == 1, err
  assert not (tmp_path / "run").exists()


def test_a_read_only_workdir_fails_at_once(run):
  code, err = run("/proc/ezclip-run", "--config.data.batch_size=8")
  assert code == 1 and err.startswith("error: /proc/ezclip-run: cannot write in /proc (") and err.count("\n") == 1


def test_a_full_disk_is_one_line(run, tmp_path, monkeypatch):
  def full_disk(*args, **kwargs):
    try:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "checkpoints" / "2"))
    except OSError as e:
      raise RuntimeError("orbax: async save failed\n" + "  tensorstore detail\n" * 300) from e

  monkeypatch.setattr(train, "train_and_evaluate", full_disk)
  code, err = run(tmp_path / "run")
  assert (code, err) == (1, f"error: no space left on the device writing {tmp_path / 'run' / 'checkpoints' / '2'}; "
                            "free some space (or choose another --workdir) and rerun\n")


def test_the_command_line_exits_1_with_one_line(config_file, tmp_path):
  result = subprocess.run([sys.executable, "-m", "ezclip_jax.main", f"--config={config_file}",
                           f"--workdir={tmp_path / 'run'}", "--config.train.epochz=1"],
                          cwd=test_main.REPO, env=references.subprocess_environment(), capture_output=True, text=True,
                          timeout=120, check=False)
  assert (result.returncode, result.stderr) == (1, "error: --config.train.epochz: the config has no field 'epochz'; "
                                                   "Did you mean \"epochs\" instead of \"epochz\"?\n")
  assert not (tmp_path / "run").exists()


def test_compiled_steps_are_kept_for_reruns(config_file, tmp_path):
  """--compilation_cache_dir takes JAX's persistent cache, and wins over $JAX_COMPILATION_CACHE_DIR."""
  (tmp_path / "from_env").mkdir()
  env = dict(references.subprocess_environment(), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "from_env"))
  result = subprocess.run([sys.executable, "-m", "ezclip_jax.main", f"--config={config_file}",
                           f"--workdir={tmp_path / 'run'}", "--config.train.epochs=1",
                           f"--compilation_cache_dir={tmp_path / 'compiled'}"],
                          cwd=test_main.REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert [p.name for p in (tmp_path / "compiled").glob("jit_train_step-*")], list((tmp_path / "compiled").iterdir())
  assert not list((tmp_path / "from_env").iterdir())
