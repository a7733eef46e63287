"""Zero-shot evaluation: class scores, sample-exact accuracy, confusion matrices, protocol summaries.

Scoring follows the official `validate` (test.py): a video's frame embeddings are
mean-pooled over time and L2-normalised, the class texts' embeddings L2-normalised,
similarities are `100 * video @ text.T` (a fixed 100, not the model's `logit_scale`),
softmaxed over the classes separately for each of the K texts per class (templates or
LLM descriptions) and averaged over K. Multi-view evaluation (clips x crops; the official
code has none) scores every view on its own and averages the views' class
probabilities, the same way the K texts are combined.

Unlike the official loop (which drops the last partial batch), every sample counts
exactly once: the eval loader pads the last batch and marks real rows in `mask`.

One code path for one device and many: without a mesh, scoring runs on a one-device mesh.

`evaluate_datasets` runs a config's evaluation: every enabled dataset, its plots and
logged scalars, and the protocol summaries over the datasets' groups;
`selection_dataset` names the one the best checkpoint is picked on.
"""

import csv
import dataclasses
import functools
import math
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ezclip_jax import console
from ezclip_jax import datasets
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import sharding
from ezclip_jax import text_prompts

SIMILARITY_SCALE = 100.0
TOPK = 5


# ------------------------------------------------------------------------------ scoring


def class_probabilities(frame_embeddings: jax.Array, text_embeddings: jax.Array) -> jax.Array:
  """Class probabilities of videos, averaged over texts per class and over views.

  Args:
    frame_embeddings: `[B, V, T, D]` (V views per video) or `[B, T, D]` unnormalised
      per-frame embeddings.
    text_embeddings: `[K, C, D]` unnormalised embeddings of K texts for each of C classes
      (row k*C + c of the official flat text list is `[k, c]`).

  Returns:
    float32 `[B, C]`: per video, the mean over views and texts of the softmax over classes.
  """
  if frame_embeddings.ndim == 3:
    frame_embeddings = frame_embeddings[:, None]
  if frame_embeddings.ndim != 4 or text_embeddings.ndim != 3:
    raise ValueError(f"Expected frame embeddings [B, V, T, D] or [B, T, D] and text embeddings [K, C, D], got "
                     f"{frame_embeddings.shape} and {text_embeddings.shape}.")
  batch, views = frame_embeddings.shape[:2]
  video = frame_embeddings.astype(jnp.float32).mean(axis=2)
  video = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
  text = text_embeddings.astype(jnp.float32)
  text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  # HIGHEST: TPUs would otherwise round these f32 matmuls to bf16, moving 100x-scaled logits.
  logits = SIMILARITY_SCALE * jnp.einsum("bvd,kcd->kbvc", video, text, precision=jax.lax.Precision.HIGHEST)
  probs = text_prompts.ensemble_probabilities(logits.reshape(logits.shape[0], batch * views, -1))
  return probs.reshape(batch, views, -1).mean(axis=1)


def _global_array(x: np.ndarray, target: jax.sharding.Sharding) -> jax.Array:
  """An array every process holds in full, laid out as `target`."""
  # An explicit placement, so allowed under a `jax_transfer_guard` against hidden copies.
  with jax.transfer_guard_host_to_device("allow"):
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])


def _shared_rows(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """Rows every process holds in full, sharded over the mesh's batch axes."""
  return _global_array(x, sharding.batch_sharding(mesh, x.ndim))


def _local_rows(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """This process's rows of a batch sharded over the mesh's batch axes."""
  with jax.transfer_guard_host_to_device("allow"):
    return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, x.ndim), x)


def _place_variables(variables: Any, mesh: Mesh) -> Any:
  """Keeps arrays already laid out on the mesh (e.g. FSDP-sharded params); replicates the rest."""
  devices = set(mesh.devices.flat)

  def place(x):
    if isinstance(x, jax.Array) and x.sharding.device_set == devices:
      return x
    return _global_array(np.asarray(x), sharding.replicated(mesh))

  return jax.tree.map(place, variables)


def _local_shards(mesh: Mesh) -> int:
  """Batch rows of each process must split evenly over its share of the batch shards."""
  return max(1, sharding.batch_shards(mesh) // jax.process_count())


def _pad_rows(x: np.ndarray, multiple: int, value: Any = 0) -> np.ndarray:
  extra = -len(x) % multiple
  if not extra:
    return x
  return np.concatenate([x, np.full((extra, *x.shape[1:]), value, x.dtype)])


@functools.lru_cache(maxsize=16)
def _text_encoder(model: model_lib.EZCLIP, mesh: Mesh):
  return jax.jit(lambda variables, ids: model.apply(variables, ids, method=model.encode_text),
                 out_shardings=sharding.replicated(mesh))


def encode_class_texts(model: model_lib.EZCLIP, variables: Any, text_ids: np.ndarray, batch: int = 256, *,
                       mesh: Mesh | None = None) -> jax.Array:
  """Embeds every class text once, in jitted batches of rows.

  Args:
    model: the EZ-CLIP module.
    variables: its variables (`{"params": ...}`).
    text_ids: int32 `[K, C, L]` token ids (`text_prompts.build_prompts(...).tokens`).
    batch: text rows per call (rounded up to a multiple of the mesh's batch shards).
    mesh: shard the rows over the mesh's batch axes; None: a one-device mesh
      (`sharding.one_device_mesh`).

  Returns:
    float32 `[K, C, D]` unnormalised text embeddings (replicated over `mesh`).
  """
  mesh = sharding.one_device_mesh() if mesh is None else mesh
  text_ids = np.asarray(text_ids, np.int32)
  if text_ids.ndim != 3:
    raise ValueError(f"text_ids must be [K, C, L] (texts x classes x tokens), got shape {text_ids.shape}.")
  num_texts, num_classes, length = text_ids.shape
  shards = sharding.batch_shards(mesh)
  batch = -(-min(batch, num_texts * num_classes) // shards) * shards
  rows = _pad_rows(text_ids.reshape(-1, length), batch)
  encode = _text_encoder(model, mesh)
  variables = _place_variables(variables, mesh)
  chunks = [encode(variables, _shared_rows(rows[i:i + batch], mesh)) for i in range(0, len(rows), batch)]
  return jnp.concatenate(chunks)[:num_texts * num_classes].reshape(num_texts, num_classes, -1)


def video_probabilities(model: model_lib.EZCLIP, variables: Any, video: jax.Array,
                        text_embeddings: jax.Array) -> jax.Array:
  """Class probabilities of uint8 videos `[B, V, T, H, W, 3]` (V views), averaged over views -> `[B, C]`.

  `text_embeddings` float32 `[K, C, D]` (`encode_class_texts`). Traceable: callers jit it.
  """
  batch, views = video.shape[:2]
  clips = input_pipeline.normalize(video.reshape(batch * views, *video.shape[2:]))
  frames = model.apply(variables, clips, method=model.encode_video)
  return class_probabilities(frames.reshape(batch, views, *frames.shape[1:]), text_embeddings)


@functools.lru_cache(maxsize=16)
def video_scorer(model: model_lib.EZCLIP, mesh: Mesh):
  """`(variables, video uint8 [B, V, T, H, W, 3], labels, mask, texts [K, C, D]) -> (probs [B, C], labels, mask)`.

  Labels and mask pass through so that, replicated on the way out, every process sees the
  whole global batch.
  """

  def score(variables, video, labels, mask, text_embeddings):
    return video_probabilities(model, variables, video, text_embeddings), labels, mask

  return jax.jit(score, out_shardings=sharding.replicated(mesh))


# --------------------------------------------------------------------------- accounting


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Counts of one evaluation over every (unmasked) sample.

  Attributes:
    confusion: int64 `[C, C]`, rows the true class, columns the top-1 prediction.
    topk_correct: samples whose class is among the `topk` most probable.
    topk: the k of `top5`: 5, or the class count when there are fewer classes.
  """
  confusion: np.ndarray
  topk_correct: int
  topk: int

  @property
  def num_samples(self) -> int:
    return int(self.confusion.sum())

  @property
  def num_classes(self) -> int:
    return self.confusion.shape[0]

  @property
  def top1(self) -> float:
    """Percent of samples whose most probable class is right (official `top1`)."""
    return 100.0 * float(np.trace(self.confusion)) / self.num_samples

  @property
  def top5(self) -> float:
    """Percent of samples whose class is among the `topk` most probable."""
    return 100.0 * self.topk_correct / self.num_samples

  @property
  def class_counts(self) -> np.ndarray:
    """int64 `[C]` samples of each true class."""
    return self.confusion.sum(axis=1)

  @property
  def per_class_accuracy(self) -> np.ndarray:
    """float64 `[C]` top-1 percent per true class; NaN for classes without samples."""
    counts = self.class_counts
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(counts > 0, 100.0 * np.diag(self.confusion) / counts, np.nan)

  @property
  def mean_class_accuracy(self) -> float:
    """Mean of `per_class_accuracy` over the classes that have samples."""
    return float(np.nanmean(self.per_class_accuracy))

  def summary(self) -> dict[str, float]:
    """Scalars for logging."""
    return {"top1": self.top1, "top5": self.top5, "mean_class_accuracy": self.mean_class_accuracy,
            "num_samples": float(self.num_samples)}


class Accumulator:
  """Adds up batches of class probabilities into an `EvalResult`; masked rows are ignored."""

  def __init__(self, num_classes: int, topk: int = TOPK):
    self.num_classes = num_classes
    self.topk = min(topk, num_classes)
    self._confusion = np.zeros((num_classes, num_classes), np.int64)
    self._topk_correct = 0

  def update(self, probabilities: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Counts one batch.

    Args:
      probabilities: `[B, C]` class scores.
      labels: int `[B]` true classes (anything for masked rows, e.g. -1).
      mask: bool `[B]`, False for padding; None: every row is real.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    if probabilities.shape != (len(labels), self.num_classes) or mask.shape != labels.shape:
      raise ValueError(f"Expected probabilities [B, {self.num_classes}], labels [B] and mask [B]; got "
                       f"{probabilities.shape}, {labels.shape} and {mask.shape}.")
    probabilities, labels = probabilities[mask], labels[mask].astype(np.int64)
    bad = (labels < 0) | (labels >= self.num_classes)
    if bad.any():
      raise ValueError(f"Label {labels[bad][0]} of an unmasked sample is not a class id (0..{self.num_classes - 1}).")
    predictions = np.argmax(probabilities, axis=-1)
    np.add.at(self._confusion, (labels, predictions), 1)
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :self.topk]
    self._topk_correct += int((top == labels[:, None]).any(axis=-1).sum())

  def result(self) -> EvalResult:
    return EvalResult(self._confusion.copy(), self._topk_correct, self.topk)


# ----------------------------------------------------------------------------- evaluate


def _check_batch(batch: Mapping[str, np.ndarray], number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(video [B, V, T, H, W, 3] uint8, label [B], mask [B])` of eval batch `number`."""
  for key in ("video", "label"):
    if key not in batch:
      raise KeyError(f"Eval batch {number} has no {key!r} (keys: {sorted(batch)}); expected 'video' uint8 "
                     "[B, V, T, H, W, 3], 'label' [B] and 'mask' [B] as input_pipeline.eval_dataset yields.")
  video, labels = np.asarray(batch["video"]), np.asarray(batch["label"])
  if video.ndim == 5:
    video = video[:, None]
  if video.dtype != np.uint8 or video.ndim != 6 or video.shape[-1] != 3 or len(video) != len(labels):
    raise ValueError(f"Eval batch {number}: 'video' must be uint8 [B, V, T, H, W, 3] (or [B, T, H, W, 3]) with "
                     f"B = len(label) = {len(labels)}; got {video.dtype} {video.shape}.")
  mask = np.asarray(batch["mask"], bool) if "mask" in batch else np.ones(labels.shape, bool)
  return video, labels.astype(np.int32), mask


def scored_batches(model: model_lib.EZCLIP, variables: Any, batches: Iterable[Mapping[str, np.ndarray]],
                   text_embeddings: jax.Array, *, mesh: Mesh | None = None
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Class probabilities of every eval batch, on the host.

  Args:
    model: the EZ-CLIP module.
    variables: its variables (`{"params": ...}`).
    batches: eval batches (`input_pipeline.eval_dataset`; this process's share when
      multi-host): `video` uint8 `[B, V, T, H, W, 3]`, `label` int `[B]`, `mask` bool `[B]`.
    text_embeddings: float32 `[K, C, D]` (`encode_class_texts`).
    mesh: shard each batch over the mesh's batch axes (rows padded and masked to fit);
      None: a one-device mesh (`sharding.one_device_mesh`).

  Yields:
    Per batch, over all processes' rows in process order: probabilities float32 `[N, C]`,
    labels int32 `[N]`, mask bool `[N]` (False for padding).
  """
  mesh = sharding.one_device_mesh() if mesh is None else mesh
  variables = _place_variables(variables, mesh)
  text_embeddings = _place_variables(text_embeddings, mesh)
  scorer = video_scorer(model, mesh)
  multiple = _local_shards(mesh)
  pending = None  # Fetched after the next batch is dispatched, so the device never waits on the host.
  for number, batch in enumerate(batches):
    video, labels, mask = _check_batch(batch, number)
    video, labels, mask = _pad_rows(video, multiple), _pad_rows(labels, multiple, -1), _pad_rows(mask, multiple)
    outputs = scorer(variables, _local_rows(video, mesh), _local_rows(labels, mesh), _local_rows(mask, mesh),
                     text_embeddings)
    if pending is not None:
      yield jax.device_get(pending)
    pending = outputs
  if pending is not None:
    yield jax.device_get(pending)


def evaluate(model: model_lib.EZCLIP, variables: Any, batches: Iterable[Mapping[str, np.ndarray]],
             text_ids: np.ndarray, *, mesh: Mesh | None = None, text_batch: int = 256) -> EvalResult:
  """Zero-shot accuracy of `model` over every sample of `batches`.

  Args:
    model: the EZ-CLIP module.
    variables: its variables (`{"params": ...}`).
    batches: eval batches (`input_pipeline.eval_dataset`; this process's share when
      multi-host): `video` uint8 `[B, V, T, H, W, 3]`, `label` int `[B]`, `mask` bool `[B]`.
    text_ids: int32 `[K, C, L]` class texts; embedded once.
    mesh: shard each batch over the mesh's batch axes (rows padded and masked to fit);
      None: a one-device mesh (`sharding.one_device_mesh`).
    text_batch: text rows per encoder call.

  Returns:
    The counts over all processes' samples (the same on every process).
  """
  mesh = sharding.one_device_mesh() if mesh is None else mesh
  variables = _place_variables(variables, mesh)
  text_embeddings = encode_class_texts(model, variables, text_ids, text_batch, mesh=mesh)
  accumulator = Accumulator(text_embeddings.shape[1])
  for probabilities, labels, mask in scored_batches(model, variables, batches, text_embeddings, mesh=mesh):
    accumulator.update(probabilities, labels, mask)
  result = accumulator.result()
  if not result.num_samples:
    raise ValueError("The eval batches held no unmasked sample.")
  return result


# ------------------------------------------------------------------------------ reports


# Up to this many classes, each cell shows its count.
ANNOTATED_CLASSES = 30


def _cell_pixels(num_classes: int) -> int:
  return 30 if num_classes <= ANNOTATED_CLASSES else 15


def confusion_png_pixels(num_classes: int) -> int:
  """Side of the square confusion-matrix PNG: 300 for the labels, title and colour bar plus
  30 pixels per class (15 above `ANNOTATED_CLASSES`), between 600 and 4000 pixels."""
  return min(4000, max(600, 300 + _cell_pixels(num_classes) * num_classes))


def save_confusion_matrix_png(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, *,
                              title: str = "") -> None:
  """Draws the confusion matrix: cells coloured by the fraction of their true class (row), with
  their counts written in up to `ANNOTATED_CLASSES` classes, and the class names as ticks.

  Args:
    matrix: `[C, C]` counts, rows true classes, columns predictions.
    class_names: `[C]` names for the ticks (every n-th when they would not fit).
    path: the PNG, `confusion_png_pixels(C)` pixels square (parent folders are created).
    title: drawn above the matrix, e.g. the dataset and the training step.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  matrix = np.asarray(matrix)
  num_classes = len(class_names)
  if matrix.shape != (num_classes, num_classes):
    raise ValueError(f"Confusion matrix of shape {matrix.shape} does not match {num_classes} class names.")
  dpi = 100
  pixels = confusion_png_pixels(num_classes)
  rows = matrix.sum(axis=1, keepdims=True)
  fractions = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
  fig, ax = plt.subplots(figsize=(pixels / dpi, pixels / dpi), dpi=dpi, layout="constrained")
  image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  fig.colorbar(image, ax=ax, shrink=0.6, label="fraction of the true class")
  if num_classes <= ANNOTATED_CLASSES:
    _write_counts(ax, matrix, fractions)
  # Tick labels need about 11 pixels each at 7 points.
  cell = (pixels - 300) / num_classes
  ticks = np.arange(0, num_classes, max(1, math.ceil(11 / cell)))
  labels = [class_names[i] for i in ticks]
  ax.set_xticks(ticks, labels, rotation=90, fontsize=7 if cell < 20 else 9)
  ax.set_yticks(ticks, labels, fontsize=7 if cell < 20 else 9)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(os.fspath(path), dpi=dpi)
  plt.close(fig)


def _write_counts(ax, matrix: np.ndarray, fractions: np.ndarray) -> None:
  """The count in each non-empty cell, white on dark cells."""
  fontsize = 9 if len(matrix) <= 15 else 7
  for (true, predicted), count in np.ndenumerate(matrix):
    if count:
      colour = "white" if fractions[true, predicted] > 0.5 else "black"
      ax.text(predicted, true, str(count), ha="center", va="center", fontsize=fontsize, color=colour)


def save_per_class_csv(result: EvalResult, class_names: Sequence[str], path: str | os.PathLike) -> None:
  """Writes `id,name,samples,correct,accuracy` (percent; empty for classes without samples)."""
  if len(class_names) != result.num_classes:
    raise ValueError(f"{len(class_names)} class names for a result over {result.num_classes} classes.")
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  correct = np.diag(result.confusion)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "name", "samples", "correct", "accuracy"])
    for i, (name, count, accuracy) in enumerate(zip(class_names, result.class_counts, result.per_class_accuracy)):
      writer.writerow([i, name, int(count), int(correct[i]), "" if np.isnan(accuracy) else f"{accuracy:.4f}"])


# ---------------------------------------------------------------------------- protocols


def _top1(value: EvalResult | float) -> float:
  return value.top1 if isinstance(value, EvalResult) else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and population standard deviation (ddof 0), as reported over the 3 splits."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    raise ValueError("mean_std of no values.")
  return float(values.mean()), float(values.std())


def zero_shot_summary(results: Sequence[EvalResult]) -> dict[str, float]:
  """Zero-shot protocol: top-1/top-5 mean and std over the official splits.

  Args:
    results: one result per split (UCF101/HMDB51 splits 1-3, or K600's 3 class subsets).

  Returns:
    `top1_mean`, `top1_std`, `top5_mean`, `top5_std` (percent) and `num_splits`.
  """
  top1_mean, top1_std = mean_std([r.top1 for r in results])
  top5_mean, top5_std = mean_std([r.top5 for r in results])
  return {"top1_mean": top1_mean, "top1_std": top1_std, "top5_mean": top5_mean, "top5_std": top5_std,
          "num_splits": float(len(results))}


def harmonic_mean(base: float, novel: float) -> float:
  """`2 * base * novel / (base + novel)`; 0 when both are 0."""
  return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def base_to_novel_summary(base: Sequence[EvalResult | float], novel: Sequence[EvalResult | float]) -> dict[str, float]:
  """Base-to-novel protocol: top-1 on base and novel classes averaged over the training
  splits (seeds), and the harmonic mean of the two averages.

  Returns:
    `base`, `novel`, `hm` (percent).
  """
  if len(base) != len(novel) or not base:
    raise ValueError(f"Need one base and one novel result per split, got {len(base)} and {len(novel)}.")
  base_mean = mean_std([_top1(r) for r in base])[0]
  novel_mean = mean_std([_top1(r) for r in novel])[0]
  return {"base": base_mean, "novel": novel_mean, "hm": harmonic_mean(base_mean, novel_mean)}


# ------------------------------------------------------------------ a config's datasets


def evaluate_datasets(config, model: model_lib.EZCLIP, params: Any, mesh: Mesh, step: int, writer,
                      workdir: pathlib.Path) -> dict[str, EvalResult]:
  """Evaluates every enabled dataset of `config.data.evals` and their protocol summaries.

  Logs each dataset's `EvalResult.summary()` as `eval/NAME` and each summary as
  `protocol/GROUP` with `writer` (a `metrics.MetricWriter`) at `step`, and, on process 0,
  writes WORKDIR/plots/confusion_NAME_STEP.png and per_class_NAME_STEP.csv and prints a
  line for each (`console.eval_lines`).

  Returns:
    {dataset name: result}, in config order.
  """
  results = {}
  specs = datasets.enabled_evals(config)
  for name, spec in specs.items():
    source = datasets.make_source(spec, config.data.official_repo, config.data.skip_bad)
    class_names, prompts = datasets.class_prompts(spec, config.data.official_repo, model.config.context_length)
    result = evaluate(model, {"params": params}, datasets.eval_batches(config, source, model.config), prompts.tokens,
                      mesh=mesh)
    writer.write_scalars(step, result.summary(), split=f"eval/{name}")
    if jax.process_index() == 0:
      plots = workdir / "plots"
      save_confusion_matrix_png(
          result.confusion, class_names, plots / f"confusion_{name}_{step}.png",
          title=f"{spec.name or name}, step {step}: top-1 {result.top1:.1f}% of {result.num_samples} videos")
      save_per_class_csv(result, class_names, plots / f"per_class_{name}_{step}.csv")
    results[name] = result
  summaries = protocol_summaries(specs, results)
  for group, summary in summaries.items():
    writer.write_scalars(step, summary, split=f"protocol/{group}")
  for line in console.eval_lines(step, results, summaries):
    console.show(line)
  return results


def protocol_summaries(specs: Mapping[str, Any], results: Mapping[str, EvalResult]) -> dict[str, dict]:
  """Zero-shot mean/std over each `group` of datasets (e.g. UCF101 splits 1-3); base-to-novel
  harmonic mean when there are `base` and `novel` groups."""
  groups = {}
  for name, spec in specs.items():
    if spec.group:
      groups.setdefault(spec.group, []).append(results[name])
  summaries = {group: zero_shot_summary(members) for group, members in groups.items()}
  if "base" in groups and "novel" in groups:
    summaries["base_to_novel"] = base_to_novel_summary(groups["base"], groups["novel"])
  return summaries


def selection_dataset(specs: Mapping[str, Any]) -> str | None:
  """The dataset the best checkpoint is selected on: the first with `role` val (never a test split)."""
  return next((name for name, spec in specs.items() if spec.role == "val"), None)
