"""Forward-pass benchmark of `encode_video`, next to PyTorch EZ-CLIP on the same weights.

  python -m ezclip_jax.bench [--arch ViT-B/16] [--frames 8] [--batch_sizes 1,2] [--repeats 5]

Prints, per batch size: jit compile seconds, median forward latency, videos/s,
XLA's FLOP count and the achieved fraction of this machine's measured float32
matmul peak (both JAX's and PyTorch's peaks are measured in this run). The
PyTorch side runs in a subprocess (`convert.torch_bench`: torch is imported only
under convert/) on the same weights, converted by `convert.flax_to_torch`.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from ezclip_jax import checkpoint
from ezclip_jax import model as model_lib

_ARCH = flags.DEFINE_enum("arch", "ViT-B/16", list(model_lib.ARCHITECTURES), "Architecture.")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per video.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2"], "Batch sizes to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forward passes per batch size.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch reference (needs the [convert] extra).")


def time_calls(fn, repeats: int) -> float:
  """Median wall seconds of `fn()` over `repeats` calls after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
  """Measured float32 matmul throughput of XLA on this machine."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
  matmul = jax.jit(lambda x: x @ x)
  seconds = time_calls(lambda: matmul(a).block_until_ready(), repeats)
  return 2 * size**3 / seconds / 1e9


def bench_jax(config: model_lib.ModelConfig, variables: dict, batch: int, repeats: int) -> dict:
  model = model_lib.EZCLIP(config)
  res = config.image_resolution
  video = jnp.asarray(np.random.default_rng(batch).standard_normal(
      (batch, config.num_frames, res, res, 3), np.float32))
  forward = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_video))
  start = time.perf_counter()
  compiled = forward.lower(variables, video).compile()
  compile_s = time.perf_counter() - start
  flops = compiled.cost_analysis()["flops"]
  seconds = time_calls(lambda: compiled(variables, video).block_until_ready(), repeats)
  return {"compile_s": compile_s, "latency_s": seconds, "videos_per_s": batch / seconds,
          "gflops": flops / 1e9}


def bench_torch(config: model_lib.ModelConfig, variables: dict, batch_sizes: list[int],
                repeats: int) -> dict:
  """Times PyTorch EZ-CLIP in a subprocess on the same weights; {} if that fails."""
  with tempfile.TemporaryDirectory() as tmp:
    pretrained = os.path.join(tmp, "flax")
    checkpoint.save_pretrained(pretrained, config, variables["params"])
    cmd = [sys.executable, "-m", "convert.torch_bench", pretrained,
           "--batch_sizes", ",".join(map(str, batch_sizes)), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    print(f"PyTorch side skipped (is the [convert] extra installed?):\n{proc.stderr[-2000:]}",
          file=sys.stderr)
    return {}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  config = model_lib.ARCHITECTURES[_ARCH.value]
  config = model_lib.ModelConfig(**{**config.__dict__, "num_frames": _FRAMES.value})
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  variables = model_lib.init_variables(config, jax.random.key(0))
  jax_peak = matmul_peak_gflops()
  results = {b: bench_jax(config, variables, b, _REPEATS.value) for b in batch_sizes}
  torch_results = bench_torch(config, variables, batch_sizes, _REPEATS.value) if _TORCH.value else {}
  torch_peak = torch_results.get("matmul_peak_gflops")
  print(f"{_ARCH.value}, {config.num_frames}x{config.image_resolution}, {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cpus")
  print(f"measured fp32 matmul peak: XLA {jax_peak:.0f} GFLOP/s"
        + (f", PyTorch {torch_peak:.0f} GFLOP/s" if torch_peak else ""))
  peak = max(jax_peak, torch_peak or 0)
  print(f"{'batch':>5} {'compile s':>9} {'jax s':>7} {'videos/s':>8} {'GFLOPs':>7} {'of peak':>7}"
        f" {'torch s':>8} {'speed-up':>8}")
  for b, r in results.items():
    line = (f"{b:>5} {r['compile_s']:>9.1f} {r['latency_s']:>7.3f} {r['videos_per_s']:>8.2f} "
            f"{r['gflops']:>7.0f} {r['gflops'] / r['latency_s'] / peak:>7.0%}")
    torch_s = torch_results.get("latency_s", {}).get(str(b))
    if torch_s:
      line += f" {torch_s:>8.3f} {torch_s / r['latency_s']:>7.2f}x"
    print(line)


if __name__ == "__main__":
  app.run(main)
