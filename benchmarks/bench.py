"""Benchmarks of the model: `encode_video` next to PyTorch, and the train/eval steps.

  python -m benchmarks.bench [--arch ViT-B/16] [--frames 8] [--batch_sizes 1,2] [--repeats 5]
  python -m benchmarks.bench --what=train [--batch_sizes 2] [--dtype bfloat16]

`--what=forward` (default) prints, per batch size: jit compile seconds, median
forward latency, videos/s, XLA's FLOP count and the achieved fraction of this
machine's measured float32 matmul peak (both JAX's and PyTorch's peaks are measured
in this run). The PyTorch side runs in a subprocess (`benchmarks.torch_bench`: torch is
never imported by the library) on the same weights, converted by `convert.flax_to_torch`.

`--what=train` prints, per batch size, for the sharded train step (all local
devices, data parallel) and the eval step (encode + zero-shot scoring): compile
seconds, videos/s and model FLOPs utilisation against the matmul peak measured in
the compute dtype.
"""

import dataclasses
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

from configs import common
from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import evaluate
from ezclip_jax import input_pipeline
from ezclip_jax import model as model_lib
from ezclip_jax import optim
from ezclip_jax import sharding
from ezclip_jax import step as step_lib
from ezclip_jax import transforms

_ARCH = flags.DEFINE_enum("arch", "ViT-B/16", list(model_lib.ARCHITECTURES), "Architecture.")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per video.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2"], "Batch sizes to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forward passes per batch size.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch reference (needs the [convert] extra).")
_WHAT = flags.DEFINE_enum("what", "forward", ["forward", "train"], "Which benchmark.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (train benchmark).")


def time_calls(fn, repeats: int) -> float:
  """Median wall seconds of `fn()` over `repeats` calls after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
  """Measured matmul throughput of XLA on the default device, in `dtype`."""
  if jax.default_backend() != "cpu":
    size = 8192
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
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
    cmd = [sys.executable, "-m", "benchmarks.torch_bench", pretrained,
           "--batch_sizes", ",".join(map(str, batch_sizes)), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    print(f"PyTorch side skipped (is the [convert] extra installed?):\n{proc.stderr[-2000:]}",
          file=sys.stderr)
    return {}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _compiled(fn, *args):
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start, compiled.cost_analysis()["flops"]


def bench_train_step(config: model_lib.ModelConfig, variables: dict, batch: int, repeats: int) -> dict:
  """Train step (data parallel over the local devices) on random clips and texts."""
  mesh = sharding.make_mesh((-1, 1, 1), jax.local_devices())
  tx = optim.make_optimizer(common.get_config().optim, total_steps=1000, warmup_steps=10)
  train_step = step_lib.create_train_step(config, tx, mesh, variables["params"])
  rng = np.random.default_rng(0)
  res = config.image_resolution
  host = {"video": rng.integers(0, 256, (batch, config.num_frames, res, res, 3), dtype=np.uint8),
          "label": np.arange(batch, dtype=np.int32),
          "text": rng.integers(1, config.vocab_size - 1, (batch, config.context_length)).astype(np.int32)}
  host["text"][:, -1] = config.vocab_size - 1
  jitter = transforms.RandomColorJitter(p=1.0)  # every clip jittered: the device-side worst case
  host["color"] = np.stack([jitter.random_map({"frames": clip}, rng)["color"] for clip in host["video"]])
  device_batch = step_lib.to_global(host, train_step.batch_shardings)
  compiled, compile_s, flops = _compiled(train_step.step, train_step.state, device_batch)
  holder = [train_step.state]

  def run():
    holder[0], metrics = compiled(holder[0], device_batch)
    jax.block_until_ready(metrics)

  seconds = time_calls(run, repeats)
  return {"compile_s": compile_s, "latency_s": seconds, "videos_per_s": batch / seconds, "gflops": flops / 1e9}


def bench_eval_step(config: model_lib.ModelConfig, variables: dict, batch: int, repeats: int,
                    num_classes: int = 400) -> dict:
  """Eval step: encode the clips and score them against precomputed class texts."""
  model = model_lib.EZCLIP(config)
  res = config.image_resolution
  video = jnp.asarray(np.random.default_rng(1).integers(0, 256, (batch, config.num_frames, res, res, 3),
                                                         dtype=np.uint8))
  texts = jnp.asarray(np.random.default_rng(2).standard_normal((1, num_classes, config.embed_dim)), jnp.float32)

  def step(v, x, t):
    frames = model.apply(v, input_pipeline.normalize(x), method=model.encode_video)
    return evaluate.class_probabilities(frames, t)

  compiled, compile_s, flops = _compiled(jax.jit(step), variables, video, texts)
  seconds = time_calls(lambda: compiled(variables, video, texts).block_until_ready(), repeats)
  return {"compile_s": compile_s, "latency_s": seconds, "videos_per_s": batch / seconds, "gflops": flops / 1e9}


def main_train(config: model_lib.ModelConfig, batch_sizes: list[int], repeats: int) -> None:
  config = dataclasses.replace(config, dtype=_DTYPE.value)
  variables = model_lib.init_variables(config, jax.random.key(0))
  peak = matmul_peak_gflops(dtype=_DTYPE.value)
  devices = jax.local_devices()
  print(f"{_ARCH.value}, {config.num_frames}x{config.image_resolution}, {config.dtype}, {len(devices)} x "
        f"{devices[0].device_kind}; measured {_DTYPE.value} matmul peak {peak:.0f} GFLOP/s")
  print(f"{'step':>5} {'batch':>5} {'compile s':>9} {'step s':>7} {'videos/s':>8} {'GFLOPs':>7} {'MFU':>5}")
  for batch in batch_sizes:
    for name, fn in (("train", bench_train_step), ("eval", bench_eval_step)):
      r = fn(config, variables, batch, repeats)
      mfu = r["gflops"] / r["latency_s"] / (peak * len(devices))
      print(f"{name:>5} {batch:>5} {r['compile_s']:>9.1f} {r['latency_s']:>7.3f} {r['videos_per_s']:>8.2f} "
            f"{r['gflops']:>7.0f} {mfu:>5.0%}")


def main(argv):
  del argv
  console.set_log_level(console.LOG_LEVEL.value)
  config = model_lib.ARCHITECTURES[_ARCH.value]
  config = dataclasses.replace(config, num_frames=_FRAMES.value)
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  if _WHAT.value == "train":
    main_train(config, batch_sizes, _REPEATS.value)
    return
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
