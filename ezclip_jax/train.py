"""Training: the loop that wires the stages.

config -> sources and grain pipelines (input_pipeline) -> model (model) -> the jitted,
sharded train step (step) -> orbax checkpoints (checkpoint) -> evaluation (evaluate) ->
metrics (metrics).
"""

import dataclasses
import math
import os
import pathlib

from absl import logging
import jax
import ml_collections
import numpy as np

from ezclip_jax import checkpoint
from ezclip_jax import evaluate
from ezclip_jax import input_pipeline
from ezclip_jax import metrics
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import preemption
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from ezclip_jax import text_prompts
from ezclip_jax import tfds_source
from ezclip_jax import workdir as workdir_lib


def resolve_path(path: str, official_repo: str) -> str:
  """`path` itself if absolute, else inside the official repository checkout."""
  if not path or os.path.isabs(path):
    return path
  return os.path.join(official_repo, path)


_SOURCE_FIELD = {"list": "list_file", "tfds": "tfds_name", "video_folder": "root"}


def enabled_evals(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """`config.data.evals` less its placeholders: datasets whose source (`list_file`, `tfds_name`
  or `root`, by kind) is still empty, such as UCF101 splits 2 and 3, which a user fills in
  (or empties to switch a dataset off) with `--config.data.evals.NAME.FIELD=...`."""
  return {name: spec for name, spec in config.data.evals.items()
          if spec.kind not in _SOURCE_FIELD or spec[_SOURCE_FIELD[spec.kind]]}


def check_paths(config: ml_collections.ConfigDict, training: bool = False) -> None:
  """Fails before any compilation if a configured file or directory is missing.

  Args:
    config: the experiment config.
    training: `data.train` must then be set (otherwise it is checked only when it has a
      label CSV, as eval-only configs leave it empty).
  """
  missing = []

  def need(key: str, path: str) -> None:
    if path and not os.path.exists(path):
      missing.append(f"{key}={path}")

  need("model.pretrained", config.model.pretrained)
  train_spec = config.data.train
  specs = {"data.train": train_spec} if training or train_spec.labels_csv else {}
  source_field = _SOURCE_FIELD.get(train_spec.kind)
  if training and source_field and not train_spec[source_field]:
    missing.append(f"data.train.{source_field} (empty; kind={train_spec.kind} reads its videos from it)")
  evals = enabled_evals(config)
  for name in config.data.evals.keys() - evals.keys():
    logging.info("data.evals.%s has no %s: skipped", name, _SOURCE_FIELD[config.data.evals[name].kind])
  specs.update({f"data.evals.{name}": spec for name, spec in evals.items()})
  for key, spec in specs.items():
    if not spec.labels_csv:
      missing.append(f"{key}.labels_csv (empty; every dataset needs its label CSV)")
    for field in ("list_file", "labels_csv", "descriptions"):
      need(f"{key}.{field}", resolve_path(spec[field], config.data.official_repo))
    if spec.kind != "tfds":
      need(f"{key}.root", spec.root)
  if missing:
    raise FileNotFoundError("missing paths in the config: " + "; ".join(missing))


def make_source(spec: ml_collections.ConfigDict, official_repo: str, skip_bad: bool):
  """The grain data source a dataset spec (`configs.common.dataset`) describes."""
  labels_csv = resolve_path(spec.labels_csv, official_repo)
  if spec.kind == "list":
    return input_pipeline.ListSource(resolve_path(spec.list_file, official_repo), labels_csv,
                                     root=spec.root or None, media=spec.media, template=spec.template,
                                     index_bias=spec.index_bias, skip_bad=skip_bad)
  if spec.kind == "video_folder":
    return input_pipeline.VideoFolderSource(spec.root, labels_csv, skip_bad=skip_bad)
  if spec.kind == "tfds":
    return tfds_source.TfdsVideoSource(spec.tfds_name, spec.tfds_split, spec.tfds_data_dir or None)
  raise ValueError(f"dataset {spec.name!r}: kind={spec.kind!r}; expected list, video_folder or tfds")


def probe_first_video(name: str, source, tries: int = 1) -> None:
  """Reads a frame of the first video (of the first `tries`), so a wrong `root` fails now, not after an epoch."""
  error = None
  for index in range(min(tries, len(source))):
    try:
      source.read_frames(source[index], np.zeros(1, np.int32))
      return
    except (OSError, ValueError) as e:
      error = e
  raise FileNotFoundError(f"dataset {name!r}: cannot read its first videos ({error}); check its root and "
                          "list_file settings")


def class_prompts(spec: ml_collections.ConfigDict, official_repo: str, context_length: int):
  names = text_prompts.read_class_names(resolve_path(spec.labels_csv, official_repo))
  descriptions = resolve_path(spec.descriptions, official_repo) or None
  return names, text_prompts.build_prompts(names, descriptions, context_length=context_length, truncate=True)


def initial_params(config: ml_collections.ConfigDict) -> tuple[model_lib.ModelConfig, dict]:
  """The architecture (with this run's regularisation) and starting params."""
  overrides = {k: config.model[k] for k in ("drop_path_rate", "prompt_dropout", "emb_dropout", "remat")}
  overrides["dtype"] = model_lib.resolve_dtype(config.model.dtype, jax.devices()[0].platform)
  if config.model.pretrained:
    model, variables = checkpoint.load_pretrained(config.model.pretrained)
    model_config = dataclasses.replace(model.config, **overrides)
    for key in ("use_prompts", "t_adapter"):
      if getattr(model_config, key) != config.model[key]:
        raise ValueError(f"model.{key}={config.model[key]} but {config.model.pretrained} has "
                         f"{key}={getattr(model_config, key)}; convert the checkpoint for this variant "
                         "(python -m convert.torch_to_flax ... --no-prompts / --t-adapter)")
    if model_config.num_frames != config.model.num_frames:
      raise ValueError(f"model.num_frames={config.model.num_frames} but {config.model.pretrained} was "
                       f"converted for {model_config.num_frames} frames (convert with --num-frames)")
    return model_config, variables["params"]
  model_config = dataclasses.replace(
      model_lib.ARCHITECTURES[config.model.arch], num_frames=config.model.num_frames,
      use_prompts=config.model.use_prompts, t_adapter=config.model.t_adapter, **overrides)
  return model_config, model_lib.init_variables(model_config, jax.random.key(config.seed))["params"]


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


def _check_finite(values: dict, step: int) -> None:
  if not all(math.isfinite(float(v)) for v in values.values()):
    raise NonFiniteLossError(f"non-finite training metrics at step {step}: {values}; stopping. The last "
                             "checkpoint (saved before this) is intact; lower optim.lr or check the data.")


def run_evals(config, model, params, mesh, model_config, step: int, writer, workdir: pathlib.Path) -> dict:
  """Evaluates every configured dataset and the protocol summaries of their groups.

  Returns:
    {dataset name: top-1 percent}.
  """
  results = {}
  variables = {"params": params}
  evals = enabled_evals(config)
  for name, spec in evals.items():
    source = make_source(spec, config.data.official_repo, config.data.skip_bad)
    class_names, prompts = class_prompts(spec, config.data.official_repo, model_config.context_length)
    batches = input_pipeline.eval_dataset(
        source, batch_size=config.data.eval_batch_size, num_frames=model_config.num_frames,
        num_clips=config.data.num_clips, num_crops=config.data.num_crops,
        resize_size=round(model_config.image_resolution * 256 / 224),  # official: 256 for 224 crops
        crop_size=model_config.image_resolution, skip_bad=config.data.skip_bad,
        num_workers=config.data.num_workers)
    result = evaluate.evaluate(model, variables, batches, prompts.tokens, mesh=mesh)
    writer.write_scalars(step, result.summary(), split=f"eval/{name}")
    if jax.process_index() == 0:
      plots = workdir / "plots"
      evaluate.save_confusion_matrix_png(
          result.confusion, class_names, plots / f"confusion_{name}_{step}.png",
          title=f"{spec.name or name}, step {step}: top-1 {result.top1:.1f}% of {result.num_samples} videos")
      evaluate.save_per_class_csv(result, class_names, plots / f"per_class_{name}_{step}.csv")
    results[name] = result
  for group, summary in protocol_summaries(evals, results).items():
    writer.write_scalars(step, summary, split=f"protocol/{group}")
    logging.info("step %d %s: %s", step, group, summary)
  return {name: result.top1 for name, result in results.items()}


def protocol_summaries(specs: ml_collections.ConfigDict, results: dict) -> dict[str, dict]:
  """Zero-shot mean/std over each `group` of datasets (e.g. UCF101 splits 1-3); base-to-novel
  harmonic mean when there are `base` and `novel` groups."""
  groups = {}
  for name, spec in specs.items():
    if spec.group:
      groups.setdefault(spec.group, []).append(results[name])
  summaries = {group: evaluate.zero_shot_summary(members) for group, members in groups.items()}
  if "base" in groups and "novel" in groups:
    summaries["base_to_novel"] = evaluate.base_to_novel_summary(groups["base"], groups["novel"])
  return summaries


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
  check_paths(config, training=True)
  mesh = sharding.make_mesh(config.mesh_shape)
  workdir_lib.check_before_writing(config, workdir, mesh, allow_config_change,
                                   evaluating=bool(enabled_evals(config)))
  with workdir_lib.claimed(workdir, config, allow_config_change), preemption.stop_on_signals() as stop:
    return _train_and_evaluate(config, workdir, mesh, stop)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh,
                        stop: preemption.StopRequest) -> dict:
  model_config, params = initial_params(config)
  model = model_lib.EZCLIP(model_config)
  spec = config.data.train
  source = make_source(spec, config.data.official_repo, config.data.skip_bad)
  for name, eval_spec in {"train": spec, **enabled_evals(config)}.items():
    probe_first_video(name, make_source(eval_spec, config.data.official_repo, config.data.skip_bad),
                      tries=5 if config.data.skip_bad else 1)
  _, prompts = class_prompts(spec, config.data.official_repo, model_config.context_length)
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
  state = train_step.state
  train_iter = iter(input_pipeline.train_dataset(
      source, global_batch_size=config.data.batch_size, num_frames=model_config.num_frames,
      crop_size=model_config.image_resolution, flip=spec.flip, color=config.data.color_jitter,
      color_per_frame=config.data.color_jitter_per_frame, seed=config.seed,
      text_tokens=prompts.tokens, skip_bad=config.data.skip_bad, num_workers=config.data.num_workers))
  manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
  checkpoint.save_backbone(workdir, model_config, params, patterns)
  state = checkpoint.restore_checkpoint(manager, state, train_iter, workdir)
  start = int(state.step)

  def evaluates_at(step: int) -> bool:
    epoch_end = step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.train.eval_every_epochs == 0
    return bool(enabled_evals(config)) and (epoch_end or step == total_steps)

  # A run killed during (or right after) an evaluation, before its best/ update finished, redoes it.
  redo_evaluation = start > 0 and evaluates_at(start) and checkpoint.last_evaluated_step(workdir) < start
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.truncate_after(start, keep_at_step=("train",) if redo_evaluation else None)
  progress = metrics.ProgressReporter(total_steps, every_steps=config.train.log_every_steps,
                                      enabled=jax.process_index() == 0)
  best, results = _saved_best(config, workdir), {}
  if redo_evaluation:
    results, best = _evaluate_and_keep_best(config, model, mesh, model_config, state, start, writer, workdir, best)
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
      results, best = _evaluate_and_keep_best(config, model, mesh, model_config, state, step, writer, workdir, best)
    if stop.requested(step, manager):
      _stop_with_checkpoint(manager, state, train_iter, stop.signal_name, total_steps, workdir)
      break
  else:
    train_iter.report_last_epoch()
  manager.wait_until_finished()
  writer.close()
  return results


def _stop_with_checkpoint(manager, state, train_iter, signal_name: str, total_steps: int,
                          workdir: pathlib.Path) -> None:
  step = int(state.step)
  if manager.latest_step() != step:
    checkpoint.save_checkpoint(manager, state, train_iter)
  manager.wait_until_finished()
  if jax.process_index() == 0:
    print(f"Stopped by {signal_name} after step {step} of {total_steps}: saved {workdir / 'checkpoints' / str(step)}; "
          "rerun the same command to resume.", flush=True)


def _saved_best(config, workdir: pathlib.Path) -> float:
  """The score of WORKDIR/best (-1 before the first), so that a resumed run keeps a better earlier best."""
  val = [name for name, spec in enabled_evals(config).items() if spec.role == "val"]
  return checkpoint.read_best(workdir).get(f"{val[0]}/top1", -1.0) if val else -1.0


def _evaluate_and_keep_best(config, model, mesh, model_config, state, step: int, writer, workdir: pathlib.Path,
                            best: float) -> tuple[dict, float]:
  results = run_evals(config, model, state.params, mesh, model_config, step, writer, workdir)
  best = _update_best(config, workdir, state, step, results, best)
  checkpoint.record_evaluated(workdir, step)
  if jax.process_index() == 0:
    metrics.plot_curves(writer.jsonl_path, workdir / "plots" / "curves.png")
  return results, best


def _update_best(config, workdir: pathlib.Path, state: step_lib.TrainState, step: int, results: dict,
                 best: float) -> float:
  """Keeps WORKDIR/best on the first validation-role dataset (never on a test split)."""
  val = [name for name, spec in enabled_evals(config).items() if spec.role == "val"]
  if not val or results[val[0]] <= best:
    return best
  checkpoint.save_best(workdir, state.trainable, step, {f"{val[0]}/top1": results[val[0]]})
  return results[val[0]]


def evaluate_pretrained(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Evaluates `config.model.pretrained` (a converted CLIP or a training workdir) on every eval dataset."""
  workdir = pathlib.Path(workdir)
  check_paths(config)
  if not config.model.pretrained:
    raise ValueError("--mode=eval needs --config.model.pretrained=DIR")
  mesh = sharding.make_mesh(config.mesh_shape)
  workdir_lib.check_batch_sizes(config, mesh, evaluating=True)
  checkpoint.check_writable(workdir)
  model_config, params = initial_params(config)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  results = run_evals(config, model_lib.EZCLIP(model_config), params, mesh, model_config, 0, writer, workdir)
  writer.close()
  return results
