"""The console shows results and progress; library logs are off unless asked for.

Orbax (on every save and restore), grain, TFDS and this package's own details log through
absl at INFO, which absl's `app.run` shows by default. Every entry point (`ezclip_jax.main`,
`predict`, `visualize`, `benchmarks/*`) sets `set_log_level(...)` first, so only warnings
and errors show; `--log_level=info` (or `debug`) brings the library logs back.
"""

import argparse
import contextlib
from collections.abc import Iterator

from absl import flags
from absl import logging

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "warning"
LOG_LEVEL_HELP = "Library log messages shown on the console: this level and above (info: orbax, grain, ...)."

# For the absl entry points; the argparse ones call `add_log_level_argument`.
LOG_LEVEL = flags.DEFINE_enum("log_level", DEFAULT_LOG_LEVEL, LOG_LEVELS, LOG_LEVEL_HELP)


def add_log_level_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_LOG_LEVEL) -> None:
  """`--log_level` (also spelt `--log-level`) for a command line that argparse reads."""
  parser.add_argument("--log_level", "--log-level", choices=LOG_LEVELS, default=default,
                      help=f"{LOG_LEVEL_HELP} Default: {default}.")


def set_log_level(level: str) -> None:
  """Shows absl (and, under `app.run`, Python) log messages of `level` (one of `LOG_LEVELS`) and above."""
  if level not in LOG_LEVELS:
    raise ValueError(f"log level {level!r}: expected one of {', '.join(LOG_LEVELS)}.")
  logging.set_verbosity(level)


@contextlib.contextmanager
def log_level(level: str) -> Iterator[None]:
  """`set_log_level(level)` inside the block, the previous level after it.

  For tools whose `main` is also called from Python: the caller's logging stays as it was.
  """
  previous = logging.get_verbosity()
  set_log_level(level)
  try:
    yield
  finally:
    logging.set_verbosity(previous)
