"""The tensors of a TorchScript archive (OpenAI's CLIP `.pt` files), read without running its code.

`torch.jit.load` compiles the archive's `code/` and runs any `__setstate__` it defines, so a
downloaded file could execute anything. Here the archive is read as the zip it is:
  PREFIX/data.pkl       the module tree, pickled: `__torch__.*` objects whose state is a dict of
                        attributes (submodules, tensors, numbers)
  PREFIX/data/KEY       the raw bytes of each storage (persistent id `('storage', type, KEY, ...)`)
  PREFIX/code/**.py     TorchScript source; each class lists its `__parameters__` and `__buffers__`
The pickle is loaded by an unpickler that knows only tensor rebuilding and inert stand-ins for
the `__torch__` classes; which attributes are parameters comes from the class declarations, so
plain tensor attributes (CLIP's `attn_mask`) stay out, as in `state_dict()`.
"""

import collections
import pathlib
import pickle
import re
import zipfile

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# Pure list/dict builders TorchScript's pickler may emit for typed containers.
_JIT_PICKLE_HELPERS = ("build_intlist", "build_floatlist", "build_boollist", "build_doublelist",
                       "build_tensorlist", "restore_type_tag")
_CLASS = re.compile(r"^class (\S+)\(Module\):\n  __parameters__ = \[(.*)\]\n  __buffers__ = \[(.*)\]", re.M)


class UnsafeArchiveError(ValueError):
  """A TorchScript archive that needs more than tensors and module attributes to load."""


class _ScriptObject:
  """Stands in for a `__torch__` class: keeps the pickled state, runs nothing."""
  qualified_name = ""

  def __setstate__(self, state):
    self.state = state


def is_torchscript(path: pathlib.Path) -> bool:
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(re.fullmatch(r"[^/]+/(code/.*|constants\.pkl)", name) for name in archive.namelist())


def _prefix(archive: zipfile.ZipFile, path: pathlib.Path) -> str:
  pickles = [name for name in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", name)]
  if len(pickles) != 1:
    raise UnsafeArchiveError(f"{path}: a TorchScript archive has one PREFIX/data.pkl; found {pickles}")
  return pickles[0].split("/")[0]


def _module_classes(archive: zipfile.ZipFile, prefix: str, path: pathlib.Path) -> dict[str, list[str]]:
  """{qualified class name: its parameter and buffer names}; rejects code that runs on loading."""
  classes = {}
  for name in archive.namelist():
    if not (name.startswith(f"{prefix}/code/") and name.endswith(".py")):
      continue
    module = name[len(prefix) + len("/code/"):-len(".py")].replace("/", ".")
    source = archive.read(name).decode("utf-8", errors="replace")
    for block in re.split(r"^(?=class )", source, flags=re.M):
      if re.search(r"^  def __setstate__\(", block, re.M):
        class_name = block.split("(", 1)[0].removeprefix("class ")
        raise UnsafeArchiveError(
            f"{path}: refused: TorchScript class {module}.{class_name} defines __setstate__, code that "
            "would run on loading; export its weights as a state dict (torch.save(model.state_dict(), ...))")
    for match in _CLASS.finditer(source):
      names = re.findall(r'"([^"]+)"', match.group(2) + match.group(3))
      classes[f"{module}.{match.group(1)}"] = names
  return classes


class _Unpickler(pickle.Unpickler):
  """Loads data.pkl with tensors over the archive's storages and `_ScriptObject` stand-ins."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, path: pathlib.Path):
    super().__init__(archive.open(f"{prefix}/data.pkl"))
    self._archive, self._prefix, self._path = archive, prefix, path
    self._storages, self._classes = {}, {}

  def find_class(self, module: str, name: str):
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    if module == "torch.jit._pickle" and name in _JIT_PICKLE_HELPERS:
      return getattr(torch.jit._pickle, name)  # pylint: disable=protected-access
    if module == "__torch__" or module.startswith("__torch__."):
      qualified = f"{module}.{name}"
      return self._classes.setdefault(qualified, type(name, (_ScriptObject,), {"qualified_name": qualified}))
    raise UnsafeArchiveError(f"{self._path}: refused: data.pkl refers to {module}.{name}, which an archive "
                             "of weights does not need")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
      raise UnsafeArchiveError(f"{self._path}: unexpected persistent id {str(pid)[:100]} in data.pkl")
    _, storage_type, key, _, _ = pid
    if key not in self._storages:
      data = bytearray(self._archive.read(f"{self._prefix}/data/{key}"))
      self._storages[key] = torch.frombuffer(data, dtype=_STORAGE_DTYPES[storage_type]) if data else (
          torch.empty(0, dtype=_STORAGE_DTYPES[storage_type]))
    return self._storages[key]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *unused) -> torch.Tensor:
  return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _collect(obj: _ScriptObject, classes: dict, prefix: str, out: dict, path: pathlib.Path) -> None:
  if obj.qualified_name not in classes or not isinstance(getattr(obj, "state", None), dict):
    raise UnsafeArchiveError(f"{path}: cannot tell the parameters of TorchScript class {obj.qualified_name}")
  tensors = classes[obj.qualified_name]
  for name, value in obj.state.items():
    if isinstance(value, _ScriptObject):
      _collect(value, classes, f"{prefix}{name}.", out, path)
    elif name in tensors and isinstance(value, torch.Tensor):
      out[f"{prefix}{name}"] = value


def read_state_dict(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
  """The parameters and buffers of the TorchScript archive at `path`, as `module.state_dict()` names them.

  Raises:
    UnsafeArchiveError: the archive defines `__setstate__` or its pickle refers to anything but
      tensors and module classes.
  """
  path = pathlib.Path(path)
  with zipfile.ZipFile(path) as archive:
    prefix = _prefix(archive, path)
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise UnsafeArchiveError(f"{path}: big-endian TorchScript archives are not supported")
    classes = _module_classes(archive, prefix, path)
    root = _Unpickler(archive, prefix, path).load()
  if not isinstance(root, _ScriptObject):
    raise UnsafeArchiveError(f"{path}: data.pkl holds a {type(root).__name__}, not a TorchScript module")
  state = {}
  _collect(root, classes, "", state, path)
  return state
