"""Our Flax model against independent PyTorch references on the same weights.

* Plain CLIP: a random-init open_clip model (QuickGELU, OpenAI layout), converted
  with our converter (prompts off, adapters at their zero init) must give
  open_clip's `encode_image` per frame and its `encode_text`.
* EZ-CLIP: every tensor random, our model against `convert.torch_model`, a
  PyTorch forward written from the paper's equations.
Both in float32, max relative error <= 1e-5.
"""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from convert import mapping
from convert import torch_model
from convert import torch_to_flax
from ezclip_jax import load_pretrained
from ezclip_jax import model as model_lib
from tests import references

TOLERANCE = 1e-5
TINY = references.CONVERTIBLE_TINY


def max_relative_error(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


def random_ids(config, count: int, seed: int = 0) -> np.ndarray:
  """Token ids shaped like CLIP's: start token, words, end token (the largest id), zero padding."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((count, config.context_length), np.int32)
  for row, length in enumerate(rng.integers(1, config.context_length - 1, count)):
    ids[row, 0] = config.vocab_size - 2
    ids[row, 1:length] = rng.integers(1, config.vocab_size - 2, length - 1)
    ids[row, length] = config.vocab_size - 1
  return ids


def random_video(config, batch: int, seed: int = 0) -> np.ndarray:
  res = config.image_resolution
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, config.num_frames, res, res, 3)).astype(np.float32)


def encode(directory, video, ids):
  model, variables = load_pretrained(directory)
  video_fn = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_video))
  text_fn = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_text))
  return np.asarray(video_fn(variables, video)), np.asarray(text_fn(variables, ids))


def open_clip_model(size: str):
  open_clip = references.import_open_clip()
  torch.manual_seed(0)
  if size == "ViT-B/16":
    return open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval(), model_lib.VIT_B_16
  vision = open_clip.CLIPVisionCfg(layers=TINY.vision_layers, width=TINY.vision_width, head_width=64,
                                   patch_size=TINY.vision_patch_size, image_size=TINY.image_resolution)
  text = open_clip.CLIPTextCfg(context_length=TINY.context_length, vocab_size=TINY.vocab_size,
                               width=TINY.text_width, heads=TINY.text_heads, layers=TINY.text_layers)
  return open_clip.model.CLIP(TINY.embed_dim, vision, text, quick_gelu=True).eval(), TINY


@pytest.mark.parametrize("size", ["tiny", pytest.param("ViT-B/16", marks=pytest.mark.slow)])
def test_plain_clip_matches_open_clip(tmp_path, size):
  reference, config = open_clip_model(size)
  torch.save(reference.state_dict(), tmp_path / "open_clip.pt")
  frames = 2
  assert torch_to_flax.main([str(tmp_path / "open_clip.pt"), str(tmp_path / "flax"),
                             "--num-frames", str(frames), "--no-prompts"]) == 0
  video = random_video(dataclasses.replace(config, num_frames=frames), batch=2)
  ids = random_ids(config, 3)
  got_video, got_text = encode(tmp_path / "flax", video, ids)
  with torch.inference_mode():
    images = torch.from_numpy(video).flatten(0, 1).permute(0, 3, 1, 2)
    want_video = reference.encode_image(images).view(2, frames, -1).numpy()
    want_text = reference.encode_text(torch.from_numpy(ids).long()).numpy()
  assert got_video.shape == want_video.shape and got_text.shape == want_text.shape
  assert max_relative_error(got_video, want_video) <= TOLERANCE
  assert max_relative_error(got_text, want_text) <= TOLERANCE


def _convert_random_ezclip(tmp_path, config, seed=0):
  state = references.random_ezclip_state(config, seed)
  torch.save({"model_state_dict": state}, tmp_path / "ezclip.pt")
  assert torch_to_flax.main([str(tmp_path / "ezclip.pt"), str(tmp_path / "flax")]) == 0
  return torch_model.EZCLIPReference.from_state_dict(state, config).eval()


@pytest.mark.parametrize("config, batch", [
    (TINY, 2),
    (dataclasses.replace(TINY, use_prompts=False, t_adapter=True), 2),
    (dataclasses.replace(TINY, use_prompts=False), 2),
    pytest.param(model_lib.VIT_B_16, 1, marks=pytest.mark.slow),
], ids=["tiny", "tiny-t_adapter", "tiny-no_prompts", "ViT-B/16"])
def test_ezclip_matches_torch_reference(tmp_path, config, batch):
  reference = _convert_random_ezclip(tmp_path, config)
  video, ids = random_video(config, batch), random_ids(config, 3)
  got_video, got_text = encode(tmp_path / "flax", video, ids)
  with torch.inference_mode():
    want_video = reference.encode_video(torch.from_numpy(video)).numpy()
    want_text = reference.encode_text(torch.from_numpy(ids).long()).numpy()
  assert got_video.shape == (batch, config.num_frames, config.embed_dim)
  assert max_relative_error(got_video, want_video) <= TOLERANCE
  assert max_relative_error(got_text, want_text) <= TOLERANCE
  # The temporal parts matter: the same weights without prompts give other features.
  if config.use_prompts:
    state = references.random_ezclip_state(config)
    without = {k: v for k, v in state.items() if "T_prompt" not in k}
    plain = torch_model.EZCLIPReference.from_state_dict(
        without, dataclasses.replace(config, use_prompts=False)).eval()
    with torch.inference_mode():
      assert max_relative_error(plain.encode_video(torch.from_numpy(video)).numpy(), want_video) > 1e-2


def test_reference_has_the_official_key_set():
  """Facts read off the official EZ-CLIP code (ViT-B/16, 8 frames, prompts on)."""
  with torch.device("meta"):
    state = torch_model.EZCLIPReference(model_lib.VIT_B_16).state_dict()
  assert len(state) == 400
  assert sum(v.numel() for v in state.values()) == 154_831_617
  assert list(state)[:4] == ["positional_embedding", "text_projection", "logit_scale", "visual.class_embedding"]
  assert state["visual.transformer.T_prompt_embeddings"].shape == (12, 8, 768)
  assert state["transformer.resblocks.11.Adapter.D_fc1.weight"].shape == (128, 512)
  table = mapping.parameter_table(model_lib.VIT_B_16)
  assert [e.torch_key for e in table] == list(state)
