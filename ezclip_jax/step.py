"""The train step: state, loss, the pure step function, and the one helper that shards and jits it.

`train_step(state, batch, *, model, tx, motion_weight)` is pure (its dropout key is
fold_in(state key, step), so a resumed run is exact). `create_train_step` is the one
place that derives the state's shardings from the params' logical axes, places (or,
for compiling only, describes) the initial state on the mesh, and jits the step with
explicit in/out shardings and the state donated. Training, the TPU planner, the
benchmarks and the tests all build their step with it.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from ezclip_jax import input_pipeline
from ezclip_jax import losses
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import sharding
from ezclip_jax import transforms


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries between steps (and saves in checkpoints).

  Attributes:
    step: optimizer steps taken (micro-steps when accumulating gradients).
    trainable: parameters the optimizer updates (prompts and adapters by default).
    frozen: the rest of the parameters; not in the optimizer state.
    opt_state: the optax state of `trainable`.
    rng: raw key data (uint32) of the run's base key; step keys fold in `step`.
  """
  step: jax.Array
  trainable: Any
  frozen: Any
  opt_state: Any
  rng: jax.Array

  @property
  def params(self) -> dict:
    return optim.merge_params(self.trainable, self.frozen)


def video_text_logits(frame_embeddings: jax.Array, text_embeddings: jax.Array,
                      logit_scale: jax.Array) -> jax.Array:
  """Scaled cosine similarities of mean-pooled videos `[B, D]` x texts `[N, D]` -> `[B, N]`."""
  video = frame_embeddings.mean(axis=1)
  video = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
  text = text_embeddings / jnp.linalg.norm(text_embeddings, axis=-1, keepdims=True)
  return jnp.exp(logit_scale) * video @ text.T


TRAIN_KEYS = ("video", "color", "label", "text")  # "color" is absent when colour jitter is off


def training_loss(params: dict, batch: dict, rng: jax.Array, *, model: model_lib.EZCLIP,
                  motion_weight: float) -> tuple[jax.Array, dict]:
  """The official EZ-CLIP objective on one batch.

  Args:
    params: full params tree.
    batch: `video` uint8 `[B, T, H, W, 3]`, optional `color` float32 `[B, T, transforms.COLOR_SIZE]`
      (each frame's colour jitter, applied here), `label` int32 `[B]`, `text` int32 `[B, L]`
      (one text of each sample's class, picked by the input pipeline).
    rng: dropout key.
    model: the EZ-CLIP module.
    motion_weight: weight of the motion loss (0 disables it).

  Returns:
    (loss, metrics dict of scalars).
  """
  labels = batch["label"]
  variables = {"params": params}
  rngs = {"dropout": rng}
  video = batch["video"]
  if "color" in batch:
    video = transforms.apply_color(video, batch["color"])
  video = input_pipeline.normalize(video)
  frames = model.apply(variables, video, True, method=model.encode_video, rngs=rngs)
  texts = model.apply(variables, batch["text"], True, method=model.encode_text, rngs=rngs)
  logits = video_text_logits(frames, texts, params["logit_scale"])
  same_class = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  kl = (losses.video_text_kl_loss(logits, same_class) + losses.video_text_kl_loss(logits.T, same_class)) / 2
  motion = losses.motion_loss(frames)
  loss = kl + motion_weight * motion
  return loss, {"loss": loss, "kl_loss": kl, "motion_loss": motion}


def train_step(state: TrainState, batch: dict, *, model: model_lib.EZCLIP, tx: optax.GradientTransformation,
               motion_weight: float) -> tuple[TrainState, dict]:
  """One optimizer (micro-)step. Pure: the step key is fold_in(base key, step)."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(trainable):
    params = optim.merge_params(trainable, state.frozen)
    return training_loss(params, batch, rng, model=model, motion_weight=motion_weight)

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.trainable)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  # Catches non-finite params the moment they appear, before any checkpoint holds them.
  metrics["update_norm"] = optax.tree.norm(updates)
  new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
  return new_state, metrics


def init_train_state(params: dict, tx: optax.GradientTransformation, trainable_patterns,
                     seed: int) -> TrainState:
  """Step 0: `params` split into trainable and frozen, a fresh optimizer state, the run's key."""
  trainable, frozen = optim.split_params(params, trainable_patterns)
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                    opt_state=tx.init(trainable), rng=jax.random.key_data(jax.random.key(seed)))


def state_shardings(config: model_lib.ModelConfig, tx: optax.GradientTransformation,
                    trainable_patterns, mesh: Mesh) -> TrainState:
  """NamedShardings of every TrainState leaf: params from their logical axes, optimizer
  moments like their params, counters and the key replicated."""
  model = model_lib.EZCLIP(config)
  boxed = jax.eval_shape(lambda: model_lib.init_boxed(model, jax.random.key(0)))["params"]
  param_shardings = sharding.logical_shardings(boxed, mesh)
  trainable, frozen = optim.split_params(param_shardings, trainable_patterns)
  abstract_trainable = jax.tree.map(lambda b: jax.ShapeDtypeStruct(b.value.shape, b.value.dtype),
                                    optim.split_params(boxed, trainable_patterns)[0],
                                    is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  abstract_opt = jax.eval_shape(tx.init, abstract_trainable)
  replicated = sharding.replicated(mesh)
  opt_state = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, trainable,
                                    transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, trainable=trainable, frozen=frozen, opt_state=opt_state,
                    rng=replicated)


def make_train_step(model: model_lib.EZCLIP, tx: optax.GradientTransformation, mesh: Mesh,
                    shardings: TrainState, motion_weight: float, keys=TRAIN_KEYS):
  """`step(state, batch) -> (state, metrics)`, jitted over `mesh`, state donated.

  `batch` holds global arrays of `keys` sharded like `train_batch_shardings`.
  """
  step = functools.partial(train_step, model=model, tx=tx, motion_weight=motion_weight)
  return jax.jit(step, in_shardings=(shardings, train_batch_shardings(mesh, keys)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def train_batch_shardings(mesh: Mesh, keys=TRAIN_KEYS) -> dict:
  ranks = {"video": 5, "color": 3, "label": 1, "text": 2}
  return {key: sharding.batch_sharding(mesh, ranks[key]) for key in keys}


def to_global(batch: dict, shardings: dict) -> dict:
  """This process's share of a batch -> global arrays (one process or many)."""
  return {k: jax.make_array_from_process_local_data(s, batch[k]) for k, s in shardings.items()}


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """A jitted train step with the shardings it was built for.

  Attributes:
    state: the initial `TrainState` on the mesh, or its `jax.ShapeDtypeStruct`s (with
      shardings) when built without params, for compiling only.
    step: `step(state, batch) -> (state, metrics)`, jitted, state donated.
    state_shardings: `NamedSharding` of every state leaf.
    batch_shardings: {batch key: `NamedSharding`} of the global batch it takes.
  """
  state: "TrainState"
  step: Callable
  state_shardings: "TrainState"
  batch_shardings: dict[str, NamedSharding]


def create_train_step(model_config: model_lib.ModelConfig, tx: optax.GradientTransformation, mesh: Mesh,
                      params: dict | None = None, *, trainable_patterns: Sequence[str] = optim.DEFAULT_TRAINABLE,
                      motion_weight: float = 1.0, color: bool = True, seed: int = 0) -> TrainStep:
  """Shards the train state over `mesh` and jits the step (the flax lm1b / imagenet recipe).

  Args:
    model_config: the architecture (with its dtype, remat and regularisation).
    tx: the optimizer of the trainable params.
    mesh: a ('data', 'fsdp', 'tensor') mesh.
    params: the starting params (host or device arrays; copied, never donated); None
      describes the state abstractly, for `jit(...).lower(...)` without any arrays.
    trainable_patterns: which params train (`optim.split_params`).
    motion_weight: weight of the motion loss.
    color: batches carry each frame's colour jitter parameters (`color`).
    seed: the run's base key.

  Returns:
    The `TrainStep`.
  """
  shardings = state_shardings(model_config, tx, trainable_patterns, mesh)
  init = functools.partial(init_train_state, tx=tx, trainable_patterns=trainable_patterns, seed=seed)
  if params is None:
    abstract = jax.eval_shape(lambda: init(model_lib.init_variables(model_config, jax.random.key(0))["params"]))
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  else:
    # From a host copy: the step donates its state, which must not free the caller's params.
    state = jax.device_put(init(jax.device_get(params)), shardings)
  keys = TRAIN_KEYS if color else tuple(k for k in TRAIN_KEYS if k != "color")
  step = make_train_step(model_lib.EZCLIP(model_config), tx, mesh, shardings, motion_weight, keys)
  return TrainStep(state, step, shardings, train_batch_shardings(mesh, keys))


def abstract_train_batch(model_config: model_lib.ModelConfig, global_batch: int,
                         batch_shardings: dict[str, NamedSharding]) -> dict[str, jax.ShapeDtypeStruct]:
  """The `jax.ShapeDtypeStruct`s of a global training batch, for compiling the step without data."""
  res, frames = model_config.image_resolution, model_config.num_frames
  shapes = {"video": ((global_batch, frames, res, res, 3), jnp.uint8),
            "color": ((global_batch, frames, transforms.COLOR_SIZE), jnp.float32),
            "label": ((global_batch,), jnp.int32),
            "text": ((global_batch, model_config.context_length), jnp.int32)}
  return {key: jax.ShapeDtypeStruct(*shapes[key], sharding=s) for key, s in batch_shardings.items()}
