"""Shared test helpers: the tiny model configs, random variables and batches, frame and video decoding
with PIL and PyAV, the official evaluation view, and independent PyTorch references (open_clip
without torchvision, random official-layout EZ-CLIP weights).

open_clip imports torchvision for image preprocessing and one BatchNorm helper,
neither of which the reference models use; torchvision has no CPU build that
installs beside torch 2.13.0 here. We register placeholder torchvision modules
so that `import open_clip` succeeds; any use of a placeholder raises.
"""

import dataclasses
import importlib
import pathlib
import sys
import types

import av
import jax
import numpy as np
from PIL import Image

from ezclip_jax import model as model_lib

# The tiny model of the unit tests.
TINY = model_lib.ModelConfig(
    embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
    vision_heads=2, context_length=77, vocab_size=1000, text_width=64, text_heads=2, text_layers=2,
    num_frames=4)
EOT = 999  # TINY's largest id, as CLIP's end token is
# TINY training with dropout and drop path, so the train step's randomness shows.
TINY_WITH_DROPOUT = dataclasses.replace(TINY, drop_path_rate=0.1, prompt_dropout=0.1)
# TINY with heads 64 wide, like every OpenAI CLIP, so the converters can infer the heads; a short
# context and vocabulary keep the PyTorch side fast.
CONVERTIBLE_TINY = dataclasses.replace(TINY, embed_dim=64, vision_width=128, vision_patch_size=8, text_width=128,
                                       context_length=16, vocab_size=500)
# OpenAI CLIP's normalisation, as the official code writes it.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def random_variables(config: model_lib.ModelConfig, seed: int = 0) -> dict:
  """Every tensor random, including the zero-initialised adapters and temporal embedding."""
  variables = model_lib.init_variables(config, jax.random.key(seed))
  flat, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  leaves = [np.float32(path[-1].key == "scale") + 0.05 * rng.standard_normal(x.shape, np.float32)
            for path, x in flat]
  return jax.tree_util.tree_unflatten(tree, leaves)


def decode_video(path) -> np.ndarray:
  """Every frame of a video file, in order (PyAV), uint8 `[N, H, W, 3]`."""
  with av.open(str(path)) as container:
    return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decoded_frames(path: pathlib.Path) -> np.ndarray:
  """Every frame of a video (PyAV, in order) or a frame folder (PIL, by frame number), uint8 `[N, H, W, 3]`."""
  if path.is_dir():
    files = sorted(path.glob("*.jpg"), key=lambda p: int("".join(filter(str.isdigit, p.name))))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
  return decode_video(path)


def eval_clip(frames: np.ndarray, num_frames: int, size: int) -> np.ndarray:
  """The official evaluation view: segment centres, bicubic short side to 256/224 * size, centre crop."""
  n = len(frames)
  indices = [int(i * n / num_frames + (n / num_frames - 1) / 2) for i in range(num_frames)]
  short = round(size * 256 / 224)
  out = []
  for frame in frames[indices]:
    h, w = frame.shape[:2]
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    image = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC))
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    out.append(image[top:top + size, left:left + size])
  return np.stack(out)


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


def optim_config():
  """The official optimizer config at lr 1e-3."""
  from configs import common  # pylint: disable=g-import-not-at-top

  config = common.get_config().optim
  config.lr = 1e-3
  return config


def train_batch(config: model_lib.ModelConfig = TINY, seed: int = 0, batch: int = 8) -> dict:
  """A random host training batch for `config` (`video`, `color`, `label`, `text`), as the input pipeline yields."""
  from ezclip_jax import transforms  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  res = config.image_resolution
  text = np.zeros((batch, config.context_length), np.int32)
  text[:, 0] = config.vocab_size - 2
  text[:, 1:5] = rng.integers(1, config.vocab_size - 10, (batch, 4))
  text[:, 5] = config.vocab_size - 1
  video = rng.integers(0, 256, (batch, config.num_frames, res, res, 3), dtype=np.uint8)
  jitter, gray = transforms.RandomColorJitter(), transforms.RandomGrayscale(p=0.5)
  color = np.stack([gray.random_map(jitter.random_map({"frames": clip}, rng), rng)["color"] for clip in video])
  return {"video": video, "color": color, "label": np.array([0, 1, 2, 3, 0, 1, 0, 2][:batch], np.int32),
          "text": text}


REPO = pathlib.Path(__file__).resolve().parents[1]


def subprocess_environment() -> dict:
  """The environment of a `python -m ezclip_jax.main` test run: 2 CPU devices, the checkout importable."""
  import os  # pylint: disable=g-import-not-at-top

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env


def train_records(workdir) -> list[dict]:
  """The `train` records of WORKDIR/metrics.jsonl."""
  from ezclip_jax import metrics  # pylint: disable=g-import-not-at-top

  return [r for r in metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl") if r["split"] == "train"]


def trained_params(workdir) -> list:
  """The leaves of the params `load_pretrained(WORKDIR)` loads (its best, else its latest checkpoint)."""
  from ezclip_jax import load_pretrained  # pylint: disable=g-import-not-at-top

  _, variables = load_pretrained(workdir)
  return jax.tree.leaves(variables["params"])
