"""Console: library logs off by default, one flag to bring them back, the caller's level restored."""

import argparse
import logging as std_logging
import subprocess
import sys

from absl import logging
import pytest

from ezclip_jax import console


def _shown(caplog, level: str) -> list[str]:
  """Messages that reach a handler when absl logs one line per level under `console.log_level(level)`."""
  caplog.clear()
  with caplog.at_level(std_logging.DEBUG), console.log_level(level):
    logging.debug("debug line")
    logging.info("info line")
    logging.warning("warning line")
    logging.error("error line")
  return [r.getMessage() for r in caplog.records]


def test_levels_and_restore(caplog):
  before = logging.get_verbosity()
  assert _shown(caplog, "warning") == ["warning line", "error line"]
  assert _shown(caplog, "info") == ["info line", "warning line", "error line"]
  assert _shown(caplog, "error") == ["error line"]
  assert logging.get_verbosity() == before
  with pytest.raises(ValueError, match="'loud'.*debug, info, warning, error"):
    console.set_log_level("loud")


def test_argparse_flag_takes_both_spellings():
  parser = argparse.ArgumentParser()
  console.add_log_level_argument(parser, default="error")
  assert parser.parse_args([]).log_level == "error"
  assert parser.parse_args(["--log_level=info"]).log_level == "info"
  assert parser.parse_args(["--log-level", "debug"]).log_level == "debug"
  with pytest.raises(SystemExit):
    parser.parse_args(["--log-level", "loud"])


_ABSL_APP = """
from absl import app
from absl import logging
from ezclip_jax import console

def main(argv):
  console.set_log_level(console.LOG_LEVEL.value)
  logging.info("library info line")
  logging.warning("library warning line")

app.run(main)
"""


@pytest.mark.parametrize("args, shown", [((), ["library warning line"]),
                                         (("--log_level=info",), ["library info line", "library warning line"])])
def test_absl_entry_point_hides_info_unless_asked(args, shown):
  # absl's app.run shows INFO by default; the entry points lower it.
  result = subprocess.run([sys.executable, "-c", _ABSL_APP, *args], capture_output=True, text=True, check=True)
  assert [line.split("] ", 1)[1] for line in result.stderr.splitlines() if "] " in line] == shown


@pytest.mark.parametrize("level, shown", [("warning", ["error line"]), ("info", ["warning line", "error line"])])
def test_hide_library_warnings_unless_library_logs_were_asked_for(caplog, level, shown):
  with console.log_level(level), caplog.at_level(std_logging.DEBUG):
    with console.hide_library_warnings():
      logging.warning("warning line")
      logging.error("error line")
    assert logging.get_verbosity() == {"warning": logging.WARNING, "info": logging.INFO}[level]
  assert [r.getMessage() for r in caplog.records] == shown


def test_training_lines():
  assert console.start_line(0, 12) == "starting fresh: 12 steps"
  assert console.start_line(4, 12) == "resumed from step 4 of 12"
  assert console.start_line(12, 12) == "resumed from step 12: training is already done"
  assert console.format_duration(3725.4) == "1:02:05" and console.format_duration(float("nan")) == "?"
  best = {"step": 40, "val/top1": 61.25}
  assert console.final_line(48, 90.0, "W/checkpoints", best, "W/best") == (
      "done: step 48 in 0:01:30; latest checkpoint W/checkpoints/48; best checkpoint W/best (step 40, val/top1 61.25%)")
  assert console.final_line(48, 90.0, "W/checkpoints", {}, "W/best").endswith(
      "; no best checkpoint (no eval dataset has role=val)")
  summary = {"top1_mean": 60.0, "top1_std": 1.5, "top5_mean": 90.0, "top5_std": 0.5, "num_splits": 3.0}
  assert console.eval_lines(8, {}, {"ucf101": summary, "base_to_novel": {"base": 80.0, "novel": 60.0, "hm": 68.57}}) == [
      "eval step 8 | ucf101 (3 splits): top-1 60.00 +- 1.50%, top-5 90.00 +- 0.50%",
      "eval step 8 | base_to_novel: base 80.00%, novel 60.00%, harmonic mean 68.57%"]
