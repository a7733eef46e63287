"""Extract JPEG frame folders and an official-format list file from videos.

  python -m data.extract_frames VIDEO_ROOT OUT_ROOT --list OUT_LIST [--labels LABELS_CSV]
      [--videos VIDEO_LIST] [--short-side 256] [--fps N] [--quality 90]
      [--subsampling 4:4:4] [--workers K] [--keep-extension] [--skip-bad]

Input, either
  * one folder per class: `VIDEO_ROOT/<class>/<video>.<ext>`; the class ids come from
    `--labels` if that file exists (its names must be the folder names, `_` may stand
    for a space), else the sorted folder names are numbered from 0 and written there; or
  * `--videos VIDEO_LIST`, lines `path label` (paths relative to VIDEO_ROOT or absolute);
    then `--labels` must exist and is only checked against.
Output: `OUT_ROOT/<name>/img_00001.jpg ...` (1-based), where `<name>` is the video's
file name without extension (with it under `--keep-extension`, as the official HMDB51
and SSv2 lists name their folders), and `OUT_LIST` with lines
`<OUT_ROOT>/<name> <num_frames> <label>` in input order.

Nothing this tool did not write is ever replaced or deleted: OUT_ROOT/.extract_frames.json
records the frame folders and lists it writes, and an existing output missing from it (a
class folder when OUT_ROOT is VIDEO_ROOT, someone's frames) stops the run before any work.
A rerun replaces its own earlier outputs.

Frames are downscaled so that the short side is at most `--short-side` (0 keeps the
size; never upscaled) and, with `--fps`, thinned to at most that rate. A video that
cannot be decoded is reported with its path; the run then exits non-zero without
writing the list, unless `--skip-bad` leaves such videos out of it.
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from ezclip_jax import video_io

FRAME_TEMPLATE = "img_{:05d}.jpg"
_FRAME_FILE = re.compile(r"img_\d{5}\.jpg")
MANIFEST = ".extract_frames.json"


class VideoDecodeError(video_io.DataError):
  """A video that cannot be read; the message starts with its path."""


@dataclasses.dataclass(frozen=True)
class FrameOptions:
  """How decoded frames are stored.

  Attributes:
    short_side: downscale (PIL bilinear, antialiased) so that min(H, W) is at most this;
      0 keeps the size.
    fps: keep at most this many frames per second; None keeps every frame.
    quality: JPEG quality (1-95).
    subsampling: JPEG chroma subsampling. 4:4:4 adds no chroma loss to the source's
      (usually 4:2:0) and at quality 90 takes about the space of 4:2:0 at 95.
  """
  short_side: int = 256
  fps: float | None = None
  quality: int = 90
  subsampling: str = "4:4:4"


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
  frames_jpeg: list[bytes]
  fps: float  # of the source video; 0.0 if the container does not say.


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after downscaling the short side to `short_side` (0: unchanged)."""
  short = min(height, width)
  if not short_side or short <= short_side:
    return height, width
  scale = short_side / short
  return max(1, round(height * scale)), max(1, round(width * scale))


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> tuple[Iterator[np.ndarray], float]:
  """Decodes a whole video sequentially.

  Args:
    path: a video file PyAV can open.
    fps: keep only the first frame of every 1/fps seconds; None keeps all.

  Returns:
    (frames, source_fps): an iterator of uint8 `[H, W, 3]` RGB frames and the
    stream's average frame rate. PyAV errors surface while iterating.
  """
  container = av.open(str(path))
  if not container.streams.video:
    container.close()
    raise VideoDecodeError(f"{path}: no video stream")
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate
  source_fps = float(rate) if rate else 0.0

  def frames() -> Iterator[np.ndarray]:
    with container:
      start, last_slot = None, None
      for i, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else i / (source_fps or 1.0)
        start = t if start is None else start
        if fps:
          slot = math.floor((t - start) * fps + 1e-6)
          if slot == last_slot:
            continue
          last_slot = slot
        yield frame.to_ndarray(format="rgb24")

  return frames(), source_fps


def encode_jpeg(frame: np.ndarray, options: FrameOptions) -> bytes:
  """Downscales uint8 `[H, W, 3]` per `options.short_side` and JPEG-encodes it."""
  image = Image.fromarray(frame)
  size = output_size(*frame.shape[:2], options.short_side)
  if size != frame.shape[:2]:
    image = image.resize(size[::-1], Image.Resampling.BILINEAR)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=options.quality, subsampling=options.subsampling)
  return buffer.getvalue()


def encode_video(path: str | os.PathLike, options: FrameOptions) -> EncodedVideo:
  """Decodes `path` and re-encodes every kept frame as JPEG.

  Raises:
    VideoDecodeError: naming `path`, if it is missing, unreadable or has no frames.
  """
  try:
    frames, fps = iter_frames(path, options.fps)
    encoded = [encode_jpeg(frame, options) for frame in frames]
  except (av.FFmpegError, OSError) as e:
    raise VideoDecodeError(f"{path}: cannot decode ({getattr(e, 'strerror', None) or e})") from e
  if not encoded:
    raise VideoDecodeError(f"{path}: no decodable frames")
  return EncodedVideo(encoded, fps)


def try_encode_video(path: str | os.PathLike, options: FrameOptions) -> EncodedVideo | VideoDecodeError:
  """`encode_video`, with the error returned rather than raised (for process pools)."""
  try:
    return encode_video(path, options)
  except VideoDecodeError as e:
    return e


@dataclasses.dataclass(frozen=True)
class _Job:
  video: pathlib.Path
  out_dir: pathlib.Path
  label: int


def _extract(job: _Job, options: FrameOptions) -> int | str:
  """Writes one frame folder (replacing this tool's earlier one); returns its frame count, or the error."""
  encoded = try_encode_video(job.video, options)
  if isinstance(encoded, VideoDecodeError):
    return str(encoded)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{job.out_dir.name}.partial-", dir=job.out_dir.parent))
  try:
    for i, data in enumerate(encoded.frames_jpeg):
      (tmp / FRAME_TEMPLATE.format(i + 1)).write_bytes(data)
    if job.out_dir.is_dir():  # checked by `check_outputs`: written by this tool, frames only
      shutil.rmtree(job.out_dir)
    os.replace(tmp, job.out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return len(encoded.frames_jpeg)


def _read_manifest(out_root: pathlib.Path) -> dict[str, list[str]]:
  path = out_root / MANIFEST
  if not path.exists():
    return {"folders": [], "lists": []}
  try:
    manifest = json.loads(path.read_text())
    return {"folders": list(manifest["folders"]), "lists": list(manifest["lists"])}
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not this tool's record of what it wrote ({e}); move it away") from e


def _write_manifest(out_root: pathlib.Path, manifest: dict[str, list[str]]) -> None:
  out_root.mkdir(parents=True, exist_ok=True)
  tmp = out_root / f"{MANIFEST}.tmp"
  tmp.write_text(json.dumps({k: sorted(set(v)) for k, v in manifest.items()}, indent=1))
  os.replace(tmp, out_root / MANIFEST)


def _only_frames(directory: pathlib.Path) -> bool:
  return directory.is_dir() and not directory.is_symlink() and all(
      _FRAME_FILE.fullmatch(p.name) and p.is_file() for p in directory.iterdir())


def check_outputs(jobs: Sequence[_Job], list_file: pathlib.Path, manifest: dict[str, list[str]]) -> None:
  """Fails, before any work, if an output exists that this tool did not write."""
  foreign = [job.out_dir for job in jobs if (job.out_dir.exists() or job.out_dir.is_symlink()) and not (
      job.out_dir.name in manifest["folders"] and _only_frames(job.out_dir))]
  if list_file.exists() and str(list_file) not in manifest["lists"]:
    foreign.append(list_file)
  if not foreign:
    return
  first = foreign[0]
  held = f" (holding {', '.join(sorted(p.name for p in first.iterdir())[:3])}, ...)" if first.is_dir() else ""
  more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
  raise FileExistsError(f"{first}{held}{more} already exist and were not written by data.extract_frames; "
                        "nothing was changed: choose another OUT_ROOT or --list, or move them away")


def read_labels_csv(path: pathlib.Path) -> list[str]:
  """Class names in id order from an `id,name` CSV whose ids are 0..N-1."""
  with path.open(newline="") as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ["id", "name"]:
    raise ValueError(f"{path}:1: expected the header 'id,name'")
  names = []
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 2 or row[0].strip() != str(len(names)):
      raise ValueError(f"{path}:{line}: expected '{len(names)},<name>', got {','.join(row)!r}")
    names.append(row[1].strip())
  return names


def write_labels_csv(path: pathlib.Path, names: Sequence[str]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows(enumerate(names))


def _folder_videos(video_root: pathlib.Path, labels_csv: pathlib.Path) -> tuple[list[tuple[pathlib.Path, int]],
                                                                              list[str] | None]:
  """The videos with their class ids, and the class names to write to `labels_csv` when it is absent.

  Frame folders this tool wrote into VIDEO_ROOT (as OUT_ROOT) are not classes.
  """
  ours = set(_read_manifest(video_root.absolute())["folders"])
  classes = sorted(p.name for p in video_root.iterdir() if p.is_dir() and p.name not in ours
                   and not p.name.startswith("."))
  if not classes:
    raise ValueError(f"{video_root}: no class folders (expected VIDEO_ROOT/<class>/<video>; or pass --videos LIST)")
  if labels_csv.exists():
    known = {name: i for i, name in enumerate(read_labels_csv(labels_csv))}
    missing = [c for c in classes if c not in known and c.replace("_", " ") not in known]
    if missing:
      raise ValueError(f"{labels_csv}: has no class named {missing[:5]} (class folders of {video_root})")
    ids = {c: known.get(c, known.get(c.replace("_", " "))) for c in classes}
  else:
    ids = {c: i for i, c in enumerate(classes)}
  videos, others = [], []
  for name in classes:
    for path in sorted((video_root / name).iterdir()):
      (videos if path.suffix.lower() in video_io.VIDEO_EXTENSIONS else others).append((path, ids[name]))
  if others:
    print(f"Ignoring {len(others)} files without a video extension, e.g. {others[0][0]}", file=sys.stderr)
  return videos, None if labels_csv.exists() else classes


def _listed_videos(video_root: pathlib.Path, video_list: pathlib.Path,
                   labels_csv: pathlib.Path) -> list[tuple[pathlib.Path, int]]:
  if not labels_csv.exists():
    raise FileNotFoundError(f"{labels_csv}: with --videos, --labels must name an existing 'id,name' CSV")
  num_classes = len(read_labels_csv(labels_csv))
  videos = []
  for line, text in enumerate(video_list.read_text().splitlines(), start=1):
    if not text.strip():
      continue
    parts = text.rsplit(maxsplit=1)
    if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= num_classes:
      raise ValueError(f"{video_list}:{line}: expected 'path label' with 0 <= label < {num_classes} "
                       f"(the classes of {labels_csv}), got {text!r}")
    videos.append((video_root / parts[0], int(parts[1])))
  return videos


def _jobs(videos: list[tuple[pathlib.Path, int]], out_root: pathlib.Path, keep_extension: bool) -> list[_Job]:
  seen = {}
  for path, _ in videos:
    name = path.name if keep_extension else path.stem
    if name in seen:
      raise ValueError(f"Two videos would share the frame folder {out_root / name}: {seen[name]} and {path}")
    seen[name] = path
  return [_Job(path, out_root / (path.name if keep_extension else path.stem), label) for path, label in videos]


def _extract_all(jobs: Sequence[_Job], options: FrameOptions, workers: int) -> list[int | str]:
  """Runs `_extract` over `jobs` in a process pool; results in job order."""
  if workers <= 1:
    return [_extract(job, options) for job in jobs]
  with concurrent.futures.ProcessPoolExecutor(workers) as pool:
    return list(pool.map(_extract, jobs, [options] * len(jobs), chunksize=4))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("video_root", type=pathlib.Path)
  parser.add_argument("out_root", type=pathlib.Path)
  parser.add_argument("--list", type=pathlib.Path, required=True, help="official-format list file to write")
  parser.add_argument("--labels", type=pathlib.Path, help="'id,name' CSV (default: labels.csv beside --list)")
  parser.add_argument("--videos", type=pathlib.Path, help="list of 'path label' lines instead of class folders")
  parser.add_argument("--short-side", type=int, default=256)
  parser.add_argument("--fps", type=float)
  parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
  parser.add_argument("--subsampling", default="4:4:4", choices=("4:4:4", "4:2:2", "4:2:0"), help="JPEG chroma")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--keep-extension", action="store_true", help="name frame folders <video>.<ext>")
  parser.add_argument("--skip-bad", action="store_true", help="leave undecodable videos out of the list")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    return _run(args)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
  labels_csv = args.labels or args.list.parent / "labels.csv"
  out_root = args.out_root.absolute()
  list_file = args.list.absolute()
  new_labels = None
  if args.videos:
    videos = _listed_videos(args.video_root, args.videos, labels_csv)
  else:
    videos, new_labels = _folder_videos(args.video_root, labels_csv)
  jobs = _jobs(videos, out_root, args.keep_extension)
  manifest = _read_manifest(out_root)
  check_outputs(jobs, list_file, manifest)
  if new_labels is not None:
    write_labels_csv(labels_csv, new_labels)
  # Claimed before writing, so a run killed half-way may replace its folders when rerun.
  _write_manifest(out_root, {"folders": manifest["folders"] + [job.out_dir.name for job in jobs],
                             "lists": manifest["lists"] + [str(list_file)]})
  options = FrameOptions(short_side=args.short_side, fps=args.fps, quality=args.quality,
                         subsampling=args.subsampling)
  results = _extract_all(jobs, options, args.workers)
  failures = [r for r in results if isinstance(r, str)]
  for message in failures:
    print(f"FAILED {message}", file=sys.stderr)
  if failures and not args.skip_bad:
    print(f"{len(failures)} of {len(jobs)} videos failed; {args.list} not written "
          "(fix them, or pass --skip-bad to list only the others).", file=sys.stderr)
    return 1
  lines = [f"{job.out_dir} {n} {job.label}\n" for job, n in zip(jobs, results) if isinstance(n, int)]
  args.list.parent.mkdir(parents=True, exist_ok=True)
  args.list.write_text("".join(lines))
  skipped = f", skipped {len(failures)} that failed" if failures else ""
  print(f"Extracted {len(lines)} of {len(jobs)} videos to {out_root}{skipped}; list: {args.list}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
