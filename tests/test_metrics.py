"""Metric logging: TensorBoard events read back, JSONL truncation on resume, progress lines, curves."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2

from ezclip_jax import metrics


def _events(workdir):
  """Every event of the run's event files, read by TensorBoard's own loader (which checks the CRCs)."""
  files = sorted((workdir / "tensorboard").iterdir())
  return [event for path in files for event in event_file_loader.LegacyEventFileLoader(str(path)).Load()]


def _scalar_points(events):
  return [(e.step, v.tag, v.simple_value) for e in events if e.HasField("summary") for v in e.summary.value]


def _tensorboard_view(workdir, tag):
  """(step, value) of `tag` as TensorBoard shows it: after dropping the points a restart orphaned."""
  accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard"), purge_orphaned_data=True)
  accumulator.Reload()
  return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_scalars_read_back_from_event_file(tmp_path):
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    writer.write_scalars(1, {"loss": np.float32(2.5), "lr": 1e-4})
    writer.write_scalars(2, {"loss": 1.25})
    writer.write_scalars(300, {"top1": 61.5, "top5": 90.0}, split="ucf101")
  events = _events(tmp_path)
  assert events[0].file_version == "brain.Event:2"
  points = _scalar_points(events)
  assert [p[:2] for p in points] == [(1, "train/loss"), (1, "train/lr"), (2, "train/loss"), (300, "ucf101/top1"),
                                     (300, "ucf101/top5")]
  np.testing.assert_allclose([p[2] for p in points], [2.5, 1e-4, 1.25, 61.5, 90.0], rtol=1e-7)
  assert all(e.wall_time > 1.6e9 for e in events)


def test_writer_imports_neither_tensorflow_nor_torch(tmp_path):
  # An empty `tensorflow` package stands for an installed TensorFlow (as on Colab); importing it
  # leaves it in sys.modules.
  (tmp_path / "tensorflow").mkdir()
  (tmp_path / "tensorflow" / "__init__.py").write_text("")
  script = ("import sys\n"
            "from ezclip_jax import metrics\n"
            f"with metrics.MetricWriter({str(tmp_path / 'run')!r}, enabled=True) as writer:\n"
            "  writer.write_scalars(1, {'loss': 1.0})\n"
            "  writer.truncate_after(0)\n"
            "print(sorted({'tensorflow', 'torch', 'tensorboardX'} & set(sys.modules)))\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr
  assert result.stdout.split("\n")[-2] == "[]"
  assert _scalar_points(_events(tmp_path / "run")) == [(1, "train/loss", 1.0)]


def _log(workdir, steps, *, truncate_at=None, kill=False):
  writer = metrics.MetricWriter(workdir, enabled=True)
  if truncate_at is not None:
    writer.truncate_after(truncate_at)
  for step in steps:
    writer.write_scalars(step, {"loss": 1.0 / step})
    if step % 2 == 0:
      writer.write_scalars(step, {"top1": float(step)}, split="eval")
  if not kill:
    writer.close()


def test_resumed_log_equals_uninterrupted_log(tmp_path):
  _log(tmp_path / "straight", range(1, 7))
  resumed = tmp_path / "resumed"
  _log(resumed, range(1, 6), kill=True)
  with open(resumed / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "split": "tr')  # a record cut short by the kill
  _log(resumed, range(4, 7), truncate_at=3)
  assert (resumed / "metrics.jsonl").read_bytes() == (tmp_path / "straight" / "metrics.jsonl").read_bytes()
  records = metrics.read_jsonl(resumed / "metrics.jsonl")
  assert records[:3] == [{"step": 1, "split": "train", "values": {"loss": 1.0}},
                         {"step": 2, "split": "train", "values": {"loss": 0.5}},
                         {"step": 2, "split": "eval", "values": {"top1": 2.0}}]
  assert [(r["step"], r["split"]) for r in records].count((4, "eval")) == 1

  # A restart marked at step 4: TensorBoard drops the killed run's points from step 4 on and shows
  # the same curves as for the uninterrupted run.
  events = _events(resumed)
  starts = [e.step for e in events if e.HasField("session_log")]
  assert starts == [4]
  assert all(e.session_log.status == event_pb2.SessionLog.START for e in events if e.HasField("session_log"))
  for tag in ("train/loss", "eval/top1"):
    assert _tensorboard_view(resumed, tag) == _tensorboard_view(tmp_path / "straight", tag)
  assert [step for step, _ in _tensorboard_view(resumed, "train/loss")] == [1, 2, 3, 4, 5, 6]


def test_read_jsonl_names_a_bad_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  record = '{"step": 1, "split": "train", "values": {}}\n'
  path.write_text(record + "not json\n" + record)
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    metrics.read_jsonl(path)


def test_disabled_writer_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  writer = metrics.MetricWriter(workdir, enabled=False)
  writer.write_scalars(1, {"loss": 1.0})
  writer.truncate_after(0)
  writer.close()
  assert not workdir.exists()


def test_non_scalar_metric_is_an_error(tmp_path):
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    with pytest.raises(TypeError, match="'logits'"):
      writer.write_scalars(1, {"logits": np.zeros(3)})


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_progress_lines():
  clock, lines = _Clock(), []
  reporter = metrics.ProgressReporter(1000, every_steps=100, every_secs=60.0, print_fn=lines.append, clock=clock)
  assert reporter.update(0) is None  # the reference point
  clock.now = 10.0
  assert reporter.update(50, loss=3.0) is None
  clock.now = 20.0
  # 100 steps in 20 s: 5 steps/s; 900 steps to go: 180 s.
  line = reporter.update(100, loss=np.float32(1.23456))
  assert line == "step 100/1000 (10.0%) | 5.00 steps/s | ETA 0:03:00 | loss 1.2346"
  clock.now = 81.0  # 61 s since the last line: due by time
  assert reporter.update(150) == "step 150/1000 (15.0%) | 1.85 steps/s | ETA 0:07:39"
  clock.now = 500.0
  assert reporter.update(1000, loss=0.5) == "step 1000/1000 (100.0%) | 2.00 steps/s | ETA 0:00:00 | loss 0.5000"
  assert len(lines) == 3
  silent = metrics.ProgressReporter(10, every_steps=1, enabled=False, print_fn=lines.append, clock=clock)
  silent.update(0)
  silent.update(10)
  assert len(lines) == 3


def test_plot_curves(tmp_path):
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    for step in range(1, 21):
      writer.write_scalars(step, {"loss": 3.0 / step, "grad_norm": 1.0})
      if step % 5 == 0:
        writer.write_scalars(step, {"top1": 10.0 * step / 5, "top5": 30.0 + step}, split="ucf101")
  png = tmp_path / "plots" / "curves.png"
  metrics.plot_curves(tmp_path / "metrics.jsonl", png)
  with Image.open(png) as image:
    assert image.format == "PNG" and image.size == (1200, 450)
    pixels = np.asarray(image.convert("RGB")).astype(int)
  # Curves in matplotlib's first colour (#1f77b4) on both panels: train/loss and ucf101/top1.
  blue = np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=-1) < 30
  assert blue[:, :600].sum() > 100 and blue[:, 600:].sum() > 100
  assert not list(png.parent.glob("*.tmp"))


def test_curves_y_ranges(tmp_path):
  # A first-step loss of 50 must not flatten the rest (2.0 falling to 1.0), and an accuracy
  # moving between 49% and 51% must not fill the panel: accuracy is drawn on 0-100%.
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    for step in range(1, 41):
      writer.write_scalars(step, {"loss": 50.0 if step == 1 else 2.0 - (step - 2) / 38})
      if step % 4 == 0:
        writer.write_scalars(step, {"top1": 49.0 + (step % 8) / 2}, split="ucf101")
  png = tmp_path / "curves.png"
  metrics.plot_curves(tmp_path / "metrics.jsonl", png)
  with Image.open(png) as image:
    pixels = np.asarray(image.convert("RGB")).astype(int)
  blue = np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=-1) < 30

  def vertical_spread(columns):
    rows = np.nonzero(blue[60:, columns].any(axis=1))[0]  # below the legends
    return rows.max() - rows.min()

  assert vertical_spread(slice(330, 560)) > 60  # steps 21-39: losses 1.5 to 1.05 of a 0-2.1 range
  assert vertical_spread(slice(700, 1150)) < 30  # 49% to 51% of a -2-102% range
