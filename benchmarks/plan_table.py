"""The README's table of the official recipes planned on TPU slices (`ezclip_jax.plan`, no TPU needed).

  python -m benchmarks.plan_table [--recipes=vit_b16,vit_l14,vit_l14_336] [--slices=v4-8,v5e-8,...] \\
      [--mesh=-1,1,1 --mesh=-1,4,1 ...]

Each recipe is configs/k400_zero_shot.py (global batch 80, 8 frames, colour jitter on) in
bfloat16. For every slice the train step is compiled for the candidate (data, fsdp, tensor)
meshes in order, skipping those the batch does not split over, until one fits: data
parallel first (the frozen backbone fits on every chip and its only collectives are the
small gradient all-reduce and embedding all-gathers), then fsdp, then tensor parallel.
`--all_meshes` compiles every candidate and recommends the one that fits with the lowest
roofline bound, then the fewest collective bytes. When no mesh fits, the first candidate mesh
is compiled once more with `model.remat=True` (each block's forward recomputed in the
backward pass; `--remat_fallback=False` skips it). On the recommended mesh,
`plan.search_max_batch` finds the largest per-chip batch (`--max_batch=False` skips it). Every compile's numbers are cached as JSON in
--cache_dir, keyed by the row and a hash of the library's source and the jax and libtpu
versions: an interrupted run resumes, and a change to the model or the step recomputes.
Prints progress to stderr and the Markdown table to stdout.
"""

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import sys
import tempfile

from absl import app
from absl import flags
import jax

from configs import k400_zero_shot
from ezclip_jax import model as model_lib
from ezclip_jax import plan as plan_lib

# name -> (label, architecture). ViT-L/14 at 336 pixels has 24 x 24 + 1 = 577 tokens a frame.
RECIPES = {
    "vit_b16": ("ViT-B/16 8x224", model_lib.VIT_B_16),
    "vit_l14": ("ViT-L/14 8x224", model_lib.VIT_L_14),
    "vit_l14_336": ("ViT-L/14 8x336", dataclasses.replace(model_lib.VIT_L_14, image_resolution=336)),
}
# Cloud TPU name -> libtpu topology name.
SLICES = {"v4-8": "v4:2x2x1", "v5e-8": "v5e:2x4", "v5e-64": "v5e:8x8", "v5p-8": "v5p:2x2x1", "v6e-8": "v6e:2x4"}
# Candidate meshes: data parallel, fully sharded over 4 chips, tensor parallel over 4 (for
# slices whose chips do not divide the batch of 80, the last gives 16 batch shards).
MESHES = ("-1,1,1", "-1,4,1", "-1,1,4")

_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), "Recipes to plan.")
_SLICES = flags.DEFINE_list("slices", list(SLICES), "Slices to plan them on.")
_MESHES = flags.DEFINE_multi_string("mesh", list(MESHES), "Candidate meshes, data,fsdp,tensor (repeat the flag).")
_ALL_MESHES = flags.DEFINE_bool("all_meshes", False, "Compile every candidate mesh, not only up to the first that fits.")
_REMAT_FALLBACK = flags.DEFINE_bool("remat_fallback", True, "When no mesh fits, try the first with model.remat=True.")
_MAX_BATCH = flags.DEFINE_bool("max_batch", True, "Search the largest per-chip batch on the recommended mesh.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", os.path.expanduser("~/.cache/ezclip_jax/plan_table"),
                                 "Where each compile's numbers are kept.")


def source_hash() -> str:
  """Changes whenever the library's code, jax or libtpu changes."""
  digest = hashlib.sha256()
  for path in sorted(pathlib.Path(plan_lib.__file__).parent.glob("*.py")):
    digest.update(path.read_bytes())
  for package in ("jax", "jaxlib", "libtpu"):
    digest.update(importlib.metadata.version(package).encode())
  return digest.hexdigest()[:16]


def recipe_config(architecture: model_lib.ModelConfig, directory: pathlib.Path, mesh: tuple[int, int, int],
                  remat: bool = False):
  """configs/k400_zero_shot.py with this architecture (a model_config.json, no weights), mesh and remat."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "model_config.json").write_text(architecture.to_json())
  config = k400_zero_shot.get_config()
  config.model.pretrained = str(directory)
  config.model.dtype = "bfloat16"
  config.mesh_shape = mesh
  config.model.remat = remat
  return config


class Cache:
  """One JSON file per key under a directory named by `source_hash()`."""

  def __init__(self, root: str):
    self.root = pathlib.Path(root) / source_hash()
    self.root.mkdir(parents=True, exist_ok=True)

  def get(self, key: str, compute):
    path = self.root / f"{key}.json"
    if path.exists():
      return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value))
    return value


def plan_row(recipe: str, slice_name: str, meshes: list[tuple[int, int, int]], cache: Cache,
             work: pathlib.Path) -> dict:
  """The plans of every candidate mesh, the recommended one and its largest batch."""
  label, architecture = RECIPES[recipe]
  target = plan_lib.make_target(SLICES[slice_name])
  candidates = {}
  options = [(mesh, False) for mesh in meshes] + [(meshes[0], True)] * _REMAT_FALLBACK.value
  for mesh, remat in options:
    if remat and any(plan is not None and plan["fits"] for plan in candidates.values()):
      break
    config = recipe_config(architecture, work / recipe, mesh, remat)
    key = f"{recipe}_{slice_name}_{'x'.join(map(str, mesh))}" + "_remat" * remat
    try:
      planner = plan_lib.Planner(config, target, "train")
      batch = planner.default_batch()
    except plan_lib.PlanError as e:
      print(f"{label} on {slice_name}, mesh {mesh}: skipped ({e})", file=sys.stderr)
      continue
    print(f"{label} on {slice_name}, mesh {mesh}{', remat' * remat}: compiling ...", file=sys.stderr, flush=True)
    candidates[mesh, remat] = cache.get(key, lambda: _plan_or_none(planner, batch))
    jax.clear_caches()
    if not _ALL_MESHES.value and candidates[mesh, remat] is not None and candidates[mesh, remat]["fits"]:
      break
  compiled = {option: plan for option, plan in candidates.items() if plan is not None}
  if not compiled:
    raise RuntimeError(f"{label} on {slice_name}: no candidate mesh compiles at batch 80")
  best = min(compiled, key=lambda o: (not compiled[o]["fits"], compiled[o]["roofline"]["step_s"],
                                      sum(c["bytes"] for c in compiled[o]["collectives"].values())))
  row = {"recipe": label, "slice": slice_name, "plan": compiled[best], "max_batch": None, "candidates": candidates}
  if not _MAX_BATCH.value:
    return row
  mesh, remat = best
  config = recipe_config(architecture, work / recipe, mesh, remat)
  planner = plan_lib.Planner(config, target, "train")
  start = planner.default_batch() // planner.shards if compiled[best]["fits"] else 1
  progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  print(f"{label} on {slice_name}, mesh {mesh}{', remat' * remat}: largest batch ...", file=sys.stderr, flush=True)
  key = f"{recipe}_{slice_name}_{'x'.join(map(str, mesh))}" + "_remat" * remat + "_hbm_at"
  # The search starts at the batch the row compiled: its HBM is known, not compiled again.
  known = {planner.default_batch(): compiled[best]["hbm"]["total"]} if compiled[best]["fits"] else {}
  total_bytes = lambda batch: known.get(batch) or cache.get(f"{key}_{batch}",  # noqa: E731
                                                             lambda: planner.total_bytes(batch))
  max_batch = plan_lib.search_max_batch(total_bytes, planner.shards, len(target.devices), target.hbm_bytes, start,
                                        progress)
  jax.clear_caches()
  return row | {"max_batch": max_batch}


def _plan_or_none(planner: plan_lib.Planner, batch: int) -> dict | None:
  """The plan's numbers, or None when the TPU compiler runs out of memory."""
  try:
    return dataclasses.asdict(planner.plan(planner.compile(batch)))
  except jax.errors.JaxRuntimeError as e:
    if not plan_lib.out_of_memory(e):
      raise
    return None


def markdown(rows: list[dict]) -> str:
  header = ("| Recipe | Slice | Mesh (data, fsdp, tensor) | Batch per chip | HBM per chip | Fits | Max batch "
            "per chip | Roofline step | Bound by | Videos/s per chip (at most) | MFU ceiling |")
  lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for row in rows:
    plan, roof = row["plan"], row["plan"]["roofline"]
    mesh = ", ".join(str(plan["mesh"][axis]) for axis in ("data", "fsdp", "tensor")) + ", remat" * plan["remat"]
    largest = "—" if row["max_batch"] is None else f"{row['max_batch']['batch_per_chip']:g}"
    bound = "compute" if roof["compute_s"] >= roof["memory_s"] else "HBM bytes"
    lines.append(f"| {row['recipe']} | {row['slice']} | {mesh} | {plan['batch_per_chip']:g} | "
                 f"{plan['hbm']['total'] / 2**30:.1f} of {plan['hbm']['capacity'] / 2**30:.0f} GiB | "
                 f"{'yes' if plan['fits'] else 'no'} | {largest} | "
                 f"{roof['step_s'] * 1e3:.0f} ms | {bound} | {roof['videos_per_s_per_chip']:.1f} | "
                 f"{100 * roof['mfu_ceiling']:.0f}% |")
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  if not os.environ.get("JAX_PLATFORMS"):
    jax.config.update("jax_platforms", "cpu")
  for name in _RECIPES.value + _SLICES.value:
    if name not in RECIPES and name not in SLICES:
      raise app.UsageError(f"unknown recipe or slice {name!r}; expected {list(RECIPES)} or {list(SLICES)}")
  meshes = [tuple(int(n) for n in mesh.split(",")) for mesh in _MESHES.value]
  cache = Cache(_CACHE_DIR.value)
  with tempfile.TemporaryDirectory() as work:
    rows = [plan_row(recipe, slice_name, meshes, cache, pathlib.Path(work))
            for recipe in _RECIPES.value for slice_name in _SLICES.value]
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
