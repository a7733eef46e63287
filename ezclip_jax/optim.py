"""Which parameters train, and how: AdamW with warmup + cosine, visual-lr ratio, clipping, accumulation.

The official recipe trains only parameters whose name contains `prompt` or
`Adapter` (temporal prompts and adapters); the CLIP backbone, the temporal
embedding and `logit_scale` stay frozen. Frozen parameters are kept out of the
optimizer state entirely.
"""

from collections.abc import Sequence
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import optax

# The official filter: `'prompt' in name or 'Adapter' in name`.
DEFAULT_TRAINABLE = ("prompt", "Adapter")


def _path_name(path: tuple[str, ...]) -> str:
  return "/".join(path)


def split_params(params: dict, trainable_patterns: Sequence[str]) -> tuple[dict, dict]:
  """Splits a params tree into (trainable, frozen) trees.

  Args:
    params: nested params dict.
    trainable_patterns: regular expressions searched in the '/'-joined parameter path
      (e.g. 'visual/transformer/resblocks_0/Adapter/D_fc1/kernel').

  Returns:
    Two nested dicts with disjoint leaves that together hold every parameter.
  """
  compiled = [re.compile(p) for p in trainable_patterns]
  flat = flax.traverse_util.flatten_dict(params)
  trainable = {k: v for k, v in flat.items() if any(p.search(_path_name(k)) for p in compiled)}
  if not trainable:
    raise ValueError(f"no parameter matches the trainable patterns {list(trainable_patterns)}")
  frozen = {k: v for k, v in flat.items() if k not in trainable}
  return flax.traverse_util.unflatten_dict(trainable), flax.traverse_util.unflatten_dict(frozen)


def merge_params(trainable: dict, frozen: dict) -> dict:
  """Inverse of `split_params`."""
  flat = flax.traverse_util.flatten_dict(frozen)
  flat.update(flax.traverse_util.flatten_dict(trainable))
  return flax.traverse_util.unflatten_dict(flat)


def staircase_step(step: jax.Array, steps_per_epoch: int, every: int) -> jax.Array:
  """The step whose learning rate the official loop still uses at `step`.

  The official loop sets the lr at an epoch's first iteration and at every iteration whose
  1-based index in the epoch is a multiple of `every` (10): 0, 9, 19, 29, ... within each epoch.
  """
  epoch, index = step // steps_per_epoch, step % steps_per_epoch
  last_set = jnp.where(index + 1 < every, 0, (index + 1) // every * every - 1)
  return epoch * steps_per_epoch + last_set


def learning_rate_schedule(base_lr: float, warmup_steps: int, total_steps: int, *, staircase_every: int = 0,
                           steps_per_epoch: int = 0) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay to 0 at `total_steps` (the official shape).

  Args:
    base_lr: the peak learning rate.
    warmup_steps: linear-warmup updates.
    total_steps: updates in the whole run.
    staircase_every: 0: a new lr every update; N: the official staircase (`staircase_step`).
    steps_per_epoch: updates per epoch (needed by the staircase).

  Returns:
    update count -> learning rate.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=base_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)
  if not staircase_every:
    return schedule
  if steps_per_epoch < 1:
    raise ValueError(f"optim.lr_staircase_every={staircase_every} needs the steps per epoch, got {steps_per_epoch}")
  return lambda count: schedule(staircase_step(count, steps_per_epoch, staircase_every))


def scale_subtree(name: str, factor: float) -> optax.GradientTransformation:
  """Multiplies the updates of the top-level subtree `name` by `factor`.

  After AdamW this equals giving that subtree the learning rate lr * factor (the
  decoupled weight decay is scaled by lr too, as in torch's AdamW param groups).
  """

  def update(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: u * factor if path[0].key == name else u, updates)
    return scaled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_schedule(config: ml_collections.ConfigDict, total_steps: int, warmup_steps: int,
                  steps_per_epoch: int = 0) -> optax.Schedule:
  """The learning rate of each optimizer update that `make_optimizer` applies (same arguments)."""
  return learning_rate_schedule(config.lr, warmup_steps, total_steps, staircase_every=config.lr_staircase_every,
                                steps_per_epoch=steps_per_epoch)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int, warmup_steps: int,
                   steps_per_epoch: int = 0) -> optax.GradientTransformation:
  """AdamW over the trainable tree.

  Args:
    config: `config.optim` with lr, lr_staircase_every (0: per update), visual_lr_ratio, b1,
      b2, eps, weight_decay, clip_norm (0 disables) and grad_accum_steps.
    total_steps: optimizer updates in the whole run (after accumulation).
    warmup_steps: linear-warmup updates.
    steps_per_epoch: optimizer updates per epoch (for `lr_staircase_every`).

  Returns:
    The optax transformation.
  """
  tx = optax.adamw(make_schedule(config, total_steps, warmup_steps, steps_per_epoch), b1=config.b1, b2=config.b2,
                   eps=config.eps, weight_decay=config.weight_decay)
  if config.visual_lr_ratio != 1.0:
    tx = optax.chain(tx, scale_subtree("visual", config.visual_lr_ratio))
  if config.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  if config.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
  return tx
