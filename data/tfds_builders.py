"""TFDS builders for manually downloaded video datasets, written as ArrayRecord JPEG frames.

Each builder reads the videos and official split files from `manual_dir` (layout in its
`MANUAL_DOWNLOAD_INSTRUCTIONS`), decodes every video with PyAV and stores per example
`frames` (one JPEG per frame, short side at most `VideoConfig.short_side`), `label`,
`video_id`, `num_frames` and the source `fps`. Neither building nor reading needs
TensorFlow: the features are plain tensors and the files ArrayRecord.

Build (this module must not be imported twice under different names, as TFDS refuses a
second registration of the same builder name):
  python -m data.tfds_builders ezclip_ucf101/split1 --manual_dir ~/ucf101 \
      --data_dir ~/tensorflow_datasets [--workers 8] [--skip_bad] [--rebuild]
An existing build of the same version is reused (and the command says so) unless --rebuild.
or from Python:
  builder = tfds_builders.Ucf101(config="split1", data_dir=data_dir, num_workers=8)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))
Read with `ezclip_jax.tfds_source.TfdsVideoSource("ezclip_ucf101/split1", "train", data_dir)`.

A video that cannot be decoded stops the build with an error naming it; with
`skip_bad=True` it is logged, left out, and listed under `skipped_videos` in the
dataset's metadata (`builder.info.metadata`), with a count per split in the log.
`num_workers > 1` decodes in spawned processes, so a calling script needs an
`if __name__ == "__main__":` guard.
"""

import abc
import argparse
import concurrent.futures
import csv
import dataclasses
import itertools
import json
import multiprocessing
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data import extract_frames


class VideoItem(NamedTuple):
  key: str             # unique within a split
  path: pathlib.Path
  label: int


@dataclasses.dataclass
class VideoConfig(tfds.core.BuilderConfig):
  """Which official split to build and how frames are stored.

  Attributes:
    split_number: the official train/test split (UCF101 and HMDB51 have 1, 2, 3).
    short_side: frames are downscaled so that min(H, W) is at most this; 0 keeps them.
    fps: keep at most this many frames per second; None keeps every frame.
    quality: JPEG quality.
    subsampling: JPEG chroma subsampling (see `extract_frames.FrameOptions`).
  """
  split_number: int = 1
  short_side: int = 256
  fps: float | None = None
  quality: int = 90
  subsampling: str = "4:4:4"

  def frame_options(self) -> extract_frames.FrameOptions:
    return extract_frames.FrameOptions(short_side=self.short_side, fps=self.fps, quality=self.quality,
                                       subsampling=self.subsampling)


def _split_configs(numbers: Sequence[int]) -> list[VideoConfig]:
  return [VideoConfig(name=f"split{n}", split_number=n, description=f"Official split {n}, JPEG frames, "
                      "short side <= 256.") for n in numbers]


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Decodes and encodes videos; subclasses only parse their split files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "JPEG frames in ArrayRecord."}
  BUILDER_CONFIGS = [VideoConfig(name="default", description="JPEG frames, short side <= 256.")]
  HOMEPAGE = ""

  def __init__(self, *, skip_bad: bool = False, num_workers: int = 1,
               file_format: str | tfds.core.FileFormat = tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    """See `tfds.core.GeneratorBasedBuilder`.

    Args:
      skip_bad: leave out (and log, and list in the metadata) videos that fail to decode
        instead of stopping with an error.
      num_workers: decoding processes (1: decode in this process).
      file_format: ArrayRecord by default, which is readable without TensorFlow.
      **kwargs: `data_dir`, `config`, `version`, ...
    """
    self._skip_bad = skip_bad
    self._num_workers = num_workers
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").split("\n")[0],
        homepage=self.HOMEPAGE,
        features=tfds.features.FeaturesDict({
            "video_id": tfds.features.Text(),
            "label": tfds.features.ClassLabel(),  # names are read from manual_dir.
            "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_),
                                             doc="one encoded JPEG per frame"),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "fps": tfds.features.Scalar(dtype=np.float32, doc="frame rate of the source video"),
        }),
        metadata=tfds.core.MetadataDict(skipped_videos={}),
    )

  @abc.abstractmethod
  def _parse(self, manual_dir: pathlib.Path) -> tuple[list[str], dict[str, list[VideoItem]]]:
    """Returns the class names in label order and the videos of each split."""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
    class_names, splits = self._parse(pathlib.Path(dl_manager.manual_dir))
    self.info.features["label"].names = class_names
    for split, items in splits.items():
      _check_items(split, items, len(class_names))
    return {split: self._generate_examples(split, items) for split, items in splits.items()}

  def _generate_examples(self, split: str, items: list[VideoItem]) -> Iterator[tuple[str, dict]]:
    skipped = []
    results = self._encode_all([item.path for item in items], self.builder_config.frame_options())
    for item, result in zip(items, results):
      if isinstance(result, extract_frames.VideoDecodeError):
        if not self._skip_bad:
          raise result
        logging.warning("Skipping %s", result)
        skipped.append(str(result))
        continue
      yield item.key, {"video_id": item.path.stem, "label": item.label, "frames": result.frames_jpeg,
                       "num_frames": len(result.frames_jpeg), "fps": result.fps}
    self.info.metadata["skipped_videos"][split] = skipped
    if skipped:
      logging.warning("Split %s: skipped %d of %d videos that failed to decode (listed in the dataset "
                      "metadata under skipped_videos).", split, len(skipped), len(items))

  def _encode_all(self, paths: list[pathlib.Path], options: extract_frames.FrameOptions) -> Iterator:
    if self._num_workers <= 1:
      yield from (extract_frames.try_encode_video(path, options) for path in paths)
      return
    pool = concurrent.futures.ProcessPoolExecutor(self._num_workers, mp_context=multiprocessing.get_context("spawn"))
    try:
      yield from pool.map(extract_frames.try_encode_video, paths, itertools.repeat(options))
    finally:
      pool.shutdown(wait=False, cancel_futures=True)


def _check_items(split: str, items: list[VideoItem], num_classes: int) -> None:
  if not items:
    raise ValueError(f"Split {split!r} lists no videos.")
  seen = set()
  for item in items:
    if item.key in seen:
      raise ValueError(f"Split {split!r} lists {item.key} twice.")
    if not 0 <= item.label < num_classes:
      raise ValueError(f"Split {split!r}: {item.key} has label {item.label}, outside 0..{num_classes - 1}.")
    seen.add(item.key)


def _lines(path: pathlib.Path) -> Iterator[tuple[int, list[str]]]:
  """(line number, whitespace-separated fields) of the non-blank lines of `path`."""
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found; see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.")
  for number, text in enumerate(path.read_text().splitlines(), start=1):
    if text.strip():
      yield number, text.split()


class Ucf101(_VideoBuilder):
  """UCF101: 13,320 videos of 101 human actions, official splits 1-3."""

  name = "ezclip_ucf101"
  HOMEPAGE = "https://www.crcv.ucf.edu/data/UCF101.php"
  BUILDER_CONFIGS = _split_configs((1, 2, 3))
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir/UCF-101/<Class>/<video>.avi      (UCF101.rar, unpacked)
  manual_dir/ucfTrainTestlist/classInd.txt    ("1 ApplyEyeMakeup" ...)
  manual_dir/ucfTrainTestlist/trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt
  """

  def _parse(self, manual_dir):
    lists = manual_dir / "ucfTrainTestlist"
    class_names = []
    for number, fields in _lines(lists / "classInd.txt"):
      if len(fields) != 2 or fields[0] != str(len(class_names) + 1):
        raise ValueError(f"{lists / 'classInd.txt'}:{number}: expected '{len(class_names) + 1} <Class>'")
      class_names.append(fields[1])
    ids = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split, prefix in (("train", "trainlist"), ("test", "testlist")):
      path = lists / f"{prefix}0{self.builder_config.split_number}.txt"
      splits[split] = [self._item(manual_dir, path, number, fields, ids) for number, fields in _lines(path)]
    return class_names, splits

  @staticmethod
  def _item(manual_dir: pathlib.Path, path: pathlib.Path, number: int, fields: list[str],
            ids: dict[str, int]) -> VideoItem:
    class_name = fields[0].split("/")[0]
    if class_name not in ids or len(fields) > 2:
      raise ValueError(f"{path}:{number}: expected '<Class>/<video>.avi [label]' with a class of classInd.txt, "
                       f"got {' '.join(fields)!r}")
    if len(fields) == 2 and fields[1] != str(ids[class_name] + 1):
      raise ValueError(f"{path}:{number}: label {fields[1]} disagrees with classInd.txt ({class_name} is "
                       f"{ids[class_name] + 1})")
    return VideoItem(fields[0], manual_dir / "UCF-101" / fields[0], ids[class_name])


class Hmdb51(_VideoBuilder):
  """HMDB51: 6,766 clips of 51 actions, official 70/30 splits 1-3 (ids 0 'unused' are left out)."""

  name = "ezclip_hmdb51"
  HOMEPAGE = "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/"
  BUILDER_CONFIGS = _split_configs((1, 2, 3))
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir/hmdb51_org/<class>/<video>.avi   (hmdb51_org.rar and its per-class .rar files, unpacked)
  manual_dir/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
      lines "<video>.avi <id>", id 1 = train, 2 = test, 0 = unused.
  Labels are the class names in sorted order (as the official hmdb51_labels.csv).
  """

  def _parse(self, manual_dir):
    split_dir = manual_dir / "testTrainMulti_7030_splits"
    suffix = f"_test_split{self.builder_config.split_number}.txt"
    files = sorted(split_dir.glob(f"*{suffix}"))
    if not files:
      raise FileNotFoundError(f"{split_dir}: no *{suffix} files; see MANUAL_DOWNLOAD_INSTRUCTIONS.")
    class_names = [f.name[:-len(suffix)] for f in files]
    splits = {"train": [], "test": []}
    for label, (class_name, path) in enumerate(zip(class_names, files)):
      for number, fields in _lines(path):
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
          raise ValueError(f"{path}:{number}: expected '<video>.avi <0|1|2>', got {' '.join(fields)!r}")
        if fields[1] != "0":
          key = f"{class_name}/{fields[0]}"
          splits["train" if fields[1] == "1" else "test"].append(
              VideoItem(key, manual_dir / "hmdb51_org" / key, label))
    return class_names, splits


class _Kinetics(_VideoBuilder, skip_registration=True):
  """Kinetics from the CVDF-style layout; splits are the annotation CSVs present."""

  HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
  _CSV_SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir/annotations/{train,val,test}.csv   header "label,youtube_id,time_start,time_end,split"
      (a missing CSV means no such split; remove an unlabelled test.csv)
  manual_dir/{train,val,test}/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4
  manual_dir/labels.csv   optional "id,name": fixes the label ids (else the sorted names)
  Videos missing from YouTube are usual: build with skip_bad=True to list and skip them.
  """

  def _parse(self, manual_dir):
    rows = {}
    for split, stem in self._CSV_SPLITS:
      path = manual_dir / "annotations" / f"{stem}.csv"
      if path.is_file():
        rows[split] = (path, stem, _read_kinetics_csv(path))
    if not rows:
      raise FileNotFoundError(f"{manual_dir / 'annotations'}: none of train.csv, val.csv, test.csv")
    labels_csv = manual_dir / "labels.csv"
    if labels_csv.is_file():
      class_names = extract_frames.read_labels_csv(labels_csv)
    else:
      class_names = sorted({row["label"] for _, _, split_rows in rows.values() for _, row in split_rows})
    ids = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split, (path, stem, split_rows) in rows.items():
      splits[split] = []
      for number, row in split_rows:
        if row["label"] not in ids:
          raise ValueError(f"{path}:{number}: label {row['label']!r} is not in {labels_csv}")
        key = f"{stem}/{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        splits[split].append(VideoItem(key, manual_dir / key, ids[row["label"]]))
    return class_names, splits


def _read_kinetics_csv(path: pathlib.Path) -> list[tuple[int, dict[str, str]]]:
  with path.open(newline="") as f:
    reader = csv.DictReader(f)
    missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{path}:1: header lacks {sorted(missing)} (expected "
                       "'label,youtube_id,time_start,time_end,split')")
    rows = list(enumerate(reader, start=2))
  for number, row in rows:
    if not (row["time_start"] or "").isdigit() or not (row["time_end"] or "").isdigit():
      raise ValueError(f"{path}:{number}: time_start and time_end must be whole seconds, got {row}")
  return rows


class Kinetics400(_Kinetics):
  """Kinetics-400: ~306k 10-second YouTube clips of 400 actions."""

  name = "ezclip_kinetics400"


class Kinetics600(_Kinetics):
  """Kinetics-600: ~495k 10-second YouTube clips of 600 actions."""

  name = "ezclip_kinetics600"


class SomethingSomethingV2(_VideoBuilder):
  """Something-Something v2: 220,847 clips of 174 object interactions (train and validation)."""

  name = "ezclip_ssv2"
  HOMEPAGE = "https://developer.qualcomm.com/software/ai-datasets/something-something"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir/labels.json       {"<class name>": "<id>", ...}
  manual_dir/train.json, validation.json   [{"id": "78687", "template": "Holding [something] ...", ...}, ...]
  manual_dir/20bn-something-something-v2/<id>.webm
  """

  def _parse(self, manual_dir):
    labels = _read_json(manual_dir / "labels.json")
    class_names = sorted(labels, key=lambda name: int(labels[name]))
    if [int(labels[name]) for name in class_names] != list(range(len(class_names))):
      raise ValueError(f"{manual_dir / 'labels.json'}: ids must be 0..{len(class_names) - 1}")
    splits = {}
    for split in ("train", "validation"):
      path = manual_dir / f"{split}.json"
      splits[split] = []
      for index, entry in enumerate(_read_json(path)):
        template = str(entry.get("template", "")).replace("[", "").replace("]", "")
        if "id" not in entry or template not in labels:
          raise ValueError(f"{path}: entry {index} needs an 'id' and a 'template' naming a class of "
                           f"labels.json, got {entry}")
        video = manual_dir / "20bn-something-something-v2" / f"{entry['id']}.webm"
        splits[split].append(VideoItem(str(entry["id"]), video, int(labels[template])))
    return class_names, splits


def _read_json(path: pathlib.Path):
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found; see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.")
  return json.loads(path.read_text())


class VideoList(_VideoBuilder):
  """Any videos listed as `path label` per split, with an `id,name` label CSV."""

  name = "ezclip_video_list"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  manual_dir/labels.csv     "id,name" header, ids 0..N-1
  manual_dir/<split>.txt    one per split (e.g. train.txt, test.txt): lines "path label",
                            paths relative to manual_dir or absolute.
  Name the config after the dataset, e.g. config=VideoConfig(name="mydata").
  """

  def _parse(self, manual_dir):
    class_names = extract_frames.read_labels_csv(manual_dir / "labels.csv")
    lists = sorted(manual_dir.glob("*.txt"))
    if not lists:
      raise FileNotFoundError(f"{manual_dir}: no <split>.txt list files")
    splits = {}
    for path in lists:
      splits[path.stem] = []
      for number, fields in _lines(path):
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= len(class_names):
          raise ValueError(f"{path}:{number}: expected 'path label' with 0 <= label < {len(class_names)} (the "
                           f"classes of labels.csv), got {' '.join(fields)!r}")
        splits[path.stem].append(VideoItem(fields[0], manual_dir / fields[0], int(fields[1])))
    return class_names, splits


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Build one of the ezclip_* TFDS video datasets.")
  parser.add_argument("name", help="e.g. ezclip_ucf101/split1, ezclip_kinetics400, ezclip_video_list/default")
  parser.add_argument("--manual_dir", type=pathlib.Path, required=True)
  parser.add_argument("--data_dir", type=pathlib.Path, required=True)
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--skip_bad", action="store_true")
  parser.add_argument("--rebuild", action="store_true",
                      help="build again from --manual_dir, replacing an existing build of this version")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  builder = tfds.builder(args.name, data_dir=args.data_dir, skip_bad=args.skip_bad, num_workers=args.workers)
  existed = builder.is_prepared()
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if args.rebuild
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir,
                                                                              download_mode=mode))
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  splits = ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items())
  if existed and not args.rebuild:
    print(f"Reused the existing build of {builder.info.full_name} in {builder.data_dir} ({splits}); "
          f"{args.manual_dir} was not read. Pass --rebuild to build it again from there.")
  else:
    print(f"{'Rebuilt' if existed else 'Built'} {builder.info.full_name} in {builder.data_dir}: {splits}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
