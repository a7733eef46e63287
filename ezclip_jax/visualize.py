"""Attention maps: where the class token of the last vision block looks, frame by frame.

  python -m ezclip_jax.visualize --checkpoint DIR VIDEO --out OUT_DIR

VIDEO (a video file or a frame folder, as `ezclip_jax.predict` reads them) is sampled like
evaluation: T frames at the segment centres, resized and centre-cropped to the model's
resolution S. The video tower runs on that clip, and for each frame the last block's
spatial self-attention gives the class token's attention to the `gh x gw` patch tokens,
averaged over heads (`cls_patch_attention`). In EZ-CLIP that block attends over
`[CLS, patches..., temporal prompt token]`; only the CLS row and the patch columns are
kept, not renormalised, so a frame's map sums to less than 1 by what CLS gives itself
and the prompt token.

OUT_DIR receives (existing files of these names are replaced):
  frame_<t>.png       T overlays (t = 0 .. T-1, zero-padded to equal length), S x S pixels: the
                      cropped frame blended with the map, each patch a `patch x patch` block
                      of one heat (`overlay`);
  contact_sheet.png   the T overlays in order, `min(T, 4)` per row, rows of S pixels
                      (`ceil(T / 4) * S` high, `min(T, 4) * S` wide; empty tiles black).
Maps are scaled to [0, 1] by their minimum and maximum over the whole clip, so frames are
comparable, and drawn with a black-red-yellow-white ramp whose channels never decrease:
a pixel's channel sum is `(1 - ALPHA) * frame's channel sum + ALPHA * 765 * heat`.
"""

import argparse
import dataclasses
import functools
import math
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import video_io

ALPHA = 0.6
SHEET_COLUMNS = 4


def patch_grid(config: model_lib.ModelConfig) -> int:
  """Patches per side of a frame, `gh = gw`."""
  return config.image_resolution // config.vision_patch_size


@functools.lru_cache(maxsize=8)
def _attention_fn(model: model_lib.EZCLIP):
  grid = patch_grid(model.config)
  last_block = f"resblocks_{model.config.vision_layers - 1}"

  def attend(variables, clip):
    _, state = model.apply(variables, input_pipeline.normalize(clip[None]), method=model.encode_video,
                           mutable=["intermediates"])
    # Earlier calls of the block's attention (temporal prompts, T-Adapter) attend across
    # frames; the spatial attention over each frame's tokens is the last call.
    weights = state["intermediates"]["visual"]["transformer"][last_block]["attn"]["attention_weights"][-1]
    cls_to_patches = weights[:, :, 0, 1:1 + grid * grid].mean(axis=1)
    return cls_to_patches.reshape(-1, grid, grid)

  return jax.jit(attend)


def cls_patch_attention(model: model_lib.EZCLIP, variables: Any, clip: np.ndarray) -> np.ndarray:
  """The last vision block's attention from CLS to the patch tokens, mean over heads.

  Args:
    model: the EZ-CLIP module.
    variables: its variables.
    clip: uint8 `[T, S, S, 3]` frames as the model sees them (T = config.num_frames,
      S = config.image_resolution).

  Returns:
    float32 `[T, gh, gw]`: softmax weights of the CLS query on each patch key (the softmax
    runs over CLS, the patches and, with temporal prompts, the prompt token).
  """
  # Rematerialisation changes no number, only memory; without it the sown weights come out plainly.
  model = model_lib.EZCLIP(dataclasses.replace(model.config, remat=False))
  return np.asarray(_attention_fn(model)(variables, np.asarray(clip, np.uint8)))


def normalize_maps(maps: np.ndarray) -> np.ndarray:
  """Scales maps `[T, gh, gw]` to [0, 1] by their minimum and maximum over the clip (0 if constant)."""
  low, high = float(maps.min()), float(maps.max())
  if high <= low:
    return np.zeros_like(maps, np.float32)
  return ((maps - low) / (high - low)).astype(np.float32)


def heat_colors(heat: np.ndarray) -> np.ndarray:
  """Black -> red -> yellow -> white for heat in [0, 1]; float `[..., 3]` in [0, 255], channel sum 765 * heat."""
  return 255.0 * np.clip(3.0 * np.asarray(heat, np.float32)[..., None] - np.arange(3), 0.0, 1.0)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
  """Blends a frame with its heat map.

  Args:
    frame: uint8 `[S, S, 3]`.
    heat: `[gh, gw]` in [0, 1]; patch (i, j) covers pixels `[i*p:(i+1)*p, j*p:(j+1)*p]`,
      p = S // gh; pixels past the last whole patch get heat 0.

  Returns:
    uint8 `[S, S, 3]`: `round((1 - ALPHA) * frame + ALPHA * heat_colors(heat))`.
  """
  size, grid = frame.shape[0], heat.shape[0]
  patch = size // grid
  pixels = np.zeros(frame.shape[:2], np.float32)
  pixels[:grid * patch, :grid * patch] = np.kron(heat, np.ones((patch, patch), np.float32))
  blended = (1.0 - ALPHA) * frame.astype(np.float32) + ALPHA * heat_colors(pixels)
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def contact_sheet(images: np.ndarray, columns: int = SHEET_COLUMNS) -> np.ndarray:
  """Tiles uint8 `[T, S, S, 3]` row by row, `min(T, columns)` per row -> `[rows * S, cols * S, 3]`."""
  count, size = images.shape[:2]
  columns = min(count, columns)
  rows = math.ceil(count / columns)
  sheet = np.zeros((rows * size, columns * size, 3), np.uint8)
  for t, image in enumerate(images):
    row, column = divmod(t, columns)
    sheet[row * size:(row + 1) * size, column * size:(column + 1) * size] = image
  return sheet


def write_pngs(clip: np.ndarray, maps: np.ndarray, out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Writes the T overlays and the contact sheet (see the module docstring).

  Args:
    clip: uint8 `[T, S, S, 3]`.
    maps: `[T, gh, gw]` raw attention (`cls_patch_attention`).
    out_dir: created if missing.

  Returns:
    The T frame PNGs, then the contact sheet.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  heat = normalize_maps(maps)
  images = np.stack([overlay(frame, h) for frame, h in zip(clip, heat)])
  digits = len(str(len(images) - 1))
  paths = []
  for t, image in enumerate(images):
    paths.append(out_dir / f"frame_{t:0{digits}d}.png")
    Image.fromarray(image).save(paths[-1])
  paths.append(out_dir / "contact_sheet.png")
  Image.fromarray(contact_sheet(images)).save(paths[-1])
  return paths


def load_clip(video: str | os.PathLike, config: model_lib.ModelConfig) -> np.ndarray:
  """The evaluation view of one video: uint8 `[T, S, S, 3]` (one clip, centre crop).

  Raises:
    video_io.DataError: the video cannot be read.
  """
  source = predict.VideoFiles([os.fspath(video)])
  batch = next(iter(predict.eval_batches(source, config, batch_size=1)))
  if not batch["mask"][0]:
    raise video_io.DataError(source.errors.get(source.paths[0], f"{video} could not be read."))
  return np.asarray(batch["video"][0, 0])


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m ezclip_jax.visualize",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("video", help="a video file or a frame folder (a directory of numbered JPEG frames)")
  parser.add_argument("--checkpoint", required=True,
                      help="converted pretrained directory (python -m convert.torch_to_flax) or training workdir")
  parser.add_argument("--out", required=True, help="output directory for frame_<t>.png and contact_sheet.png")
  # An unreadable video is reported by main, not logged as well.
  console.add_log_level_argument(parser, default="error")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  with console.log_level(args.log_level):
    return _visualize(args)


def _visualize(args: argparse.Namespace) -> int:
  video = pathlib.Path(args.video)
  if not video.exists() or (video.is_dir() and not predict.is_frame_folder(video)):
    print(f"error: {video} is neither a video file nor a folder of JPEG frames.", file=sys.stderr)
    return predict.EXIT_USAGE
  try:
    model, variables = checkpoint.load_pretrained(args.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: --checkpoint {args.checkpoint}: {e}", file=sys.stderr)
    return predict.EXIT_USAGE
  try:
    clip = load_clip(video, model.config)
  except video_io.DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return predict.EXIT_FAILED
  paths = write_pngs(clip, cls_patch_attention(model, variables, clip), args.out)
  print("\n".join(map(str, paths)))
  return predict.EXIT_OK


if __name__ == "__main__":
  sys.exit(main())
