"""Metric logging: TensorBoard events read back, JSONL truncation on resume, step windows, curves."""

import dataclasses
import math
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2

from configs import common
from ezclip_jax import metrics
from ezclip_jax import step as step_lib
from ezclip_jax import synthetic
from ezclip_jax import train


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


def test_step_window_means_rate_and_first_nonfinite_step():
  clock = _Clock()
  window = metrics.StepWindow(10, clock=clock)  # resumed after step 10
  losses = [4.0, 2.0, 3.0]
  for loss in losses:
    window.add({"loss": jnp.float32(loss), "grad_norm": np.float32(2 * loss)})
  clock.now = 1.5
  window.restart_clock(11)  # step 11 compiled: only steps 12 and 13 are timed
  clock.now = 2.5
  summary = window.close()
  assert (summary.first_step, summary.last_step) == (11, 13)
  assert summary.means == {"loss": 3.0, "grad_norm": 6.0}
  assert summary.first_nonfinite is None and summary.steps_per_sec == 2.0  # 2 steps in 1 s
  assert window.eta_seconds(10) == 5.0
  # The next window starts after step 13, timed from its close.
  for loss in (1.0, np.inf, np.nan):
    window.add({"loss": loss, "grad_norm": 1.0})
  clock.now = 4.0
  summary = window.close()
  assert (summary.first_step, summary.last_step, summary.first_nonfinite) == (14, 16, 15)
  assert summary.nonfinite_values == {"loss": np.inf, "grad_norm": 1.0}
  assert summary.steps_per_sec == 2.0  # 3 steps in 1.5 s
  assert window.eta_seconds(10) == pytest.approx(10 * 2.5 / 5)
  window.add({"loss": 1.0})
  window.restart_clock(17)  # a window whose only step compiled has no rate
  assert window.close().steps_per_sec is None
  with pytest.raises(ValueError, match="no steps"):
    window.close()


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


def test_training_logs_window_means_lr_and_steps_per_sec(tmp_path, monkeypatch):
  """6 steps logged every 3: each train record is the mean of its 3 steps' metrics, which the
  test takes from the jitted step itself, and the lr is the warmup-cosine formula's."""
  data = synthetic.make_dataset(tmp_path / "data", videos_per_class=4, num_frames=4, height=32, width=32,
                                classes=("moving_left", "moving_right", "growing", "shrinking"))
  config = common.get_config()
  config.model.arch, config.model.num_frames = "tiny", 4
  config.data.train = common.dataset(name="train", list_file=str(data.frames_list), labels_csv=str(data.labels_csv))
  config.data.batch_size, config.data.num_workers, config.data.color_jitter = 8, 0, False
  config.optim.lr, config.optim.warmup_epochs = 1e-3, 1  # 2 steps per epoch: 2 warmup steps of 6
  config.train.update(epochs=3, log_every_steps=3, checkpoint_every_steps=100)
  per_step = []
  create = step_lib.create_train_step

  def spying_create(*args, **kwargs):
    built = create(*args, **kwargs)

    def step(state, batch):
      state, step_metrics = built.step(state, batch)
      per_step.append(jax.device_get(step_metrics))
      return state, step_metrics

    return dataclasses.replace(built, step=step)

  monkeypatch.setattr(step_lib, "create_train_step", spying_create)
  began = time.monotonic()
  train.train_and_evaluate(config, tmp_path / "run")
  wall = time.monotonic() - began
  records = metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl")
  logged = {r["step"]: r["values"] for r in records if r["split"] == "train"}
  assert len(per_step) == 6 and sorted(logged) == [3, 6]
  for step, values in logged.items():
    window = per_step[step - 3:step]
    for name in ("loss", "kl_loss", "motion_loss", "grad_norm", "update_norm"):
      assert values[name] == pytest.approx(np.mean([float(m[name]) for m in window]), rel=1e-6), (step, name)
  # The lr of the step's last update (update u = step - 1): warmup 0 -> 1e-3 over 2 updates, cosine to 0 at 6.
  assert logged[3]["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 0 / 4)) / 2)
  assert logged[6]["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 3 / 4)) / 2)
  rates = {r["step"]: r["values"]["steps_per_sec"] for r in records if r["split"] == "perf"}
  assert sorted(rates) == [3, 6] and all(rate > 0 for rate in rates.values())
  # Timed: steps 2-3 (step 1 compiles) and 4-6; together they took less than the whole run.
  assert 2 / rates[3] + 3 / rates[6] < wall
