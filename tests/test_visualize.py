"""Tests for ezclip_jax/visualize.py: attention maps against an independent PyTorch recomputation.

The reference runs `convert.torch_model` (our PyTorch EZ-CLIP written from the paper) on the
same weights and clip, captures what its last vision block feeds to attention (ln_1 of
[CLS, patches, prompt token] per frame), and recomputes softmax(q k^T / sqrt(d)) from the
block's q/k projections.
"""

import dataclasses
import math
import pathlib

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from convert import flax_to_torch
from convert import torch_model
from ezclip_jax import checkpoint
from ezclip_jax import load_pretrained
from ezclip_jax import model as model_lib
from ezclip_jax import visualize
from tests.references import CLIP_MEAN, CLIP_STD, decoded_frames, eval_clip

NUM_FRAMES = 6
VARIANTS = {
    "prompts": dataclasses.replace(model_lib.TINY, num_frames=NUM_FRAMES),
    "t_adapter": dataclasses.replace(model_lib.TINY, num_frames=NUM_FRAMES, use_prompts=False, t_adapter=True),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def ckpt(request, tmp_path_factory) -> pathlib.Path:
  config = VARIANTS[request.param]
  params = model_lib.init_variables(config, jax.random.key(0))["params"]
  # Noise on every tensor, so adapters (zero-initialised) and temporal parts shape the attention.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32), params)
  return checkpoint.save_pretrained(tmp_path_factory.mktemp(request.param) / "ckpt", config, params)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> pathlib.Path:
  """A frame folder of 10 smooth random 72x88 frames."""
  folder = tmp_path_factory.mktemp("video") / "clip"
  folder.mkdir()
  rng = np.random.default_rng(1)
  for i, coarse in enumerate(rng.integers(0, 256, (10, 9, 11, 3), dtype=np.uint8)):
    Image.fromarray(coarse).resize((88, 72), Image.BILINEAR).save(folder / f"img_{i + 1:05d}.jpg", quality=95)
  return folder


def torch_cls_patch_attention(params, config: model_lib.ModelConfig, clip: np.ndarray) -> np.ndarray:
  """CLS -> patch attention of the last vision block, mean over heads, from the PyTorch reference.

  Returns:
    float64 `[T, grid, grid]`.
  """
  reference = torch_model.EZCLIPReference.from_state_dict(flax_to_torch.to_state_dict(params, config), config)
  block = reference.visual.transformer.resblocks[-1]
  inputs = []
  hook = block.attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
  video = torch.from_numpy(((clip / 255.0 - CLIP_MEAN) / CLIP_STD).astype(np.float32))[None]
  with torch.inference_mode():
    reference.eval().encode_video(video)
  hook.remove()
  grid = config.image_resolution // config.vision_patch_size
  y = inputs[-1].double()  # the spatial call: ln_1 of each frame's tokens
  assert y.shape == (config.num_frames, 1 + grid * grid + config.use_prompts, config.vision_width)
  width, heads = config.vision_width, config.vision_heads
  weight, bias = block.attn.in_proj_weight.detach().double(), block.attn.in_proj_bias.detach().double()
  q = (y @ weight[:width].T + bias[:width]).unflatten(-1, (heads, -1)).transpose(1, 2)
  k = (y @ weight[width:2 * width].T + bias[width:2 * width]).unflatten(-1, (heads, -1)).transpose(1, 2)
  probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
  maps = probs.mean(dim=1)[:, 0, 1:1 + grid * grid]
  with torch.inference_mode():  # torch's own head-averaged weights agree
    _, torch_weights = block.attn(y.float(), y.float(), y.float(), need_weights=True, average_attn_weights=True)
  np.testing.assert_allclose(torch_weights[:, 0, 1:1 + grid * grid].numpy(), maps.numpy(), atol=1e-6)
  return maps.reshape(-1, grid, grid).numpy()


def test_attention_maps_equal_the_torch_recomputation(ckpt, video):
  model, variables = load_pretrained(ckpt)
  config = model.config
  clip = visualize.load_clip(video, config)
  np.testing.assert_array_equal(clip, eval_clip(decoded_frames(video), config.num_frames, config.image_resolution))
  maps = visualize.cls_patch_attention(model, variables, clip)
  want = torch_cls_patch_attention(variables["params"], config, clip)
  assert maps.shape == want.shape == (NUM_FRAMES, 4, 4) and maps.dtype == np.float32
  assert np.abs(maps - want).max() <= 1e-5 * want.max()
  assert want.max() > 1.5 * want.min()  # the maps are not flat, so the comparison means something
  assert (want.sum(axis=(1, 2)) < 1).all()  # CLS's own weight (and the prompt token's) are left out


def test_pngs_show_the_maps(ckpt, video, tmp_path):
  out = tmp_path / "out"
  assert visualize.main(["--checkpoint", str(ckpt), str(video), "--out", str(out)]) == 0
  names = [f"frame_{t}.png" for t in range(NUM_FRAMES)] + ["contact_sheet.png"]
  assert sorted(p.name for p in out.iterdir()) == sorted(names)
  images = [np.asarray(Image.open(out / name)) for name in names]
  assert all(image.shape == (64, 64, 3) and image.dtype == np.uint8 for image in images[:-1])
  assert images[-1].shape == (2 * 64, 4 * 64, 3)  # ceil(6 / 4) rows of min(6, 4) tiles

  model, variables = load_pretrained(ckpt)
  clip = eval_clip(decoded_frames(video), NUM_FRAMES, 64)
  maps = torch_cls_patch_attention(variables["params"], model.config, clip)
  heat = (maps - maps.min()) / (maps.max() - maps.min())
  heat_pixels = np.kron(heat, np.ones((1, 16, 16)))  # patch (i, j) covers rows 16i.., columns 16j..
  # Channel sum = 0.4 * frame's + 0.6 * 765 * heat, up to rounding each channel.
  got = np.stack(images[:-1]).astype(np.float64).sum(axis=-1)
  want = 0.4 * clip.astype(np.float64).sum(axis=-1) + 0.6 * 765 * heat_pixels
  assert np.abs(got - want).max() <= 1.5 + 1e-3

  sheet = images[-1]
  for t, image in enumerate(images[:-1]):
    row, column = divmod(t, 4)
    np.testing.assert_array_equal(sheet[row * 64:(row + 1) * 64, column * 64:(column + 1) * 64], image)
  assert not sheet[64:, 2 * 64:].any()  # the two empty tiles


def test_overlay_channels_never_decrease_with_the_heat():
  heat = np.linspace(0, 1, 64).reshape(8, 8)
  frame = np.full((64, 64, 3), 90, np.uint8)
  pixels = visualize.overlay(frame, heat)[::8, ::8].reshape(-1, 3).astype(int)
  assert (np.diff(pixels, axis=0) >= 0).all() and (np.diff(pixels.sum(axis=1)) > 0).all()
  np.testing.assert_array_equal(pixels[0], [36, 36, 36])  # 0.4 * 90: no heat
  np.testing.assert_array_equal(pixels[-1], [189, 189, 189])  # 0.4 * 90 + 0.6 * 255: white


def test_bad_inputs(ckpt, tmp_path, capsys):
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00garbage" * 100)
  (tmp_path / "empty").mkdir()
  assert visualize.main(["--checkpoint", str(ckpt), str(corrupt), "--out", str(tmp_path / "o")]) == 1
  assert f"error: Unreadable video {corrupt}: " in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
  for path in (tmp_path / "empty", tmp_path / "missing.mp4"):
    assert visualize.main(["--checkpoint", str(ckpt), str(path), "--out", str(tmp_path / "o")]) == 2
    assert f"error: {path} is neither a video file nor a folder of JPEG frames." in capsys.readouterr().err
  assert visualize.main(["--checkpoint", str(tmp_path), str(corrupt), "--out", str(tmp_path / "o")]) == 2
  assert "model_config.json not found" in capsys.readouterr().err
