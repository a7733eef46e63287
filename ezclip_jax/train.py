"""Training: the loop that wires the stages.

config -> sources and pipelines (datasets) -> model (model) -> the jitted, sharded train
step (step) -> orbax checkpoints (checkpoint) -> evaluation (evaluate) -> metrics (metrics).
"""

import dataclasses
import math
import os
import pathlib

import jax
import ml_collections

from ezclip_jax import checkpoint
from ezclip_jax import datasets
from ezclip_jax import evaluate
from ezclip_jax import metrics
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import sharding
from ezclip_jax import step as step_lib


def model_config(config: ml_collections.ConfigDict, platform: str,
                 pretrained: model_lib.ModelConfig | None = None) -> model_lib.ModelConfig:
  """The architecture `config.model` describes, with this run's regularisation and dtype.

  Args:
    config: the experiment config.
    platform: the devices' platform (`cpu`, `gpu`, `tpu`), for `model.dtype=auto`.
    pretrained: the architecture of `config.model.pretrained`; it must be the variant
      (prompts, T-adapter, frames) the config asks for. None: `config.model.arch`.
  """
  overrides = {k: config.model[k] for k in ("drop_path_rate", "prompt_dropout", "emb_dropout", "remat")}
  overrides["dtype"] = model_lib.resolve_dtype(config.model.dtype, platform)
  if pretrained is None:
    if config.model.arch not in model_lib.ARCHITECTURES:
      raise ValueError(f"model.arch={config.model.arch!r}; expected one of {sorted(model_lib.ARCHITECTURES)}")
    return dataclasses.replace(model_lib.ARCHITECTURES[config.model.arch], num_frames=config.model.num_frames,
                               use_prompts=config.model.use_prompts, t_adapter=config.model.t_adapter, **overrides)
  for key in ("use_prompts", "t_adapter"):
    if getattr(pretrained, key) != config.model[key]:
      raise ValueError(f"model.{key}={config.model[key]} but {config.model.pretrained} has "
                       f"{key}={getattr(pretrained, key)}; convert the checkpoint for this variant "
                       "(python -m convert.torch_to_flax ... --no-prompts / --t-adapter)")
  if pretrained.num_frames != config.model.num_frames:
    raise ValueError(f"model.num_frames={config.model.num_frames} but {config.model.pretrained} was "
                     f"converted for {pretrained.num_frames} frames (convert with --num-frames)")
  return dataclasses.replace(pretrained, **overrides)


def initial_params(config: ml_collections.ConfigDict) -> tuple[model_lib.ModelConfig, dict]:
  """The architecture (`model_config`) and starting params: `model.pretrained`'s, else random."""
  platform = jax.devices()[0].platform
  if config.model.pretrained:
    model, variables = checkpoint.load_pretrained(config.model.pretrained)
    return model_config(config, platform, model.config), variables["params"]
  architecture = model_config(config, platform)
  return architecture, model_lib.init_variables(architecture, jax.random.key(config.seed))["params"]


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


def _check_finite(values: dict, step: int) -> None:
  if not all(math.isfinite(float(v)) for v in values.values()):
    raise NonFiniteLossError(f"non-finite training metrics at step {step}: {values}; stopping. The last "
                             "checkpoint (saved before this) is intact; lower optim.lr or check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains (resuming from WORKDIR when it has a checkpoint) with periodic evaluation.

  Returns:
    The last evaluation's {dataset: top-1 accuracy}.
  """
  workdir = pathlib.Path(workdir)
  datasets.check_paths(config, training=True)
  mesh = sharding.make_mesh(config.mesh_shape)
  return _train_and_evaluate(config, workdir, mesh)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh) -> dict:
  model_config, params = initial_params(config)
  model = model_lib.EZCLIP(model_config)
  spec = config.data.train
  source = datasets.make_source(spec, config.data.official_repo, config.data.skip_bad)
  datasets.probe_datasets(config)
  _, prompts = datasets.class_prompts(spec, config.data.official_repo, model_config.context_length)
  steps_per_epoch = len(source) // config.data.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"data.batch_size={config.data.batch_size} exceeds the {len(source)} training videos")
  total_steps = config.train.epochs * steps_per_epoch
  accum = config.optim.grad_accum_steps
  tx = optim.make_optimizer(config.optim, total_steps // accum, config.optim.warmup_epochs * steps_per_epoch // accum,
                            steps_per_epoch // accum)
  patterns = tuple(config.train.trainable)
  train_step = step_lib.create_train_step(model_config, tx, mesh, params, trainable_patterns=patterns,
                                          motion_weight=config.train.motion_weight,
                                          color=config.data.color_jitter, seed=config.seed)
  train_iter = iter(datasets.train_batches(config, source, model_config, prompts.tokens))
  manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
  checkpoint.save_backbone(workdir, model_config, params, patterns)
  state = checkpoint.restore_checkpoint(manager, train_step.state, train_iter)
  start = int(state.step)

  def evaluates_at(step: int) -> bool:
    epoch_end = step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.train.eval_every_epochs == 0
    return bool(datasets.enabled_evals(config)) and (epoch_end or step == total_steps)

  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.truncate_after(start)
  progress = metrics.ProgressReporter(total_steps, every_steps=config.train.log_every_steps,
                                      enabled=jax.process_index() == 0)
  best, results = -1.0, {}
  for step in range(start + 1, total_steps + 1):
    state, step_metrics = train_step.step(state, step_lib.to_global(next(train_iter), train_step.batch_shardings))
    progress.update(step, step_metrics["loss"])
    last = step == total_steps
    if step % config.train.log_every_steps == 0 or step % config.train.checkpoint_every_steps == 0 or last:
      values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
      _check_finite(values, step)
      writer.write_scalars(step, values, split="train")
    if step % config.train.checkpoint_every_steps == 0 or last:
      checkpoint.save_checkpoint(manager, state, train_iter)
    if evaluates_at(step):
      results, best = _evaluate_and_keep_best(config, model, mesh, state, step, writer, workdir, best)
  manager.wait_until_finished()
  writer.close()
  return results


def _evaluate_and_keep_best(config, model, mesh, state: step_lib.TrainState, step: int, writer,
                            workdir: pathlib.Path, best: float) -> tuple[dict, float]:
  """Evaluates, keeps WORKDIR/best on the selection dataset, redraws the curves.

  Returns:
    ({dataset: top-1}, the best selection score so far).
  """
  results = evaluate.evaluate_datasets(config, model, state.params, mesh, step, writer, workdir)
  top1 = {name: result.top1 for name, result in results.items()}
  selection = evaluate.selection_dataset(datasets.enabled_evals(config))
  if selection is not None and top1[selection] > best:
    checkpoint.save_best(workdir, state.trainable, step, {f"{selection}/top1": top1[selection]})
    best = top1[selection]
  if jax.process_index() == 0:
    metrics.plot_curves(writer.jsonl_path, workdir / "plots" / "curves.png")
  return top1, best


def evaluate_pretrained(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Evaluates `config.model.pretrained` (a converted CLIP or a training workdir) on every eval dataset.

  Returns:
    {dataset: top-1 accuracy}.
  """
  workdir = pathlib.Path(workdir)
  datasets.check_paths(config)
  if not config.model.pretrained:
    raise ValueError("--mode=eval needs --config.model.pretrained=DIR")
  mesh = sharding.make_mesh(config.mesh_shape)
  model_config, params = initial_params(config)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  results = evaluate.evaluate_datasets(config, model_lib.EZCLIP(model_config), params, mesh, 0, writer, workdir)
  writer.close()
  return {name: result.top1 for name, result in results.items()}
