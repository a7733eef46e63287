"""Training: the loop that wires the stages.

config -> sources and pipelines (datasets) -> model (model_setup) -> the jitted, sharded train
step (step) -> orbax checkpoints (checkpoint) -> evaluation (evaluate) -> metrics (metrics).
"""

import dataclasses
import os
import pathlib
import time

import jax
import ml_collections

from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import datasets
from ezclip_jax import evaluate
from ezclip_jax import metrics
from ezclip_jax import model as model_lib
from ezclip_jax import model_setup
from ezclip_jax import optim
from ezclip_jax import preemption
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from ezclip_jax import text_prompts
from ezclip_jax import workdir as workdir_lib


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """Which steps (1-based) log, checkpoint and evaluate.

  Every checkpoint step also ends a logging window, so a run resumed from a checkpoint logs
  the same windows as an uninterrupted one.
  """
  steps_per_epoch: int
  total_steps: int
  log_every: int
  checkpoint_every: int
  eval_every_epochs: int
  evaluating: bool

  def checkpoints_at(self, step: int) -> bool:
    return step % self.checkpoint_every == 0 or step == self.total_steps

  def logs_at(self, step: int) -> bool:
    return step % self.log_every == 0 or self.checkpoints_at(step)

  def evaluates_at(self, step: int) -> bool:
    epoch, within = divmod(step, self.steps_per_epoch)
    return self.evaluating and ((within == 0 and epoch % self.eval_every_epochs == 0) or step == self.total_steps)


def make_step_plan(config: ml_collections.ConfigDict, num_videos: int) -> StepPlan:
  steps_per_epoch = num_videos // config.data.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"data.batch_size={config.data.batch_size} exceeds the {num_videos} training videos")
  return StepPlan(steps_per_epoch, config.train.epochs * steps_per_epoch, config.train.log_every_steps,
                  config.train.checkpoint_every_steps, config.train.eval_every_epochs,
                  bool(datasets.enabled_evals(config)))


def make_optimizer(config: ml_collections.ConfigDict, plan: StepPlan):
  """(the optax optimizer, step -> the learning rate of the last update at or before that step)."""
  accum = config.optim.grad_accum_steps
  updates = (plan.total_steps // accum, config.optim.warmup_epochs * plan.steps_per_epoch // accum,
             plan.steps_per_epoch // accum)
  lr = optim.make_schedule(config.optim, *updates)
  return optim.make_optimizer(config.optim, *updates), lambda step: float(lr(max(step // accum - 1, 0)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       allow_config_change: bool = False) -> dict:
  """Trains (resuming from WORKDIR when it has a checkpoint) with periodic evaluation.

  Args:
    config: the experiment config.
    workdir: checkpoints, logs and plots; locked while training (`ezclip_jax.workdir`).
    allow_config_change: resume although WORKDIR/config.json differs from `config`.

  Returns:
    The last evaluation's {dataset: top-1 accuracy}.
  """
  workdir = pathlib.Path(workdir)
  datasets.check_paths(config, training=True)
  mesh = sharding.make_mesh(config.mesh_shape)
  workdir_lib.check_before_writing(config, workdir, mesh, allow_config_change,
                                   evaluating=bool(datasets.enabled_evals(config)))
  with workdir_lib.claimed(workdir, config, allow_config_change), preemption.stop_on_signals() as stop:
    return _train_and_evaluate(config, workdir, mesh, stop)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh,
                        stop: preemption.StopRequest) -> dict:
  began = time.monotonic()
  spec = config.data.train
  # The lists and the first videos are read before the model loads, so bad data fails at once.
  source = datasets.make_source(spec, config.data.official_repo, config.data.skip_bad)
  datasets.probe_datasets(config, source)
  model_config, params = model_setup.initial_params(config)
  model = model_lib.EZCLIP(model_config)
  _, prompts = datasets.class_prompts(spec, config.data.official_repo, model_config.context_length)
  text_prompts.save_setup(workdir, datasets.resolve_path(spec.descriptions, config.data.official_repo) or None)
  plan = make_step_plan(config, len(source))
  tx, lr_at = make_optimizer(config, plan)
  patterns = tuple(config.train.trainable)
  train_step = step_lib.create_train_step(model_config, tx, mesh, params, trainable_patterns=patterns,
                                          motion_weight=config.train.motion_weight,
                                          color=config.data.color_jitter, seed=config.seed)
  console.show_setup(config, model_config, params, train_step.state.trainable, mesh, len(source),
                     plan.steps_per_epoch, list(datasets.enabled_evals(config)))
  train_iter = iter(datasets.train_batches(config, source, model_config, prompts.tokens))
  manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
  checkpoint.save_backbone(workdir, model_config, params, patterns)
  state = checkpoint.restore_checkpoint(manager, train_step.state, train_iter, workdir)
  start = int(state.step)
  # A run killed during (or right after) an evaluation, before its best/ update finished, redoes it.
  redo_evaluation = start > 0 and plan.evaluates_at(start) and checkpoint.last_evaluated_step(workdir) < start
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.truncate_after(start, keep_at_step=("train",) if redo_evaluation else None)
  window = metrics.StepWindow(start)
  best, results = _saved_best(config, workdir), {}
  if redo_evaluation:
    console.show(console.start_line(start, plan.total_steps) + "; its evaluation did not finish: evaluating again")
    results, best = _evaluate_and_keep_best(config, model, mesh, state, start, writer, workdir, best)
  compiling = console.show_start(start, plan.total_steps, start_shown=redo_evaluation)
  for step in range(start + 1, plan.total_steps + 1):
    state, step_metrics = _one_step(train_step, state, next(train_iter))
    window.add(step_metrics)
    if step == start + 1:
      console.show(f"{time.monotonic() - compiling:.1f} s (with step {step})")
      window.restart_clock(step)
    if plan.logs_at(step):
      _log_window(window, plan.total_steps, lr_at, writer)
    if plan.checkpoints_at(step):
      checkpoint.save_checkpoint(manager, state, train_iter)
    if plan.evaluates_at(step):
      results, best = _evaluate_and_keep_best(config, model, mesh, state, step, writer, workdir, best)
      window.restart_clock(step)
    if stop.requested(step, manager):
      if window.pending_steps:
        _log_window(window, plan.total_steps, lr_at, writer)
      _stop_with_checkpoint(manager, state, train_iter, stop.signal_name, plan.total_steps, workdir)
      writer.close()
      return results
  train_iter.report_last_epoch()
  manager.wait_until_finished()
  writer.close()
  console.show(console.final_line(manager.latest_step() or 0, time.monotonic() - began,
                                  workdir / checkpoint.CHECKPOINTS_DIR, checkpoint.read_best(workdir),
                                  workdir / checkpoint.BEST_DIR))
  return results


def _one_step(train_step: step_lib.TrainStep, state: step_lib.TrainState, batch: dict):
  batch = step_lib.to_global(batch, train_step.batch_shardings)
  # The step takes device arrays only: a host array slipping in would be copied every step.
  with jax.transfer_guard("disallow"):
    state, step_metrics = train_step.step(state, batch)
  # Its metrics stay on the device until the window closes; the flag catches a NaN on any step.
  return state, step_metrics


def _log_window(window: metrics.StepWindow, total_steps: int, lr_at, writer: metrics.MetricWriter) -> None:
  """Closes the logging window: stops on a non-finite step, logs the means, lr and rate, prints progress."""
  summary = window.close()
  if summary.first_nonfinite is not None:
    raise NonFiniteLossError(
        f"non-finite training metrics at step {summary.first_nonfinite} (in the window of steps "
        f"{summary.first_step}-{summary.last_step}): {summary.nonfinite_values}; stopping. The last checkpoint "
        f"(at or before step {summary.first_step - 1}) is intact; lower optim.lr or check the data.")
  lr = lr_at(summary.last_step)
  writer.write_scalars(summary.last_step, {**summary.means, "lr": lr}, split="train")
  if summary.steps_per_sec is not None:
    writer.write_scalars(summary.last_step, {"steps_per_sec": summary.steps_per_sec}, split="perf")
  console.show(console.progress_line(summary, total_steps, lr, window.eta_seconds(total_steps - summary.last_step)))


def _stop_with_checkpoint(manager, state, train_iter, signal_name: str, total_steps: int,
                          workdir: pathlib.Path) -> None:
  step = int(state.step)
  if manager.latest_step() != step:
    checkpoint.save_checkpoint(manager, state, train_iter)
  manager.wait_until_finished()
  console.show(f"Stopped by {signal_name} after step {step} of {total_steps}: saved "
               f"{workdir / checkpoint.CHECKPOINTS_DIR / str(step)}; rerun the same command to resume.")


def _saved_best(config, workdir: pathlib.Path) -> float:
  """The score of WORKDIR/best (-1 before the first), so that a resumed run keeps a better earlier best."""
  selection = evaluate.selection_dataset(datasets.enabled_evals(config))
  return checkpoint.read_best(workdir).get(f"{selection}/top1", -1.0) if selection is not None else -1.0


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
  checkpoint.record_evaluated(workdir, step)
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
  workdir_lib.check_batch_sizes(config, mesh, evaluating=True)
  checkpoint.check_writable(workdir)
  model_config, params = model_setup.initial_params(config)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  results = evaluate.evaluate_datasets(config, model_lib.EZCLIP(model_config), params, mesh, 0, writer, workdir)
  writer.close()
  return {name: result.top1 for name, result in results.items()}
