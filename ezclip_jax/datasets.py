"""Config -> data: the sources, pipelines and class prompts that a config's dataset specs describe.

A dataset spec is `configs.common.dataset(...)`: `kind` (list, video_folder or tfds), where
its videos are (`list_file`, `root`, `tfds_name`), its `labels_csv` and `descriptions`.
Relative list, label and description paths are inside the official repository checkout
(`config.data.official_repo`), as the official configs name them.
"""

import os

from absl import logging
import ml_collections
import numpy as np

from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import text_prompts
from ezclip_jax import tfds_source

_SOURCE_FIELD = {"list": "list_file", "tfds": "tfds_name", "video_folder": "root"}


def resolve_path(path: str, official_repo: str) -> str:
  """`path` itself if absolute, else inside the official repository checkout."""
  if not path or os.path.isabs(path):
    return path
  return os.path.join(official_repo, path)


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
  """The grain data source a dataset spec describes."""
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


def probe_datasets(config: ml_collections.ConfigDict, train_source) -> None:
  """`probe_first_video` on the training set (its source, already read) and every enabled eval
  set (5 tries with `skip_bad`)."""
  tries = 5 if config.data.skip_bad else 1
  probe_first_video("train", train_source, tries)
  for name, spec in enabled_evals(config).items():
    probe_first_video(name, make_source(spec, config.data.official_repo, config.data.skip_bad), tries)


def class_prompts(spec: ml_collections.ConfigDict, official_repo: str, context_length: int):
  """(class names, `text_prompts.Prompts`) of a dataset: its descriptions, else the templates."""
  names = text_prompts.read_class_names(resolve_path(spec.labels_csv, official_repo))
  descriptions = resolve_path(spec.descriptions, official_repo) or None
  return names, text_prompts.build_prompts(names, descriptions, context_length=context_length, truncate=True)


def train_batches(config: ml_collections.ConfigDict, source, model_config: model_lib.ModelConfig,
                  text_tokens: np.ndarray):
  """The training pipeline of `config.data` over `source` (one random text of each clip's class)."""
  data = config.data
  return input_pipeline.train_dataset(
      source, global_batch_size=data.batch_size, num_frames=model_config.num_frames,
      crop_size=model_config.image_resolution, flip=data.train.flip, color=data.color_jitter,
      color_per_frame=data.color_jitter_per_frame, seed=config.seed, text_tokens=text_tokens,
      skip_bad=data.skip_bad, num_workers=data.num_workers)


def eval_batches(config: ml_collections.ConfigDict, source, model_config: model_lib.ModelConfig):
  """The evaluation pipeline of `config.data` over `source`, resized as the official 256 for 224 crops."""
  data = config.data
  resolution = model_config.image_resolution
  return input_pipeline.eval_dataset(
      source, batch_size=data.eval_batch_size, num_frames=model_config.num_frames, num_clips=data.num_clips,
      num_crops=data.num_crops, resize_size=round(resolution * 256 / 224), crop_size=resolution,
      skip_bad=data.skip_bad, num_workers=data.num_workers)
