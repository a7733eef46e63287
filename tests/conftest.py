"""Shared test set-up: 8 simulated CPU devices and parsed absl flags (grain workers need them)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


@dataclasses.dataclass(frozen=True)
class TrainedDemo:
  """The README demo, run once per test session (`ezclip_jax.demo.run` with `configs/demo.py`).

  Attributes:
    workdir: the demo's output root.
    config: the demo config (`config.demo.classes` etc.).
    results: `demo.run`'s {"ezclip": Scores, "frame_average": Scores}.
    checkpoint: the trained EZ-CLIP's training workdir.
    eval_root: the held-out synthetic dataset (`labels.csv`, `frames.txt`, `frames/`).
  """
  workdir: pathlib.Path
  config: object
  results: dict
  checkpoint: pathlib.Path
  eval_root: pathlib.Path


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> TrainedDemo:
  from configs import demo as demo_config
  from ezclip_jax import demo

  config = demo_config.get_config()
  workdir = tmp_path_factory.mktemp("demo")
  start = time.monotonic()
  results = demo.run(config, str(workdir))
  print(f"demo.run took {time.monotonic() - start:.0f} s")
  return TrainedDemo(workdir, config, results, workdir / "ezclip", workdir / "data" / "eval")
