"""PyTorch half of `python -m benchmarks.bench`: times the PyTorch EZ-CLIP forward.

  python -m benchmarks.torch_bench PRETRAINED_DIR [--batch_sizes 1,2] [--repeats 5]

Converts the pretrained directory with `convert.flax_to_torch`, loads it into the
PyTorch EZ-CLIP (`convert.torch_model`) and prints one JSON line:
{"matmul_peak_gflops": ..., "latency_s": {"1": ..., "2": ...}}.
"""

import argparse
import json
import os
import tempfile

import torch

from convert import flax_to_torch
from convert import torch_model
from ezclip_jax import checkpoint
from ezclip_jax import console
from benchmarks.bench import time_calls


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
  a = torch.randn(size, size)
  return 2 * size**3 / time_calls(lambda: a @ a, repeats) / 1e9


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("pretrained")
  parser.add_argument("--batch_sizes", default="1,2")
  parser.add_argument("--repeats", type=int, default=5)
  console.add_log_level_argument(parser)
  args = parser.parse_args()
  console.set_log_level(args.log_level)
  config = checkpoint.load_config(args.pretrained)
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "ezclip.pt")
    flax_to_torch.convert(args.pretrained, weights)
    state = torch.load(weights, map_location="cpu")["model_state_dict"]
  model = torch_model.EZCLIPReference.from_state_dict(state, config).eval()
  latency = {}
  res = config.image_resolution
  with torch.inference_mode():
    for batch in (int(b) for b in args.batch_sizes.split(",")):
      video = torch.randn(batch, config.num_frames, res, res, 3)
      latency[str(batch)] = time_calls(lambda: model.encode_video(video), args.repeats)
  print(json.dumps({"matmul_peak_gflops": matmul_peak_gflops(), "latency_s": latency,
                    "threads": torch.get_num_threads()}))


if __name__ == "__main__":
  main()
