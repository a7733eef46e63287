"""A grain data source over the ezclip_* TFDS video datasets (see `data/tfds_builders.py`).

The datasets are ArrayRecord files of JPEG frames, read with `tfds.data_source`, so
neither TensorFlow nor the builder module is needed: TFDS restores the features from the
files in `data_dir`.
"""

import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from ezclip_jax import video_io


class TfdsVideoSource:
  """Random access to the videos of one split, frames still JPEG-encoded.

  Opens the dataset lazily and pickles as its arguments, so grain workers reopen it.
  """

  def __init__(self, name_or_builder_dir: str | os.PathLike, split: str, data_dir: str | os.PathLike | None = None):
    """Describes the split to read.

    Args:
      name_or_builder_dir: a dataset name with config (`ezclip_ucf101/split1`) looked up in
        `data_dir`, or a prepared dataset's directory (the one holding `dataset_info.json`).
      split: a TFDS split, slicing allowed (`train`, `test[:10%]`).
      data_dir: where TFDS datasets live (default: TFDS's); unused with a directory.
    """
    self._name = str(name_or_builder_dir)
    self._split = split
    self._data_dir = None if data_dir is None else str(data_dir)
    self._source = None

  def _open(self):
    if self._source is None:
      if (pathlib.Path(self._name) / "dataset_info.json").is_file():
        self._source = tfds.builder_from_directory(self._name).as_data_source(split=self._split)
      else:
        self._source = tfds.data_source(self._name, split=self._split, data_dir=self._data_dir)
    return self._source

  def __len__(self) -> int:
    return len(self._open())

  def __getitem__(self, index: int) -> dict:
    """Returns dict(video_id=str, label=int, num_frames=int, frames_jpeg=list[bytes])."""
    return self._convert(self._open()[int(index)])

  def __getitems__(self, indices: Sequence[int]) -> list[dict]:
    return [self._convert(record) for record in self._open().__getitems__([int(i) for i in indices])]

  def _convert(self, record: dict) -> dict:
    video_id = record["video_id"].decode("utf-8")
    frames = list(record["frames"])
    if len(frames) != record["num_frames"] or not frames:
      raise video_io.DataError(f"{self!r}: video {video_id} stores {len(frames)} frames but num_frames is "
                               f"{record['num_frames']}.")
    return {"video_id": video_id, "label": int(record["label"]), "num_frames": len(frames), "frames_jpeg": frames}

  def read_frames(self, record: dict, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Decodes only the frames at `indices` of a record from `__getitem__`.

    Args:
      record: as returned by `__getitem__`.
      indices: 0-based frame positions (any order, repeats allowed).

    Returns:
      uint8 `[len(indices), H, W, 3]` RGB.
    """
    frames, video_id = record["frames_jpeg"], record["video_id"]
    wanted = [int(i) for i in np.asarray(indices).reshape(-1)]
    outside = [i for i in wanted if not 0 <= i < len(frames)]
    if outside:
      raise video_io.DataError(f"{self!r}: video {video_id} has {len(frames)} frames; index {outside[0]} "
                               "(0-based) was needed.")
    decoded = {i: self._decode(frames[i], video_id, i) for i in dict.fromkeys(wanted)}
    if len({frame.shape for frame in decoded.values()}) > 1:
      raise video_io.DataError(f"{self!r}: frames of video {video_id} differ in size.")
    return np.stack([decoded[i] for i in wanted])

  def _decode(self, data: bytes, video_id: str, index: int) -> np.ndarray:
    try:
      with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for truncated or invalid images
      raise video_io.DataError(f"{self!r}: corrupt JPEG for frame {index} (0-based) of video {video_id}: {e}") from e

  def __repr__(self) -> str:
    return f"TfdsVideoSource(name_or_builder_dir={self._name!r}, split={self._split!r}, data_dir={self._data_dir!r})"

  def __getstate__(self) -> dict:
    return {"name": self._name, "split": self._split, "data_dir": self._data_dir}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["name"], state["split"], state["data_dir"])
