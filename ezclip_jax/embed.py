"""Embeds a video collection once, for labelling and search without decoding again (`ezclip_jax.search`).

  python -m ezclip_jax.embed --checkpoint DIR VIDEO_OR_DIR ... --out INDEX_DIR [--windows]

Per video the index stores the pooled video embedding: the mean over T frames of the video
tower's frame embeddings, the frames sampled exactly as predict samples them (segment centres
over the whole video, resized, centre-cropped), so class probabilities from it equal predict's.
With `--windows` it also stores the embeddings of sliding windows with their times
(`ezclip_jax.windows`, as `predict --timeline` cuts them).

Layout of INDEX_DIR:
  model.json                 the model (sha256 of its params, dtype, T, resolution) and window
                             settings; another model or other settings are refused.
  embeddings/<key>.npz       per video: `video` float32 [D]; with windows `window_times` [N, 2]
                             (seconds) and `windows` float32 [N, D]. Written to a temporary file
                             and renamed, so a file is complete or absent.
  manifest-<process>.jsonl   one line per finished video, appended after its embeddings:
                             path, size, mtime, duration, number of windows, file, error.

A rerun (after kill -9, or with more videos) skips videos whose size and mtime match their
manifest entry and recomputes changed ones; the newest entry of a path wins. Process i of n
(`jax.process_index()`, or --process-index / --process-count) embeds every n-th video and
writes its own manifest, so several processes or hosts can share INDEX_DIR.
Exit status: 0 all videos embedded, 1 some could not be read (recorded with the reason), 2 usage error.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ezclip_jax import console
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import windows as windows_lib

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_FILE = "model.json"
FORMAT = 1


class IndexMismatch(ValueError):
  """An index that does not fit the model or settings at hand; the message says why."""


# --------------------------------------------------------------------------------- model


def params_sha256(params: Any) -> str:
  """sha256 over every parameter's path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def model_identity(model: model_lib.EZCLIP, variables: Any) -> dict:
  """What an index's embeddings depend on: the params, dtype, T and resolution."""
  config = model.config
  return {"params_sha256": params_sha256(variables["params"]), "dtype": config.dtype,
          "num_frames": config.num_frames, "image_resolution": config.image_resolution,
          "embed_dim": config.embed_dim}


def describe(identity: dict) -> str:
  return (f"params sha256 {identity['params_sha256'][:12]}, {identity['dtype']}, T={identity['num_frames']}, "
          f"{identity['image_resolution']} px")


def check_model(index_dir: str | os.PathLike, identity: dict, checkpoint_dir: str) -> None:
  """Refuses an index built with another model (one line naming both)."""
  stored = read_model_file(index_dir)["model"]
  if stored != identity:
    raise IndexMismatch(f"{pathlib.Path(index_dir) / MODEL_FILE}: the index was built with another model "
                      f"({describe(stored)}) than --checkpoint {checkpoint_dir} ({describe(identity)}).")


def read_model_file(index_dir: str | os.PathLike) -> dict:
  path = pathlib.Path(index_dir) / MODEL_FILE
  try:
    return json.loads(path.read_text())
  except FileNotFoundError as e:
    raise IndexMismatch(f"{index_dir} is not an index: no {MODEL_FILE} (build one with python -m ezclip_jax.embed).") \
        from e
  except (OSError, ValueError) as e:
    raise IndexMismatch(f"{path}: unreadable ({e}).") from e


def _write_atomically(path: pathlib.Path, write: Callable[[Any], None], mode: str = "wb") -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  with open(tmp, mode) as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def open_index(index_dir: pathlib.Path, settings: dict, checkpoint_dir: str) -> None:
  """Creates INDEX_DIR/model.json, or checks that an existing one has the same model and settings."""
  if (index_dir / MODEL_FILE).exists():
    stored = read_model_file(index_dir)
    check_model(index_dir, settings["model"], checkpoint_dir)
    if stored.get("windows") != settings["windows"]:
      raise IndexMismatch(f"{index_dir / MODEL_FILE}: the index has windows {stored.get('windows')}, this run "
                        f"{settings['windows']}; use the same --windows/--window/--stride/--fps or another --out.")
    return
  (index_dir / "embeddings").mkdir(parents=True, exist_ok=True)
  text = json.dumps({"format": FORMAT, **settings}, indent=2) + "\n"
  _write_atomically(index_dir / MODEL_FILE, lambda f: f.write(text), "w")


# ------------------------------------------------------------------------------ manifest


def fingerprint(path: str) -> tuple[int, float]:
  """`(size, mtime)` of a video file, or of a frame folder's files together (the newest mtime)."""
  if os.path.isdir(path):
    stats = [os.stat(path)] + [e.stat() for e in os.scandir(path) if e.is_file()]
    return sum(s.st_size for s in stats[1:]), max(s.st_mtime_ns for s in stats) / 1e9
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime_ns / 1e9


def entry_key(path: str) -> str:
  return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:20]


def read_manifest(index_dir: str | os.PathLike) -> dict[str, dict]:
  """{path: newest entry} over every process's manifest; entries whose embeddings are gone are left out.

  A last line cut off by a kill is ignored (that video is embedded again).
  """
  entries: dict[str, dict] = {}
  for manifest in sorted(pathlib.Path(index_dir).glob("manifest-*.jsonl")):
    for line in manifest.read_text().splitlines():
      try:
        entry = json.loads(line)
      except ValueError:
        continue
      if entry["path"] not in entries or entry["time"] >= entries[entry["path"]]["time"]:
        entries[entry["path"]] = entry
  root = pathlib.Path(index_dir) / "embeddings"
  return {path: e for path, e in entries.items() if e["error"] is not None or (root / e["file"]).is_file()}


def _append_manifest(manifest: pathlib.Path, entry: dict) -> None:
  line = json.dumps(entry) + "\n"
  with open(manifest, "a+b") as f:
    f.seek(0, os.SEEK_END)
    if f.tell():
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":  # a line cut off by a kill: start afresh
        line = "\n" + line
    f.write(line.encode())
    f.flush()
    os.fsync(f.fileno())


def load_embeddings(index_dir: str | os.PathLike, entry: dict) -> dict[str, np.ndarray]:
  """The arrays of one manifest entry: `video` [D], and `window_times` [N, 2], `windows` [N, D] if stored."""
  with np.load(pathlib.Path(index_dir) / "embeddings" / entry["file"]) as data:
    return dict(data)


# ---------------------------------------------------------------------------- embedding


@functools.lru_cache(maxsize=16)
def _embedder(model: model_lib.EZCLIP):
  """`(variables, uint8 [B, 1, T, S, S, 3]) -> float32 [B, D]`: frame embeddings averaged over time."""

  def embed(variables, video):
    clips = input_pipeline.normalize(video[:, 0])
    frames = model.apply(variables, clips, method=model.encode_video)
    return frames.astype(jnp.float32).mean(axis=1)

  return jax.jit(embed)


@dataclasses.dataclass
class Summary:
  total: int = 0
  skipped: int = 0
  embedded: int = 0
  failed: int = 0


class _Progress:
  """`embedded 12/40 videos (1 failed) | 2.3 videos/s | ETA 0:00:12` on stderr, about once a second."""

  def __init__(self, total: int, every_s: float = 1.0):
    self.total, self.every_s = total, every_s
    self.done = self.failed = 0
    self.start = self.last = time.monotonic()

  def update(self, failed: bool) -> None:
    self.done += 1
    self.failed += failed
    now = time.monotonic()
    if now - self.last >= self.every_s or self.done == self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate
      print(f"embedded {self.done}/{self.total} videos ({self.failed} failed) | {rate:.2f} videos/s | "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}", file=sys.stderr, flush=True)


def embed_collection(model: model_lib.EZCLIP, variables: Any, videos: Sequence[str], index_dir: str | os.PathLike,
                     *, checkpoint_dir: str = "", window: tuple[float, float, float] | None = None,
                     batch_size: int = 8, process_index: int = 0, process_count: int = 1,
                     timing: windows_lib.Timing | None = None, progress: bool = True) -> Summary:
  """Adds this process's share of `videos` to the index, skipping those already embedded unchanged.

  Args:
    model: the EZ-CLIP module.
    variables: its variables.
    videos: video files and frame folders (`predict.find_videos`).
    index_dir: the index (created if missing).
    checkpoint_dir: recorded in model.json; search loads the model from it by default.
    window: `(window s, stride s, frame folder fps)` to store window embeddings too, or None.
    batch_size: windows per model call.
    process_index: this process's share is `videos[process_index::process_count]`.
    process_count: processes sharing the collection.
    timing: accumulates decode and model seconds.
    progress: print a progress line with ETA.

  Returns:
    Counts of this process's videos.
  """
  index_dir = pathlib.Path(index_dir)
  folder_fps = window[2] if window else windows_lib.DEFAULT_FOLDER_FPS
  settings = {"checkpoint": os.path.abspath(checkpoint_dir) if checkpoint_dir else "",
              "model": model_identity(model, variables),
              "windows": None if window is None else dict(zip(("window", "stride", "fps"), window))}
  open_index(index_dir, settings, checkpoint_dir)
  done = read_manifest(index_dir)
  mine = list(videos)[process_index::process_count]
  todo = [p for p in mine if p not in done or (done[p]["size"], done[p]["mtime"]) != _fingerprint_or_none(p)]
  summary = Summary(total=len(mine), skipped=len(mine) - len(todo))
  if summary.skipped:
    print(f"{summary.skipped} of {len(mine)} videos already embedded unchanged in {index_dir}; "
          f"{len(todo)} to embed.", file=sys.stderr)
  manifest = index_dir / f"manifest-{process_index:05d}.jsonl"
  bar = _Progress(len(todo)) if progress and todo else None
  variables = jax.device_put(variables)
  embed = _embedder(model)

  def windows_of(info: windows_lib.VideoInfo) -> list[windows_lib.Window]:
    whole = [windows_lib.Window(0, info.num_frames)]
    return whole + (windows_lib.slide(info.num_frames, info.fps, *window[:2]) if window else [])

  def write(path: str, result: windows_lib.VideoOutputs) -> None:
    size, mtime = _fingerprint_or_none(path) or (None, None)
    entry = {"path": path, "size": size, "mtime": mtime, "duration": None, "num_windows": 0,
             "file": None, "error": result.error, "time": time.time()}
    if result.error is None:
      arrays = {"video": np.asarray(result.outputs[0], np.float32)}
      if window:
        arrays["window_times"] = np.array([w.times(result.info.fps) for w in result.windows[1:]], np.float64)
        arrays["windows"] = np.asarray(result.outputs[1:], np.float32)
      entry.update(duration=result.info.duration, num_windows=len(result.windows) - 1, file=entry_key(path) + ".npz")
      _write_atomically(index_dir / "embeddings" / entry["file"], lambda f: np.savez(f, **arrays))
    _append_manifest(manifest, entry)
    summary.embedded += result.error is None
    summary.failed += result.error is not None
    if bar is not None:
      bar.update(result.error is not None)

  jobs = windows_lib.probed_jobs(todo, folder_fps, windows_of)
  windows_lib.run_windows(lambda clips: embed(variables, clips), jobs, num_segments=model.config.num_frames,
                          resolution=model.config.image_resolution, batch_size=batch_size, timing=timing,
                          on_video=write)
  return summary


def _fingerprint_or_none(path: str) -> tuple[int, float] | None:
  try:
    return fingerprint(path)
  except OSError:
    return None


# ------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m ezclip_jax.embed", description=__doc__.split("\n\n")[0])
  parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, frame folders, directories")
  parser.add_argument("--checkpoint", required=True, help="converted pretrained directory or training workdir")
  parser.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index (created, or resumed)")
  parser.add_argument("--windows", action="store_true", help="also store sliding-window embeddings")
  parser.add_argument("--window", type=float, default=windows_lib.DEFAULT_WINDOW_S, help="window seconds (default 4)")
  parser.add_argument("--stride", type=float, default=windows_lib.DEFAULT_STRIDE_S,
                      help="seconds between windows (default 2)")
  parser.add_argument("--fps", type=float, default=windows_lib.DEFAULT_FOLDER_FPS,
                      help="frame rate of frame folders (default 25)")
  parser.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
  parser.add_argument("--process-index", type=int, default=None, help="this process's share (default: JAX's)")
  parser.add_argument("--process-count", type=int, default=None, help="processes sharing the collection")
  console.add_log_level_argument(parser, default="error")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  with console.log_level(args.log_level):
    try:
      return _embed(args)
    except (predict.UsageError, IndexMismatch) as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_USAGE


def _embed(args: argparse.Namespace) -> int:
  for flag in ("window", "stride", "fps", "batch_size"):
    if not getattr(args, flag) > 0:
      raise predict.UsageError(f"--{flag.replace('_', '-')} must be more than 0, got {getattr(args, flag)}.")
  process_index = jax.process_index() if args.process_index is None else args.process_index
  process_count = jax.process_count() if args.process_count is None else args.process_count
  if not 0 <= process_index < process_count:
    raise predict.UsageError(f"--process-index must be in [0, --process-count={process_count}), got {process_index}.")
  videos = predict.find_videos(args.inputs)
  model, variables = predict.load_checkpoint(args.checkpoint)
  summary = embed_collection(model, variables, videos, args.out, checkpoint_dir=args.checkpoint,
                             window=(args.window, args.stride, args.fps) if args.windows else None,
                             batch_size=args.batch_size, process_index=process_index, process_count=process_count)
  wanted = set(videos)
  failures = [e for p, e in read_manifest(args.out).items() if e["error"] is not None and p in wanted]
  for entry in failures:
    print(f"failed: {entry['error']}", file=sys.stderr)
  print(f"{args.out}: {summary.embedded} embedded, {summary.skipped} already there, {summary.failed} failed "
        f"(process {process_index} of {process_count}, {summary.total} videos).", file=sys.stderr)
  return EXIT_FAILED if failures else EXIT_OK


if __name__ == "__main__":
  sys.exit(main())
