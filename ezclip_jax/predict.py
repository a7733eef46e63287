"""Zero-shot action recognition on your own videos: top-k class names per video.

  python -m ezclip_jax.predict --checkpoint DIR --labels "archery,juggling,surfing" VIDEO_OR_DIR ...
  python -m ezclip_jax.predict --checkpoint DIR --label-file labels.csv --json clips/

DIR is anything `ezclip_jax.checkpoint.load_pretrained` reads: a converted CLIP / EZ-CLIP
(`python -m convert.torch_to_flax`) or a training workdir (its best checkpoint, else its
latest). Inputs are video files, frame folders (a directory of numbered JPEG frames is one
video: `img_00001.jpg ...`, `frame_1.jpg ...`) and directories, searched recursively for
video files (`video_io.VIDEO_EXTENSIONS`) and frame folders, in sorted order.

Every video is scored exactly like evaluation: T frames at the segment centres
(`transforms.eval_frame_indices`), the short side resized to 256/224 of the model's
resolution and centre-cropped (`input_pipeline.eval_dataset`), and class probabilities
from `evaluate.class_probabilities` over the 16 templates or the LLM descriptions
(`text_prompts.build_prompts`). The class texts' features depend only on the text tower,
so they are cached on disk keyed by a hash of its parameters and of the texts.

A video that cannot be read is reported with the reason and the others are still
scored. Exit status: 0 all videos scored, 1 some failed, 2 a usage error.
"""

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import logging

from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import evaluate
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import text_prompts
from ezclip_jax import video_io
from ezclip_jax import windows as windows_lib

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CACHE_ENV = "EZCLIP_JAX_CACHE"
JPEG_SUFFIXES = video_io.JPEG_SUFFIXES
_CACHE_VERSION = b"ezclip_jax text features v1"


class UsageError(ValueError):
  """Bad command-line input (labels, paths, checkpoint); the message says what was expected."""


# ------------------------------------------------------------------------------- inputs


def is_frame_folder(path: str | os.PathLike) -> bool:
  """A directory that directly holds JPEG files is one video."""
  path = pathlib.Path(path)
  return path.is_dir() and any(p.suffix.lower() in JPEG_SUFFIXES and p.is_file() for p in path.iterdir())


def find_videos(paths: Sequence[str | os.PathLike], duplicates: list[tuple[str, str]] | None = None) -> list[str]:
  """Expands directories into the videos below them, each file once.

  Args:
    paths: video files, frame folders and directories. A file named here is read whatever
      its extension; inside directories only files with a `video_io.VIDEO_EXTENSIONS`
      extension count, and subdirectories holding JPEG files are frame folders.
    duplicates: if given, receives `(path, first path)` for every path that leads to a file or
      folder already found (a symlink, a symlink loop, a path given twice); those are left out.

  Returns:
    Video files and frame folders, each directory's in sorted order.

  Raises:
    UsageError: a path does not exist, or a directory holds no video.
  """
  found: dict[str, str] = {}  # real path -> the path it was first found as
  repeats = [] if duplicates is None else duplicates
  for path in map(pathlib.Path, paths):
    if not path.exists():
      raise UsageError(f"No such file or directory: {path}")
    if path.is_dir() and not is_frame_folder(path):
      before = len(found) + len(repeats)
      _walk(path, found, repeats, set())
      if len(found) + len(repeats) == before:
        raise UsageError(f"{path} holds no video files ({', '.join(video_io.VIDEO_EXTENSIONS)}) and no folders "
                         "of JPEG frames.")
    else:
      _add(path, found, repeats)
  return list(found.values())


def _add(path: pathlib.Path, found: dict[str, str], repeats: list[tuple[str, str]]) -> None:
  real = os.path.realpath(path)
  if real in found:
    repeats.append((str(path), found[real]))
  else:
    found[real] = str(path)


def _walk(directory: pathlib.Path, found: dict[str, str], repeats: list[tuple[str, str]], visiting: set[str]) -> None:
  visiting = visiting | {os.path.realpath(directory)}
  for path in sorted(directory.iterdir()):
    if path.is_dir() and not is_frame_folder(path):
      if os.path.realpath(path) in visiting:  # a symlink back up the tree
        repeats.append((str(path), os.path.realpath(path)))
      else:
        _walk(path, found, repeats, visiting)
    elif path.is_dir() or path.suffix.lower() in video_io.VIDEO_EXTENSIONS:
      _add(path, found, repeats)


def duplicates_warning(duplicates: Sequence[tuple[str, str]]) -> str:
  """One line about the paths `find_videos` left out."""
  path, first = duplicates[0]
  return (f"warning: {len(duplicates)} path{'' if len(duplicates) == 1 else 's'} led to a video or folder already "
          f"found (symlinks or repeated arguments), each video is scored once: e.g. {path} is {first}.")


# Kept here for callers of `predict.frame_folder_layout`.
frame_folder_layout = video_io.frame_folder_layout


class VideoFiles:
  """A grain source of video files and frame folders (for `input_pipeline.eval_dataset`).

  Records carry label 0. Why a video could not be read is kept in `errors` {path: message}
  (the pipeline masks such videos out).
  """

  def __init__(self, paths: Sequence[str]):
    self.paths = tuple(os.fspath(p) for p in paths)
    self.errors: dict[str, str] = {}

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    path = self.paths[int(index)]
    record = {"video_id": os.path.basename(path), "label": 0, "path": path, "origin": path}
    with self._noting_errors(path):
      if os.path.isdir(path):
        template, index_bias, num_frames = frame_folder_layout(path)
        return record | {"media": "frames", "num_frames": num_frames, "template": template,
                         "index_bias": index_bias}
      return record | {"media": "video", "num_frames": video_io.probe_num_frames(path)}

  def read_frames(self, record: dict, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Decodes the frames at 0-based `indices` of `record`, uint8 `[len(indices), H, W, 3]`."""
    indices = np.asarray(indices).reshape(-1)
    with self._noting_errors(record["path"]):
      if record["media"] == "frames":
        return video_io.read_jpeg_frames(record["path"], indices, record["template"], record["index_bias"])
      return video_io.read_video_frames(record["path"], indices, expected_frames=record["num_frames"])

  @contextlib.contextmanager
  def _noting_errors(self, path: str) -> Iterator[None]:
    try:
      yield
    except video_io.DataError as e:
      self.errors[path] = str(e)
      raise
    except OSError as e:
      self.errors[path] = f"Unreadable {path}: {e}"
      raise video_io.DataError(self.errors[path]) from e

  def __repr__(self) -> str:
    return f"VideoFiles(num_videos={len(self)})"


def eval_batches(source: VideoFiles, config: model_lib.ModelConfig, *, batch_size: int, num_clips: int = 1,
                 num_crops: int = 1) -> grain.IterDataset:
  """The evaluation pipeline over `source` for a model of `config` (unreadable videos masked out).

  Yields:
    `video` uint8 `[B, V, T, S, S, 3]` (V = clips x crops, S the model's resolution), `index`
    int32 `[B]` (position in `source`), `mask` bool `[B]`.
  """
  resolution = config.image_resolution
  return input_pipeline.eval_dataset(
      source, batch_size=batch_size, num_frames=config.num_frames, num_clips=num_clips, num_crops=num_crops,
      resize_size=round(resolution * 256 / 224),  # official: 256 for 224 crops
      crop_size=resolution, skip_bad=True, shard_options=grain.sharding.NoSharding(), num_workers=0)


# ------------------------------------------------------------------------------- labels


def check_class_names(names: Sequence[str], origin: str) -> tuple[str, ...]:
  """Class names must be non-empty and distinct; `origin` names where they came from."""
  names = tuple(names)
  if not names:
    raise UsageError(f"{origin}: no class names.")
  for position, name in enumerate(names, start=1):
    if not name:
      raise UsageError(f"{origin}: class {position} of {len(names)} is empty.")
  seen = set()
  for name in names:
    if name in seen:
      raise UsageError(f"{origin}: class {name!r} is listed twice.")
    seen.add(name)
  return names


def parse_labels(text: str) -> tuple[str, ...]:
  """`"archery, juggling"` -> `("archery", "juggling")`."""
  return check_class_names([name.strip() for name in text.split(",")] if text.strip() else [], "--labels")


def read_label_file(path: str | os.PathLike) -> tuple[str, ...]:
  """Class names from a label CSV (`id,name` header, `text_prompts.read_class_names`) or one name per
  line (blank lines skipped)."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      lines = [line.strip() for line in f]
  except OSError as e:
    raise UsageError(f"Cannot read the label file: {e}") from e
  if lines and lines[0].replace(" ", "").lower() == "id,name":
    try:
      return check_class_names(text_prompts.read_class_names(path), str(path))
    except ValueError as e:
      raise UsageError(str(e)) from e
  return check_class_names([line for line in lines if line], str(path))


# -------------------------------------------------------------------------- text features


def _text_cache_key(params: dict, config: model_lib.ModelConfig, prompts: text_prompts.Prompts) -> str:
  """Hash of everything the class texts' features depend on: the text tower and the texts."""
  digest = hashlib.sha256(_CACHE_VERSION)
  digest.update(config.dtype.encode())
  text_tower = {k: v for k, v in params.items() if k != "visual"}
  for path, leaf in jax.tree_util.tree_flatten_with_path(text_tower)[0]:
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  digest.update(json.dumps(prompts.texts).encode())
  digest.update(prompts.tokens.tobytes())
  return digest.hexdigest()


def default_cache_dir() -> pathlib.Path:
  """`$EZCLIP_JAX_CACHE`, else `$XDG_CACHE_HOME/ezclip_jax`, else `~/.cache/ezclip_jax`."""
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "ezclip_jax"


@dataclasses.dataclass(frozen=True)
class TextFeatures:
  """Embedded class texts.

  Attributes:
    embeddings: float32 `[K, C, D]` unnormalised embeddings of K texts per class.
    cache_file: the cache file read or written, or None without a cache.
    from_cache: whether `embeddings` were read from `cache_file`.
  """
  embeddings: np.ndarray
  cache_file: pathlib.Path | None = None
  from_cache: bool = False


def text_features(model: model_lib.EZCLIP, variables: Any, class_names: Sequence[str],
                  descriptions_csv: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None) -> TextFeatures:
  """The class texts' embeddings, from `cache_dir` when this text tower has embedded these texts before.

  Args:
    model: the EZ-CLIP module.
    variables: its variables (`{"params": ...}`).
    class_names: `[C]` names.
    descriptions_csv: LLM descriptions (`SNo,Class Name,description`) instead of the templates.
    cache_dir: where `text_features/<hash>.npy` files live; None: no cache.

  Returns:
    The embeddings and where they were cached.
  """
  prompts = text_prompts.build_prompts(class_names, descriptions_csv,
                                       context_length=model.config.context_length, truncate=True)
  if cache_dir is None:
    return TextFeatures(np.asarray(evaluate.encode_class_texts(model, variables, prompts.tokens), np.float32))
  path = pathlib.Path(cache_dir) / "text_features" / (
      _text_cache_key(variables["params"], model.config, prompts) + ".npy")
  expected = (*prompts.tokens.shape[:2], model.config.embed_dim)
  if path.is_file():
    try:
      cached = np.load(path)
      if cached.shape == expected and cached.dtype == np.float32:
        return TextFeatures(cached, path, from_cache=True)
      logging.warning("Ignoring %s: shape %s %s, expected %s float32.", path, cached.shape, cached.dtype, expected)
    except (OSError, ValueError) as e:
      logging.warning("Ignoring unreadable text feature cache %s: %s", path, e)
  features = np.asarray(evaluate.encode_class_texts(model, variables, prompts.tokens), np.float32)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  with open(tmp, "wb") as f:
    np.save(f, features)
  os.replace(tmp, path)
  return TextFeatures(features, path)


def overlong_warnings(class_names: Sequence[str], descriptions_csv: str | os.PathLike | None,
                      context_length: int) -> list[str]:
  """A line per class whose texts are longer than the text tower reads (they are cut, silently otherwise)."""
  prompts = text_prompts.build_prompts(class_names, descriptions_csv, context_length=context_length, truncate=True)
  return [f"warning: class {class_names[c]!r}: the text {_shorten(text)!r} is {length} tokens, more than the "
          f"model's {context_length}; it is cut, so classes that differ only after token {context_length} score "
          "alike." for c, (text, length) in sorted(text_prompts.overlong_texts(prompts.texts, context_length).items())]


def _shorten(text: str, width: int = 60) -> str:
  return text if len(text) <= width else text[:width - 3] + "..."


# ---------------------------------------------------------------------------- prediction


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One video's result.

  Attributes:
    path: the video file or frame folder.
    probabilities: float32 `[C]` class probabilities, or None when it could not be read.
    error: why it could not be read, or None.
  """
  path: str
  probabilities: np.ndarray | None = None
  error: str | None = None

  def top(self, class_names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` most probable `(class name, probability)`, most probable first."""
    if self.probabilities is None:
      return []
    order = np.argsort(-self.probabilities, kind="stable")[:k]
    return [(class_names[i], float(self.probabilities[i])) for i in order]


@functools.lru_cache(maxsize=16)
def _scorer(model: model_lib.EZCLIP):
  """`(variables, video uint8 [B, V, T, S, S, 3], texts [K, C, D]) -> probabilities [B, C]`."""
  return jax.jit(functools.partial(evaluate.video_probabilities, model))


def score_videos(model: model_lib.EZCLIP, variables: Any, videos: Sequence[str], text_embeddings: np.ndarray, *,
                 batch_size: int = 8, num_clips: int = 1, num_crops: int = 1) -> list[Prediction]:
  """Class probabilities of each video (file or frame folder) against embedded class texts.

  Args:
    model: the EZ-CLIP module.
    variables: its variables.
    videos: video files and frame folders (`find_videos` expands directories).
    text_embeddings: float32 `[K, C, D]` (`text_features`).
    batch_size: videos per model call (fewer when there are fewer videos).
    num_clips: temporal views per video, as in evaluation.
    num_crops: spatial views per video, 1 (centre) or 3.

  Returns:
    One `Prediction` per video, in order; unreadable videos carry the `error`.
  """
  source = VideoFiles(videos)
  if not len(source):
    return []
  probabilities: dict[int, np.ndarray] = {}
  score = _scorer(model)
  text_embeddings = jax.device_put(np.asarray(text_embeddings, np.float32))
  batches = eval_batches(source, model.config, batch_size=min(batch_size, len(source)), num_clips=num_clips,
                         num_crops=num_crops)
  for batch in batches:
    mask = np.asarray(batch["mask"])
    probs = np.asarray(score(variables, batch["video"], text_embeddings))
    probabilities.update(zip(np.asarray(batch["index"])[mask].tolist(), probs[mask]))
  return [Prediction(path, probabilities.get(i),
                     None if i in probabilities else source.errors.get(path, f"{path} could not be read."))
          for i, path in enumerate(source.paths)]


def predict_videos(model: model_lib.EZCLIP, variables: Any, paths: Sequence[str | os.PathLike],
                   class_names: Sequence[str], *, descriptions_csv: str | os.PathLike | None = None,
                   batch_size: int = 8, num_clips: int = 1, num_crops: int = 1,
                   cache_dir: str | os.PathLike | None = None) -> list[Prediction]:
  """Zero-shot class probabilities of videos, for scripts and notebooks.

  Args:
    model: the EZ-CLIP module (`ezclip_jax.load_pretrained`).
    variables: its variables.
    paths: video files, frame folders and directories (see `find_videos`).
    class_names: `[C]` class names, put into the 16 templates (or looked up in `descriptions_csv`).
    descriptions_csv: LLM descriptions instead of templates.
    batch_size: videos per model call.
    num_clips: temporal views per video.
    num_crops: spatial views per video (1 or 3).
    cache_dir: cache the class texts' features here; None: no cache.

  Returns:
    One `Prediction` per video found (`Prediction.top(class_names, k)` for the best classes).
  """
  class_names = check_class_names(class_names, "class_names")
  videos = find_videos(paths)
  texts = text_features(model, variables, class_names, descriptions_csv, cache_dir)
  return score_videos(model, variables, videos, texts.embeddings, batch_size=batch_size, num_clips=num_clips,
                      num_crops=num_crops)


# -------------------------------------------------------------------------------- output


def format_table(predictions: Sequence[Prediction], class_names: Sequence[str], top_k: int = 5) -> str:
  """Per video: its path, then rank, label and probability of its `top_k` classes (or its error)."""
  width = max(len("label"), *(len(name) for name in class_names))
  lines = []
  for prediction in predictions:
    lines.append(prediction.path)
    if prediction.error is not None:
      lines.append(f"  error: {prediction.error}")
      continue
    lines.append(f"  {'rank':>4}  {'label':<{width}}  probability")
    for rank, (name, probability) in enumerate(prediction.top(class_names, top_k), start=1):
      lines.append(f"  {rank:>4}  {name:<{width}}  {probability:11.4f}")
  return "\n".join(lines)


def to_json(predictions: Sequence[Prediction], class_names: Sequence[str], top_k: int = 5) -> list[dict]:
  """`[{"path", "predictions": [{"label", "probability"}, ...]} or {"path", "error"}]`, one per video."""
  out = []
  for prediction in predictions:
    if prediction.error is not None:
      out.append({"path": prediction.path, "error": prediction.error})
    else:
      top = prediction.top(class_names, top_k)
      out.append({"path": prediction.path,
                  "predictions": [{"label": name, "probability": probability} for name, probability in top]})
  return out


# ------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m ezclip_jax.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Zero-shot action recognition: the most probable class names of each video.",
      epilog="\n\n".join(textwrap.fill(paragraph, 80) for paragraph in (
          "Inputs: video files (read whatever their extension), frame folders (a directory of numbered JPEG "
          "frames, e.g. img_00001.jpg ..., is one video) and directories (searched recursively for files ending "
          f"in {' '.join(video_io.VIDEO_EXTENSIONS)} and for frame folders, in sorted order; other files there "
          "are ignored).",
          "Output: per video, a table of rank, label and probability (or --json). Exit status: 0 every video "
          "scored, 1 some could not be read (each is reported with the reason), 2 usage error.")))
  parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, frame folders, directories")
  parser.add_argument("--checkpoint", required=True,
                      help="converted pretrained directory (python -m convert.torch_to_flax) or training workdir")
  labels = parser.add_mutually_exclusive_group(required=True)
  labels.add_argument("--labels", help='comma-separated class names, e.g. "archery,juggling"')
  labels.add_argument("--label-file", help="one class name per line, or a label CSV with an 'id,name' header")
  texts = parser.add_mutually_exclusive_group()
  texts.add_argument("--descriptions", help="LLM description CSV (SNo,Class Name,description) instead of the 16 "
                                            "templates (default: what a training workdir's model was trained with)")
  texts.add_argument("--templates", action="store_true",
                     help="the 16 templates, even for a workdir whose model was trained with descriptions")
  parser.add_argument("--top-k", type=int, default=5, help="classes shown per video (default 5)")
  parser.add_argument("--json", action="store_true", help="print a JSON list, one object per video")
  # Unreadable videos are reported in the output, not logged as well.
  console.add_log_level_argument(parser, default="error")
  parser.add_argument("--batch-size", type=int, default=8, help="videos per model call (default 8)")
  parser.add_argument("--num-clips", type=int, default=1, help="temporal views per video (default 1)")
  parser.add_argument("--num-crops", type=int, default=1, choices=(1, 3),
                      help="spatial views per video: 1 centre crop (default) or 3 along the long side")
  parser.add_argument("--cache-dir", default=None,
                      help=f"text feature cache (default ${CACHE_ENV}, else ~/.cache/ezclip_jax)")
  parser.add_argument("--no-cache", action="store_true", help="do not read or write the text feature cache")
  timeline = parser.add_argument_group("timelines (--timeline): when each action happens in long videos")
  timeline.add_argument("--timeline", action="store_true",
                        help="score sliding windows and merge them into segments (--batch-size counts windows)")
  timeline.add_argument("--window", type=float, default=4.0, help="window length in seconds (default 4)")
  timeline.add_argument("--stride", type=float, default=2.0, help="seconds between window starts (default 2)")
  timeline.add_argument("--fps", type=float, default=25.0, help="frame rate of frame folders (default 25)")
  timeline.add_argument("--min-probability", type=float, default=0.0,
                        help="windows whose best class is less probable are background (default 0)")
  timeline.add_argument("--plot", metavar="DIR", help="write a timeline PNG per video into DIR")
  return parser


def _check_numbers(args: argparse.Namespace) -> None:
  for flag in ("top_k", "batch_size", "num_clips"):
    if getattr(args, flag) < 1:
      raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}.")
  for flag in ("window", "stride", "fps"):
    if not getattr(args, flag) > 0:
      raise UsageError(f"--{flag} must be more than 0 seconds, got {getattr(args, flag)}.")
  if args.timeline and (args.num_clips, args.num_crops) != (1, 1):
    raise UsageError("--num-clips and --num-crops do not apply to --timeline (every window is one centre clip).")
  if not args.timeline and args.plot is not None:
    raise UsageError("--plot draws timelines: add --timeline.")


def _load(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str], model_lib.EZCLIP, Any]:
  """Checks the cheap arguments first, then loads the model."""
  _check_numbers(args)
  class_names = parse_labels(args.labels) if args.labels is not None else read_label_file(args.label_file)
  if args.descriptions is not None and not os.path.isfile(args.descriptions):
    raise UsageError(f"--descriptions: no such file {args.descriptions}")
  duplicates = []
  videos = find_videos(args.inputs, duplicates)
  if duplicates:
    print(duplicates_warning(duplicates), file=sys.stderr)
  model, variables = load_checkpoint(args.checkpoint)
  args.descriptions = training_descriptions(args.checkpoint, args.descriptions, args.templates, class_names)
  return class_names, videos, model, variables


def training_descriptions(checkpoint_dir: str, descriptions: str | None, templates: bool,
                          class_names: Sequence[str]) -> str | None:
  """The description CSV to score with: the one given, else the one the workdir's model was trained with.

  A training records its class texts in WORKDIR/text_setup.json (`text_prompts.save_setup`).
  Scoring with other texts than training's works worse (the demo: 7/64 right with templates,
  64/64 with its descriptions), so every mismatch is said on stderr.
  """
  setup = text_prompts.load_setup(checkpoint_dir)
  if setup is None:
    return descriptions
  if descriptions is not None:
    if setup["texts"] == "templates":
      print(f"warning: {checkpoint_dir} was trained with the 16 templates; scoring with --descriptions "
            f"{descriptions} instead.", file=sys.stderr)
    return descriptions
  trained = setup["descriptions"]
  if setup["texts"] == "templates" or templates:
    if trained is not None:
      print(f"warning: {checkpoint_dir} was trained with the descriptions in {trained}; scoring with the 16 "
            "templates (--templates) instead.", file=sys.stderr)
    return None
  problem = _descriptions_problem(trained, class_names)
  if problem is None:
    print(f"note: using the descriptions {checkpoint_dir} was trained with: {trained} (--templates for the 16 "
          "templates).", file=sys.stderr)
    return trained
  print(f"warning: {checkpoint_dir} was trained with the descriptions in {trained}, but {problem}; scoring with "
        "the 16 templates, which it was not trained with (pass --descriptions).", file=sys.stderr)
  return None


def _descriptions_problem(path: str, class_names: Sequence[str]) -> str | None:
  if not os.path.isfile(path):
    return "that file is gone"
  try:
    text_prompts.read_descriptions(path, class_names)
  except KeyError as e:
    return e.args[0].rstrip(".")
  return None


def load_checkpoint(directory: str) -> tuple[model_lib.EZCLIP, Any]:
  """`checkpoint.load_pretrained`, its failures as one-line `UsageError`s about --checkpoint."""
  if not pathlib.Path(directory).is_dir():
    raise UsageError(f"--checkpoint: no such directory {directory}")
  try:
    return checkpoint.load_pretrained(directory)
  except (FileNotFoundError, ValueError) as e:
    raise UsageError(f"--checkpoint {directory}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  with console.log_level(args.log_level):
    return _predict(args)


def _predict(args: argparse.Namespace) -> int:
  try:
    class_names, videos, model, variables = _load(args)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    try:
      texts = text_features(model, variables, class_names, args.descriptions, cache_dir)
    except KeyError as e:
      raise UsageError(f"--descriptions: {e.args[0]}") from e
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  if texts.cache_file is not None:
    print(f"class text features {'read from' if texts.from_cache else 'cached in'} {texts.cache_file}",
          file=sys.stderr)
  for line in overlong_warnings(class_names, args.descriptions, model.config.context_length):
    print(line, file=sys.stderr)
  if args.timeline:
    return _timelines(args, model, variables, videos, class_names, texts.embeddings)
  predictions = score_videos(model, variables, videos, texts.embeddings, batch_size=args.batch_size,
                             num_clips=args.num_clips, num_crops=args.num_crops)
  top_k = min(args.top_k, len(class_names))
  print(json.dumps(to_json(predictions, class_names, top_k), indent=2) if args.json
        else format_table(predictions, class_names, top_k))
  failed = sum(p.error is not None for p in predictions)
  print(f"{len(predictions)} video{'' if len(predictions) == 1 else 's'}: {len(predictions) - failed} scored, "
        f"{failed} failed.", file=sys.stderr)
  return EXIT_FAILED if failed else EXIT_OK


def timelines(model: model_lib.EZCLIP, variables: Any, videos: Sequence[str], class_names: Sequence[str],
              text_embeddings: np.ndarray, *, window: float = 4.0, stride: float = 2.0, folder_fps: float = 25.0,
              min_probability: float = 0.0, batch_size: int = 8,
              timing: windows_lib.Timing | None = None) -> list[windows_lib.Timeline]:
  """Class probabilities of sliding windows over each video, merged into segments (`ezclip_jax.windows`).

  Windows of all videos share batches; each is scored like a video by `score_videos`.
  """
  score = _scorer(model)
  text_embeddings = jax.device_put(np.asarray(text_embeddings, np.float32))

  jobs = windows_lib.probed_jobs(videos, folder_fps,
                                lambda info: windows_lib.slide(info.num_frames, info.fps, window, stride))

  results = windows_lib.run_windows(lambda clips: score(variables, clips, text_embeddings), jobs,
                                    num_segments=model.config.num_frames, resolution=model.config.image_resolution,
                                    batch_size=batch_size, timing=timing)
  return [windows_lib.timeline(results[path], path, class_names, min_probability) for path in videos]


def _timelines(args: argparse.Namespace, model: model_lib.EZCLIP, variables: Any, videos: Sequence[str],
               class_names: Sequence[str], text_embeddings: np.ndarray) -> int:
  lines = timelines(model, variables, videos, class_names, text_embeddings, window=args.window, stride=args.stride,
                    folder_fps=args.fps, min_probability=args.min_probability, batch_size=args.batch_size)
  top_k = min(args.top_k, len(class_names))
  print(json.dumps(windows_lib.to_json(lines, class_names, top_k), indent=2) if args.json
        else windows_lib.format_table(lines))
  if args.plot is not None:
    os.makedirs(args.plot, exist_ok=True)
    for line, name in zip(lines, windows_lib.plot_names(videos)):
      if line.error is None:
        windows_lib.plot(line, class_names, os.path.join(args.plot, name))
    print(f"timeline plots in {args.plot}", file=sys.stderr)
  failed = sum(line.error is not None for line in lines)
  print(f"{len(lines)} video{'' if len(lines) == 1 else 's'}: {len(lines) - failed} scored, {failed} failed.",
        file=sys.stderr)
  return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
  sys.exit(main())
