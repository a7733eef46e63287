"""The sharded train step: mesh-independent results, frozen parameters untouched."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from configs import common
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from ezclip_jax import transforms
from tests import references

CONFIG = references.TINY_WITH_DROPOUT
TRAINABLE = optim.DEFAULT_TRAINABLE


def _batch(seed=0, batch=8):
  return references.train_batch(CONFIG, seed, batch)


def _run_steps(mesh_shape, devices, steps=2):
  mesh = sharding.make_mesh(mesh_shape, devices)
  tx = optim.make_optimizer(references.optim_config(), total_steps=10, warmup_steps=1)
  params = references.random_variables(CONFIG)["params"]
  train_step = step_lib.create_train_step(CONFIG, tx, mesh, params, trainable_patterns=TRAINABLE)
  state = train_step.state
  losses = []
  for i in range(steps):
    state, metrics = train_step.step(state, _batch(i))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state)


@pytest.fixture(scope="module")
def single_device_run():
  return _run_steps((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("mesh_shape", [(4, 2, 1), (2, 2, 2)])
def test_sharded_steps_equal_single_device(single_device_run, mesh_shape):
  assert len(jax.devices()) == 8
  want_losses, want_state = single_device_run
  losses, state = _run_steps(mesh_shape, jax.devices())
  np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(state.trainable), jax.tree.leaves(want_state.trainable)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_only_trainable_parameters_change(single_device_run):
  _, state = single_device_run
  before = references.random_variables(CONFIG)["params"]
  trainable, frozen = optim.split_params(before, TRAINABLE)
  for got, want in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(got, want)
  flat_before = jax.tree_util.tree_flatten_with_path(trainable)[0]
  flat_after = jax.tree.leaves(state.trainable)
  names = {jax.tree_util.keystr(path) for path, _ in flat_before}
  assert any("T_prompt_embeddings" in n for n in names) and any("Adapter" in n for n in names)
  assert not any("temporal_embedding" in n or "logit_scale" in n for n in names)
  for (path, old), new in zip(flat_before, flat_after):
    assert not np.array_equal(old, new), jax.tree_util.keystr(path)
  assert int(state.step) == 2


def test_frozen_parameters_are_not_in_the_optimizer_state(single_device_run):
  _, state = single_device_run
  frozen_size = sum(x.size for x in jax.tree.leaves(state.frozen))
  trainable_size = sum(x.size for x in jax.tree.leaves(state.trainable))
  opt_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
  assert opt_size < 2 * trainable_size + 100 < frozen_size


def test_batch_without_colour_equals_identity_colour():
  params = references.random_variables(CONFIG)["params"]
  model = model_lib.EZCLIP(CONFIG)
  batch = _batch()
  identity = {**batch, "color": np.tile(transforms.NO_COLOR_CHANGE, batch["color"].shape[:2] + (1,))}
  plain = {k: v for k, v in batch.items() if k != "color"}
  loss = jax.jit(lambda b: step_lib.training_loss(params, b, jax.random.key(0), model=model, motion_weight=1.0)[0])
  jittered = float(loss(batch))
  np.testing.assert_allclose(float(loss(plain)), float(loss(identity)), rtol=1e-6)
  assert abs(jittered - float(loss(plain))) > 1e-4  # the jitter in `batch` does change the input


def _tpu_devices(topology):
  """The devices of a TPU slice, from libtpu's compiler (no TPU needed; the [test] extra installs it)."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other processes may hold libtpu's lock
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return topologies.get_topology_desc(platform="tpu", topology_name=topology).devices


def test_colour_jitter_adds_little_memory_traffic_to_the_tpu_step():
  # The jitter once took a per-pixel gather: 180,000 bytes of traffic per input byte on a v5e
  # (16x the whole ViT-B/16 step). Now it is a few dozen float32 passes over the clip (~140
  # bytes per input byte here): 1.2% of the ViT-B/16 step's bytes and 0.05% of its FLOPs.
  mesh = sharding.make_mesh((-1, 1, 1), _tpu_devices("v5e:2x2"))
  config = dataclasses.replace(model_lib.TINY, dtype="bfloat16")  # 8 frames of 64x64
  tx = optim.make_optimizer(references.optim_config(), total_steps=10, warmup_steps=1)
  costs = {}
  for color in (False, True):
    train_step = step_lib.create_train_step(config, tx, mesh, color=color)
    batch = step_lib.abstract_train_batch(config, 8, train_step.batch_shardings)
    costs[color] = train_step.step.lower(train_step.state, batch).compile().cost_analysis()
  res = config.image_resolution
  video_bytes = 8 // 4 * config.num_frames * res * res * 3  # per chip
  added_bytes = costs[True]["bytes accessed"] - costs[False]["bytes accessed"]
  added_flops = costs[True]["flops"] - costs[False]["flops"]
  assert 0 < added_bytes < 200 * video_bytes, added_bytes / video_bytes
  assert 0 < added_flops < 400 * video_bytes, added_flops / video_bytes
