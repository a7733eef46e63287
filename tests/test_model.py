"""Shapes, parameter counts, initialisation and temporal behaviour of the Flax EZ-CLIP."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ezclip_jax import model as model_lib
from tests import references
from tests.references import EOT, TINY



@functools.cache
def _jitted(config, method, train=False):
  model = model_lib.EZCLIP(config)
  fn = getattr(model_lib.EZCLIP, method)
  return jax.jit(lambda v, x, rng: model.apply(v, x, train, method=fn, rngs={"dropout": rng}))


def encode_video(config, variables, video, train=False, seed=0):
  return _jitted(config, "encode_video", train)(variables, video, jax.random.key(seed))


def encode_text(config, variables, ids):
  return _jitted(config, "encode_text")(variables, ids, jax.random.key(0))


def _abstract_params(config):
  return jax.eval_shape(lambda: model_lib.init_variables(config, jax.random.key(0)))["params"]


def _count(tree, predicate=lambda path: True):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return sum(math.prod(leaf.shape) for path, leaf in flat
             if predicate("/".join(k.key for k in path)))


def test_vit_b16_parameter_counts():
  params = _abstract_params(model_lib.VIT_B_16)
  trainable = _count(params, lambda p: "prompt" in p or "Adapter" in p)
  # Hand-derived: prompts 12*8*768; visual adapters 12*(768*192+192+192*768+768);
  # text adapters 12*(512*128+128+128*512+512).
  assert trainable == 73_728 + 3_550_464 + 1_580_544 == 5_204_736
  temporal = 8 * 768
  # OpenAI's ViT-B/16 CLIP has 149,620,737 parameters.
  assert _count(params) - trainable - temporal == 149_620_737


@pytest.mark.parametrize("arch, clip_params", [("ViT-B/32", 151_277_313), ("ViT-L/14", 427_616_513)])
def test_other_architectures_match_openai_counts(arch, clip_params):
  config = model_lib.ARCHITECTURES[arch]
  params = _abstract_params(config)
  ezclip_only = _count(params, lambda p: "prompt" in p or "Adapter" in p or "temporal" in p)
  assert _count(params) - ezclip_only == clip_params


def test_output_shapes_and_dtypes():
  variables = model_lib.init_variables(TINY, jax.random.key(0))
  video = jnp.ones((3, 4, 32, 32, 3))
  ids = jnp.zeros((5, 77), jnp.int32).at[:, 0].set(998).at[:, 3].set(EOT)
  frames = encode_video(TINY, variables, video)
  texts = encode_text(TINY, variables, ids)
  assert frames.shape == (3, 4, 32) and frames.dtype == jnp.float32
  assert texts.shape == (5, 32) and texts.dtype == jnp.float32


def test_wrong_frame_count_is_a_clear_error():
  variables = model_lib.init_variables(TINY, jax.random.key(0))
  model = model_lib.EZCLIP(TINY)
  with pytest.raises(ValueError, match="num_frames=4"):
    model.apply(variables, jnp.ones((1, 5, 32, 32, 3)), method=model.encode_video)


def test_official_initialisation():
  params = model_lib.init_variables(dataclasses.replace(TINY, vision_width=128),
                                    jax.random.key(1))["params"]
  prompts = np.asarray(params["visual"]["transformer"]["T_prompt_embeddings"])
  bound = math.sqrt(6.0 / (3 * 16 * 16 + 128))  # official: 16x16 patch whatever the model
  assert prompts.shape == (2, 4, 128)
  assert np.abs(prompts).max() <= bound and np.abs(prompts).max() > 0.95 * bound
  assert not np.asarray(params["visual"]["temporal_embedding"]).any()
  for tower in (params["visual"]["transformer"], params["transformer"]):
    adapter = tower["resblocks_0"]["Adapter"]
    assert not np.asarray(adapter["D_fc2"]["kernel"]).any() and not np.asarray(adapter["D_fc2"]["bias"]).any()
    fc1 = np.asarray(adapter["D_fc1"]["kernel"])
    fan_in = fc1.shape[0]  # torch's default Linear init: U(+-1/sqrt(fan_in))
    assert np.abs(fc1).max() <= 1 / math.sqrt(fan_in) and fc1.std() > 0.5 / math.sqrt(3 * fan_in)
  assert float(params["logit_scale"]) == pytest.approx(math.log(1 / 0.07))


def test_drop_path_rates_follow_official_linspace():
  config = dataclasses.replace(model_lib.VIT_B_16, drop_path_rate=0.1)
  np.testing.assert_allclose(model_lib.drop_path_rates(config), [0.1 * i / 11 for i in range(12)])


def _video(batch, config, seed=0):
  res = config.image_resolution
  return np.random.default_rng(seed).standard_normal((batch, config.num_frames, res, res, 3), np.float32)


def test_frame_order_matters_only_through_the_temporal_parts():
  video = _video(2, TINY)
  perm = np.array([2, 0, 3, 1])
  frame_only = dataclasses.replace(TINY, use_prompts=False)
  variables = references.random_variables(frame_only)
  variables["params"]["visual"]["temporal_embedding"] = jnp.zeros_like(
      variables["params"]["visual"]["temporal_embedding"])
  out = encode_video(frame_only, variables, video)
  out_perm = encode_video(frame_only, variables, video[:, perm])
  np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-5, atol=1e-6)

  variables = references.random_variables(TINY)
  out = encode_video(TINY, variables, video)
  out_perm = encode_video(TINY, variables, video[:, perm])
  assert np.abs(np.asarray(out_perm) - np.asarray(out)[:, perm]).max() > 1e-3


@pytest.mark.parametrize("variant", [{}, {"use_prompts": False, "t_adapter": True}])
def test_videos_in_a_batch_do_not_interact(variant):
  # The official T-Adapter reshapes frames of different videos together when
  # B > 1; ours must give each video the same result alone or in a batch.
  config = dataclasses.replace(TINY, **variant)
  variables = references.random_variables(config)
  video = _video(3, config)
  together = encode_video(config, variables, video)
  alone = jnp.concatenate([encode_video(config, variables, video[i:i + 1]) for i in range(3)])
  np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_text_features_ignore_tokens_after_the_end_token():
  variables = references.random_variables(TINY)
  ids = np.zeros((2, 77), np.int32)
  ids[:, :4] = [998, 320, 125, EOT]
  ids[1, 10:20] = 555  # after EOT: invisible to the causal attention at the EOT position
  out = encode_text(TINY, variables, jnp.asarray(ids))
  np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-6)


def test_dropout_only_in_training():
  config = dataclasses.replace(TINY, drop_path_rate=0.5, prompt_dropout=0.5)
  variables = references.random_variables(config)
  video = _video(2, config)
  a = encode_video(config, variables, video, seed=0)
  b = encode_video(config, variables, video, seed=1)
  np.testing.assert_array_equal(a, b)
  train = [encode_video(config, variables, video, train=True, seed=s) for s in (0, 1)]
  assert np.abs(np.asarray(train[0]) - np.asarray(train[1])).max() > 1e-4


def test_remat_changes_nothing_numerically():
  variables = references.random_variables(TINY)
  video = _video(2, TINY)

  def loss(params, config):
    model = model_lib.EZCLIP(config)
    return model.apply({"params": params}, video, method=model.encode_video).sum()

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  plain = grad(variables["params"], TINY)
  remat = grad(variables["params"], dataclasses.replace(TINY, remat=True))
  for x, y in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_stays_close_to_float32():
  variables = references.random_variables(TINY)
  video = _video(2, TINY)
  out32 = encode_video(TINY, variables, video)
  out16 = encode_video(dataclasses.replace(TINY, dtype="bfloat16"), variables, video)
  assert out16.dtype == jnp.float32
  rel = np.abs(np.asarray(out16) - np.asarray(out32)).max() / np.abs(np.asarray(out32)).max()
  assert 0 < rel < 5e-2


def test_config_json_round_trip_and_unknown_key():
  assert model_lib.ModelConfig.from_json(TINY.to_json()) == TINY
  with pytest.raises(ValueError, match="nonsense"):
    model_lib.ModelConfig.from_json('{"nonsense": 1}')


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpus():
  assert model_lib.resolve_dtype("auto", "tpu") == "bfloat16"
  assert model_lib.resolve_dtype("auto", "gpu") == model_lib.resolve_dtype("auto", "cuda") == "bfloat16"
  assert model_lib.resolve_dtype("auto", "cpu") == "float32"
  assert model_lib.resolve_dtype("float32", "tpu") == "float32"
  assert model_lib.resolve_dtype("bfloat16", "cpu") == "bfloat16"
