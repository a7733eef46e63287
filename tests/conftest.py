"""Shared test set-up: 8 simulated CPU devices and parsed absl flags (grain workers need them)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """The tests share one JAX compilation cache, as a user's reruns share
  ~/.cache/ezclip_jax/compiled: each tiny step compiles once per session, in this process
  (its compiles of a second or more) and in the command-line runs (subprocesses)."""
  directory = str(tmp_path_factory.mktemp("compiled"))
  os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", directory)


@dataclasses.dataclass(frozen=True)
class TrainedDemo:
  """The README demo, run once per test session as the README runs it:
  `python -m ezclip_jax.main --config configs/demo.py --workdir W`.

  Attributes:
    workdir: the demo's output root.
    config: the demo config (`config.demo.classes` etc.).
    output: what the command printed (stdout and stderr, interleaved).
    checkpoint: the trained EZ-CLIP's training workdir.
    eval_root: the held-out synthetic dataset (`labels.csv`, `frames.txt`, `frames/`).
  """
  workdir: pathlib.Path
  config: object
  output: str
  checkpoint: pathlib.Path
  eval_root: pathlib.Path


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> TrainedDemo:
  from configs import demo as demo_config

  repo = pathlib.Path(__file__).resolve().parents[1]
  workdir = tmp_path_factory.mktemp("demo")
  start = time.monotonic()
  result = subprocess.run([sys.executable, "-m", "ezclip_jax.main", "--config", "configs/demo.py", "--workdir",
                           str(workdir)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
  print(f"the demo took {time.monotonic() - start:.0f} s")
  assert result.returncode == 0, result.stdout
  return TrainedDemo(workdir, demo_config.get_config(), result.stdout, workdir / "ezclip", workdir / "data" / "eval")
