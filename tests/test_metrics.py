"""Metric logging: TensorBoard events read back, JSONL truncation on resume, progress lines, curves."""

import struct

import numpy as np
import pytest
from PIL import Image
from tensorboardX import crc32c as reference_crc32c
from tensorboardX.proto import event_pb2

from ezclip_jax import metrics


def _read_tfrecords(path):
  """Records of a TFRecord file, each checked against tensorboardX's CRC-32C."""

  def masked(data):
    crc = reference_crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

  data, records, offset = path.read_bytes(), [], 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
    assert length_crc == masked(header)
    record = data[offset + 12:offset + 12 + length]
    assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked(record)
    records.append(record)
    offset += 16 + length
  return records


def _events(workdir):
  files = sorted((workdir / "tensorboard").iterdir())
  return [event_pb2.Event.FromString(r) for path in files for r in _read_tfrecords(path)]


def _scalar_points(events):
  return [(e.step, v.tag, v.simple_value) for e in events if e.HasField("summary") for v in e.summary.value]


def test_crc32c_matches_the_standard_check_value():
  assert metrics.crc32c(b"123456789") == 0xE3069283  # RFC 3720's CRC-32C check value
  data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
  assert metrics.crc32c(data) == reference_crc32c.crc32c(data)


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

  # TensorBoard sees a restart at step 4, so it drops the killed run's points from step 4 on.
  events = _events(resumed)
  starts = [e.step for e in events if e.HasField("session_log")]
  assert starts == [4]
  assert all(e.session_log.status == event_pb2.SessionLog.START for e in events if e.HasField("session_log"))


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
