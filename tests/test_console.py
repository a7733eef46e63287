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
