"""notebooks/colab_tpu.ipynb runs top to bottom on CPU with tiny parameters (papermill-style).

The test writes what a Colab user brings: a backbone-only CLIP state dict (the tiny
architecture below, random weights) and a folder of class-per-subfolder mp4 videos. It
adds a cell after the notebook's `parameters` cell that points the notebook at them and
shrinks every size, executes every cell in a fresh kernel of this interpreter with 2
simulated CPU devices, and fails on the first cell that raises.
"""

import ast
import base64
import dataclasses
import io
import json
import os
import pathlib
import sys

import nbclient
import nbformat
import numpy as np
import pytest
import torch
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from PIL import Image

from data import synthetic
from ezclip_jax import checkpoint
from ezclip_jax import model as model_lib
from tests import references

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"
# 32 px frames in 8x8 patches; the real vocabulary and context, which the tokenizer needs.
TINY = dataclasses.replace(model_lib.TINY, image_resolution=32, vision_patch_size=8)
DEVICES = 2
CLASSES = ("growing", "shrinking")
VIDEOS_PER_CLASS = 4
TRAINING_CELL = "train.train_and_evaluate(config, run_dir)"


def _parameter_names(nb: nbformat.NotebookNode) -> set[str]:
  cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
  assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
  return {t.id for node in ast.parse(cells[0].source).body for t in node.targets}


def _inject(nb: nbformat.NotebookNode, params: dict) -> None:
  """Adds a cell overriding `params` right after the `parameters` cell."""
  unknown = set(params) - _parameter_names(nb)
  assert not unknown, f"not parameters of the notebook: {sorted(unknown)}"
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ()))
  source = "\n".join(f"{name} = {value!r}" for name, value in params.items())
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def _run_training_cell_twice(nb: nbformat.NotebookNode) -> None:
  """Runs the training cell again right after itself, as a user whose runtime reconnected would."""
  index = next(i for i, c in enumerate(nb.cells) if TRAINING_CELL in c.source)
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(nb.cells[index].source, metadata={"tags": ["rerun"]}))


def _kernel_manager(tmp_path: pathlib.Path) -> KernelManager:
  """A `python3` kernel that runs this interpreter (the venv), whatever kernel specs are installed."""
  spec_dir = tmp_path / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "Python 3", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  return KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))


def _stdout(cell: nbformat.NotebookNode) -> str:
  return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _images(cell: nbformat.NotebookNode) -> list[str]:
  return [o.data["image/png"] for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]


def _cells(nb: nbformat.NotebookNode, snippet: str) -> list[nbformat.NotebookNode]:
  return [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]


def _cell(nb: nbformat.NotebookNode, snippet: str) -> nbformat.NotebookNode:
  matches = _cells(nb, snippet)
  assert len(matches) == 1, f"{len(matches)} code cells contain {snippet!r}"
  return matches[0]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("notebook")
  state = references.random_ezclip_state(TINY, seed=0)
  backbone = {k: v for k, v in state.items() if not any(a in k for a in ("Adapter", "prompt", "temporal"))}
  torch.save(backbone, tmp_path / "clip.pt")
  videos = synthetic.make_dataset(tmp_path / "synthetic", videos_per_class=VIDEOS_PER_CLASS, num_frames=16,
                                  height=48, width=40, classes=CLASSES, frames=False, videos=True)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  _inject(nb, {"CHECKPOINT": str(tmp_path / "clip.pt"), "VIDEO_DIR": str(videos.root / "videos"),
               "WORKDIR": str(tmp_path / "work"), "HOLDOUT": 0.25, "BATCH_SIZE": DEVICES, "EVAL_BATCH_SIZE": 2,
               "EPOCHS": 1, "NUM_WORKERS": 1, "PREDICT_VIDEOS": 2})
  _run_training_cell_twice(nb)
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  km = _kernel_manager(tmp_path)
  client = nbclient.NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute(env=env)  # Raises CellExecutionError, naming the cell, if any cell raises.
  finally:
    if km.has_kernel:
      km.shutdown_kernel(now=True)
  return nb, tmp_path, backbone


def test_every_cell_ran(executed):
  nb, _, _ = executed
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code)
  assert not [o for c in code for o in c.outputs if o.output_type == "error"]


def test_devices_and_mesh_span_every_device(executed):
  nb, _, _ = executed
  assert f"{DEVICES} cpu device(s), {DEVICES} local" in _stdout(_cell(nb, "PLATFORM = "))
  assert f"mesh ({DEVICES}, 1, 1)" in _stdout(_cell(nb, "config.mesh_shape = "))


def test_uploaded_checkpoint_was_converted(executed):
  _, tmp_path, backbone = executed
  model, variables = checkpoint.load_pretrained(tmp_path / "work" / "clip")
  assert model.config.num_frames == 8 and model.config.image_resolution == 32
  np.testing.assert_array_equal(variables["params"]["visual"]["conv1"]["kernel"],
                                backbone["visual.conv1.weight"].numpy().transpose(2, 3, 1, 0))


def test_dataset_split_holds_out_a_quarter_of_each_class(executed):
  _, tmp_path, _ = executed
  data = tmp_path / "work" / "data"
  assert (data / "labels.csv").read_text().splitlines() == ["id,name", *(f"{i},{c}" for i, c in enumerate(CLASSES))]
  for name in CLASSES:
    train = {p.name for p in (data / "train" / name).iterdir()}
    held = {p.name for p in (data / "heldout" / name).iterdir()}
    assert (len(train), len(held)) == (3, 1) and not train & held
    originals = tmp_path / "synthetic" / "videos" / name
    assert train | held == {p.name for p in originals.iterdir()}
    link = data / "heldout" / name / held.pop()
    assert link.resolve() == (originals / link.name).resolve()


def test_zero_shot_and_training_report_accuracy_and_plots(executed):
  nb, tmp_path, _ = executed
  zero_shot = _cell(nb, "train.evaluate_pretrained(config, workdir / \"zero_shot\")")
  assert "zero-shot top-1 on the held-out videos:" in _stdout(zero_shot) and len(_images(zero_shot)) == 1
  trained, again = _cells(nb, TRAINING_CELL)
  assert "step 3/3" in _stdout(trained) and "after training" in _stdout(trained) and len(_images(trained)) == 1
  # 6 training videos, batches of 2, 1 epoch: 3 steps, the held-out set evaluated at the end.
  log = [json.loads(line) for line in (tmp_path / "work" / "run" / "metrics.jsonl").read_text().splitlines()]
  assert sorted(entry["step"] for entry in log if entry["split"] == "train") == [3]
  assert [entry["step"] for entry in log if entry["split"] == "eval/heldout"] == [3]
  assert (tmp_path / "work" / "run" / "best").is_dir()
  # Run again, the finished run trains no further and its best checkpoint scores the same.
  assert "training is already done" in _stdout(again) and "step 3/3" not in _stdout(again)
  assert _stdout(again).splitlines()[-1] == _stdout(trained).splitlines()[-1]
  assert (tmp_path / "work" / "run_eval" / "metrics.jsonl").is_file()


def test_prediction_table_ranks_the_classes_of_each_heldout_video(executed):
  nb, tmp_path, _ = executed
  lines = _stdout(_cell(nb, "predict.predict_videos(")).splitlines()
  heldout = sorted(str(p) for p in (tmp_path / "work" / "data" / "heldout").glob("*/*.mp4"))
  assert [line for line in lines if not line.startswith(" ")] == heldout
  for path in heldout:
    start = lines.index(path) + 2  # The path, then the column names.
    rows = [line.split() for line in lines[start:start + len(CLASSES)]]
    assert sorted(label for _, label, _ in rows) == sorted(CLASSES)
    probabilities = [float(p) for _, _, p in rows]
    # Every class is listed, so the (template-averaged) softmax sums to 1.
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
  # The same best checkpoint scored the held-out videos at the end of training.
  correct = [lines[lines.index(path) + 2].split()[1] == pathlib.Path(path).parent.name for path in heldout]
  trained = _stdout(_cells(nb, TRAINING_CELL)[0])
  assert f"-> {100 * np.mean(correct):.1f}% after training" in trained


def test_attention_pngs_and_contact_sheet(executed):
  nb, tmp_path, _ = executed
  out = tmp_path / "work" / "attention"
  frames = sorted(out.glob("frame_*.png"))
  assert len(frames) == 8 and all(Image.open(p).size == (32, 32) for p in frames)
  sheet = (out / "contact_sheet.png").read_bytes()
  assert Image.open(io.BytesIO(sheet)).size == (4 * 32, 2 * 32)  # 8 frames, 4 per row
  assert _images(_cell(nb, "visualize.write_pngs(")) == [base64.b64encode(sheet).decode()]
