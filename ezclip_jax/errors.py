"""One-line error messages for the command lines: what went wrong and what to do, not a traceback.

Library errors already name the file, line, key or flag; `one_line` keeps that message, joins
a multi-line one, and finds what a long chain of wrapped exceptions buries (a full disk under
orbax's and tensorstore's errors). `--verbose` shows the traceback instead.
"""

import errno

_MAX_CHARS = 600


def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _no_space(error: BaseException) -> str | None:
  for link in _chain(error):
    if isinstance(link, OSError) and link.errno == errno.ENOSPC:
      where = f" writing {link.filename}" if link.filename else ""
      return f"no space left on the device{where}; free some space (or choose another --workdir) and rerun"
    if "No space left on device" in str(link):
      return "no space left on the device; free some space (or choose another --workdir) and rerun"
  return None


def _message(error: BaseException) -> str:
  text = str(error)
  if isinstance(error, (KeyError, AttributeError)) and error.args and isinstance(error.args[0], str):
    text = error.args[0]  # not the repr str() gives them
  text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__
  return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + " ..."


def one_line(error: BaseException) -> str:
  """`error` as one line for the console."""
  return _no_space(error) or _message(error)


def config_override_error(error: BaseException, argv) -> str:
  """A `--config.a.b=...` naming no config field (ml_collections' AttributeError/KeyError), as one line."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(message))
    error = error.args[0]
  lines = str(error.args[0] if error.args else error).splitlines()
  key = lines[0].strip().strip("'\"") if lines else ""
  hint = " ".join(line.strip() for line in lines[1:] if line.strip())
  flags = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
  flag = next((f for f in flags if f.rsplit(".", 1)[-1] == key), flags[0] if flags else "--config")
  return f"{flag}: the config has no field {key!r}" + (f"; {hint}" if hint else "")
