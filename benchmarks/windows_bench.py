"""Timeline throughput: windows per second of `predict --timeline`, split into decoding and model time.

  python -m benchmarks.windows_bench [--archs tiny,ViT-B/16] [--seconds 60] [--batch-size 8]

Writes a synthetic H.264 video (640x360, 25 fps, a moving rectangle over a textured
background, a keyframe every 2 s), then scores 4 s windows every 2 s with random-init models
(`predict.timelines`, the same code as the command; 2 random class texts). The video is scored
once untimed first, so that compilation (of every batch shape) is not timed. "decode" is reading, converting, resizing and cropping
the frames the windows need; "model" is the jitted video tower and scoring.
"""

import argparse
import dataclasses
import fractions
import pathlib
import tempfile
import time

import av
import jax
import numpy as np

from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import windows


def write_video(path: pathlib.Path, seconds: int, fps: int = 25, width: int = 640, height: int = 360) -> None:
  rng = np.random.default_rng(0)
  background = rng.integers(40, 120, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.gop_size = 2 * fps
    stream.codec_context.time_base = fractions.Fraction(1, fps)
    for i in range(seconds * fps):
      frame = background.copy()
      x = int((width - 80) * (0.5 + 0.5 * np.sin(i / 20)))
      frame[140:220, x:x + 80] = 230
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def bench(arch: str, video: pathlib.Path, batch_size: int) -> str:
  config = dataclasses.replace(model_lib.ARCHITECTURES[arch], num_frames=8)
  model = model_lib.EZCLIP(config)
  variables = model_lib.init_variables(config, jax.random.key(0))
  texts = np.random.default_rng(0).standard_normal((1, 2, config.embed_dim)).astype(np.float32)
  predict.timelines(model, variables, [str(video)], ("a", "b"), texts, batch_size=batch_size)
  timing = windows.Timing()
  start = time.perf_counter()
  predict.timelines(model, variables, [str(video)], ("a", "b"), texts, batch_size=batch_size, timing=timing)
  total = time.perf_counter() - start
  return (f"{arch:<10} {config.num_frames}x{config.image_resolution:<4} {timing.windows:>7} {total:8.1f} "
          f"{timing.windows / total:10.2f} {timing.decode:8.1f} ({100 * timing.decode / total:3.0f}%) "
          f"{timing.model:8.1f} ({100 * timing.model / total:3.0f}%)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--archs", default="tiny,ViT-B/16")
  parser.add_argument("--seconds", type=int, default=60, help="video length")
  parser.add_argument("--batch-size", type=int, default=8, help="windows per model call")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    video = pathlib.Path(tmp) / "video.mp4"
    write_video(video, args.seconds)
    print(f"{args.seconds} s of 640x360 H.264 at 25 fps, 4 s windows every 2 s, batch {args.batch_size}, "
          f"{jax.devices()[0].platform}")
    print(f"{'model':<10} {'T x S':<6} {'windows':>7} {'total s':>8} {'windows/s':>10} {'decode s':>15} "
          f"{'model s':>15}")
    for arch in args.archs.split(","):
      print(bench(arch, video, args.batch_size), flush=True)


if __name__ == "__main__":
  main()
