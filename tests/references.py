"""Independent PyTorch references for the parity tests: open_clip (without torchvision) and random EZ-CLIP weights.

open_clip imports torchvision for image preprocessing and one BatchNorm helper,
neither of which the reference models use; torchvision has no CPU build that
installs beside torch 2.13.0 here. We register placeholder torchvision modules
so that `import open_clip` succeeds; any use of a placeholder raises.
"""

import importlib
import sys
import types


class _PlaceholderType(type):

  def __getattr__(cls, name: str):  # e.g. InterpolationMode.BICUBIC as a default argument
    if name.startswith("__"):
      raise AttributeError(name)
    return cls


class _Placeholder(metaclass=_PlaceholderType):

  def __init__(self, *args, **kwargs):
    raise RuntimeError("torchvision is not installed; open_clip's image transforms are unavailable")

  def __class_getitem__(cls, item):
    return cls


class _PlaceholderModule(types.ModuleType):

  def __getattr__(self, name: str):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Placeholder


def _install_torchvision_placeholder() -> None:
  for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
               "torchvision.transforms.functional"):
    module = sys.modules.setdefault(name, _PlaceholderModule(name))
    parent, _, child = name.rpartition(".")
    if parent:
      setattr(sys.modules[parent], child, module)


def import_open_clip():
  """Returns the `open_clip` module (real model code, placeholder torchvision)."""
  try:
    return importlib.import_module("open_clip")
  except ModuleNotFoundError as e:
    if e.name != "torchvision":
      raise
  _install_torchvision_placeholder()
  return importlib.import_module("open_clip")


def random_ezclip_state(config, seed: int = 0) -> dict:
  """An official-layout EZ-CLIP state dict with every tensor random (LayerNorm scales near 1).

  Adapters' zero-initialised up-projections and the temporal embedding get noise
  too, so every parameter influences the outputs.
  """
  import torch  # pylint: disable=g-import-not-at-top

  from convert import torch_model  # pylint: disable=g-import-not-at-top

  generator = torch.Generator().manual_seed(seed)
  with torch.device("meta"):
    shapes = {k: v.shape for k, v in torch_model.EZCLIPReference(config).state_dict().items()}
  state = {}
  for key, shape in shapes.items():
    noise = 0.05 * torch.randn(shape, generator=generator)
    state[key] = noise + 1.0 if "ln_" in key and key.endswith(".weight") else noise
  return state
