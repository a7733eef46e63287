"""Optimizer pieces: official schedule, trainable split, visual lr ratio, accumulation, bf16 compute."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from ezclip_jax import optim
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from tests import references


def test_schedule_is_the_official_warmup_cosine():
  # Official WarmupCosineAnnealingLR (per epoch there, per step here): lr * t / warmup while
  # t < warmup, then lr * (cos(pi * (t - warmup) / (total - warmup)) + 1) / 2.
  lr, warmup, total = 1e-4, 50, 1500
  schedule = optim.learning_rate_schedule(lr, warmup, total)
  for t in (0, 1, 25, 49, 50, 51, 400, 775, 1499, 1500):
    want = lr * t / warmup if t < warmup else lr * (math.cos(math.pi * (t - warmup) / (total - warmup)) + 1) / 2
    assert float(schedule(t)) == pytest.approx(want, rel=1e-5, abs=1e-5 * lr), t


def _official_loop_lrs(lr, warmup_epochs, epochs, steps_per_epoch, every=10):
  """The lr of each iteration of the official train.py loop: `lr_scheduler.step(epoch + kkk / len(loader))`
  when `(kkk + 1) == 1 or (kkk + 1) % 10 == 0`, WarmupCosineAnnealingLR in fractional epochs."""

  def scheduler(t):
    if t < warmup_epochs:
      return lr * t / warmup_epochs
    return lr * (math.cos(math.pi * min((t - warmup_epochs) / (epochs - warmup_epochs), 1.0)) + 1) / 2

  lrs = []
  for epoch in range(epochs):
    for kkk in range(steps_per_epoch):
      if (kkk + 1) == 1 or (kkk + 1) % every == 0:
        current = scheduler(epoch + kkk / steps_per_epoch)
      lrs.append(current)
  return lrs


def test_staircase_reproduces_the_official_loop():
  lr, warmup_epochs, epochs, per_epoch = 1e-3, 1, 3, 25
  want = _official_loop_lrs(lr, warmup_epochs, epochs, per_epoch)
  # Hand-checked corners: steps 0-8 keep lr(0) = 0; steps 9-18 lr(9/25 epoch); a new epoch restarts at 0.
  assert want[8] == 0 and want[9] == want[18] == pytest.approx(lr * 9 / 25) and want[25] == want[33] == lr
  schedule = optim.learning_rate_schedule(lr, warmup_epochs * per_epoch, epochs * per_epoch, staircase_every=10,
                                          steps_per_epoch=per_epoch)
  np.testing.assert_allclose([float(schedule(t)) for t in range(epochs * per_epoch)], want, rtol=1e-5, atol=1e-9)
  per_step = optim.learning_rate_schedule(lr, warmup_epochs * per_epoch, epochs * per_epoch)
  official_per_step = _official_loop_lrs(lr, warmup_epochs, epochs, per_epoch, every=1)
  np.testing.assert_allclose([float(per_step(t)) for t in range(epochs * per_epoch)], official_per_step,
                             rtol=1e-5, atol=1e-9)
  config = references.optim_config()
  config.lr_staircase_every = 10
  with pytest.raises(ValueError, match="lr_staircase_every=10 needs the steps per epoch"):
    optim.make_optimizer(config, total_steps=10, warmup_steps=1)


def test_split_follows_the_official_name_filter():
  params = references.random_variables(references.TINY)["params"]
  trainable, frozen = optim.split_params(params, optim.DEFAULT_TRAINABLE)
  names = lambda tree: {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert all("prompt" in n or "Adapter" in n for n in names(trainable))
  assert not any("prompt" in n or "Adapter" in n for n in names(frozen))
  merged = optim.merge_params(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="no parameter matches"):
    optim.split_params(params, ("nothing_has_this_name",))


def _steps(optim_overrides=None, model_overrides=None, steps=2):
  config = dataclasses.replace(references.TINY_WITH_DROPOUT, **(model_overrides or {}))
  optim_config = references.optim_config()
  optim_config.update(optim_overrides or {})
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tx = optim.make_optimizer(optim_config, total_steps=10, warmup_steps=0)  # lr > 0 from the first update
  params = references.random_variables(config)["params"]
  train_step = step_lib.create_train_step(config, tx, mesh, params, trainable_patterns=optim.DEFAULT_TRAINABLE)
  state = train_step.state
  before = jax.device_get(state.trainable)
  states = []
  for i in range(steps):
    state, _ = train_step.step(state, references.train_batch(config, i))
    states.append(jax.device_get(state))
  return before, states


def test_visual_lr_ratio_scales_only_the_visual_tower():
  before, (state,) = _steps({"visual_lr_ratio": 0.0}, steps=1)
  np.testing.assert_array_equal(state.trainable["visual"]["transformer"]["T_prompt_embeddings"],
                                before["visual"]["transformer"]["T_prompt_embeddings"])
  text = state.trainable["transformer"]["resblocks_0"]["Adapter"]["D_fc2"]["kernel"]
  assert not np.array_equal(text, before["transformer"]["resblocks_0"]["Adapter"]["D_fc2"]["kernel"])


def test_gradient_accumulation_updates_every_k_steps():
  before, (first, second) = _steps({"grad_accum_steps": 2})
  for a, b in zip(jax.tree.leaves(first.trainable), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(second.trainable), jax.tree.leaves(before)))


def test_bfloat16_compute_keeps_float32_params_and_optimizer_state():
  _, (state,) = _steps(model_overrides={"dtype": "bfloat16"}, steps=1)
  for leaf in jax.tree.leaves((state.trainable, state.frozen)):
    assert leaf.dtype == np.float32
  assert all(leaf.dtype in (np.float32, np.int32) for leaf in jax.tree.leaves(state.opt_state))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.trainable))
