"""Tests for timelines (`python -m ezclip_jax.predict --timeline`, ezclip_jax/windows.py).

The boundary test builds a 30 s video from the demo's generator (`ezclip_jax.synthetic`):
growing for 10 s, shrinking for 9 s, growing for 11 s, and scores it with the demo's trained
model (tests/conftest.py). Expected window times, segment boundaries and labels come from
that construction; expected probabilities from predict's per-video path (grain pipeline).
"""

import dataclasses
import json
import pathlib
import subprocess
import sys
import textwrap

import av
import jax
import numpy as np
import pytest
from PIL import Image

from ezclip_jax import checkpoint
from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import synthetic
from ezclip_jax import windows

SEGMENTS = (("growing", 0.0, 10.0), ("shrinking", 10.0, 19.0), ("growing", 19.0, 30.0))
WINDOW, STRIDE = 4.0, 2.0


def _growing_clip(k: int, num_frames: int) -> np.ndarray:
  # The generator's growing rectangle over `num_frames` frames (video k of the growing/shrinking pair).
  return synthetic._clip(7, synthetic.CLASSES.index("growing") // 2, k, num_frames, 64, 64)  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> pathlib.Path:
  parts = []
  for k, (name, start, end) in enumerate(SEGMENTS):
    clip = _growing_clip(k, round((end - start) * synthetic.FPS))
    parts.append(clip if name == "growing" else clip[::-1])
  path = tmp_path_factory.mktemp("timeline") / "long.mp4"
  synthetic.write_video(path, np.concatenate(parts))
  return path


def _run(capsys, *argv) -> tuple[int, str, str]:
  code = predict.main([*argv, "--no-cache"])
  out, err = capsys.readouterr()
  return code, out, err


def test_timeline_finds_the_boundaries(trained_demo, long_video, tmp_path, capsys):
  data = trained_demo.eval_root
  code, out, err = _run(capsys, "--checkpoint", str(trained_demo.checkpoint), "--label-file",
                        str(data / "labels.csv"), "--descriptions", str(data / "descriptions.csv"), "--timeline",
                        "--json", "--top-k", "2", "--plot", str(tmp_path / "plots"), str(long_video))
  assert code == 0, err
  (video,) = json.loads(out)

  # The schema, exactly.
  assert list(video) == ["path", "duration", "windows", "segments"]
  assert video["path"] == str(long_video) and video["duration"] == pytest.approx(30.0)
  for window in video["windows"]:
    assert list(window) == ["start", "end", "top_k"]
    assert [list(t) for t in window["top_k"]] == [["label", "probability"]] * 2
    assert window["top_k"][0]["probability"] >= window["top_k"][1]["probability"]
  for segment in video["segments"]:
    assert list(segment) == ["start", "end", "label", "probability"]
  # 4 s windows every 2 s from 0 to 26 s: 14 windows, the last ending at 30 s.
  assert [w["start"] for w in video["windows"]] == pytest.approx(np.arange(0, 27, 2))
  assert [w["end"] - w["start"] for w in video["windows"]] == pytest.approx([WINDOW] * 14)

  # Boundaries within one stride of the truth, the labels in order.
  segments = video["segments"]
  assert [s["label"] for s in segments] == [name for name, _, _ in SEGMENTS]
  assert segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(30.0)
  for found, (_, start, end) in zip(segments, SEGMENTS):
    assert abs(found["start"] - start) <= STRIDE and abs(found["end"] - end) <= STRIDE

  # >= 90% of the windows lying inside one true segment carry its class.
  inside = [(w, name) for w in video["windows"] for name, start, end in SEGMENTS
            if start <= w["start"] and w["end"] <= end]
  assert len(inside) >= 10
  assert np.mean([w["top_k"][0]["label"] == name for w, name in inside]) >= 0.9

  # A segment's probability: the mean over its windows (those whose centre lies in it) of its class.
  for segment in segments:
    members = [w for w in video["windows"] if segment["start"] <= (w["start"] + w["end"]) / 2 < segment["end"]]
    expected = np.mean([next(t["probability"] for t in w["top_k"] if t["label"] == segment["label"])
                        for w in members])
    assert segment["probability"] == pytest.approx(expected, abs=1e-6)

  image = np.asarray(Image.open(tmp_path / "plots" / "long.mp4.png"))
  assert image.shape[0] >= 300 and image.shape[1] >= 600


def test_timeline_table_lists_segments(trained_demo, long_video, capsys):
  data = trained_demo.eval_root
  code, out, _ = _run(capsys, "--checkpoint", str(trained_demo.checkpoint), "--label-file", str(data / "labels.csv"),
                      "--descriptions", str(data / "descriptions.csv"), "--timeline", "--min-probability", "1.01",
                      str(long_video))
  assert code == 0
  # Every window is background at a minimum probability above 1: no segments.
  assert out.splitlines() == [str(long_video), "  30.0 s, 14 windows, 0 segments",
                              "     start       end  label  probability"]


def test_window_longer_than_the_video_scores_it_once_like_predict(trained_demo, capsys):
  data = trained_demo.eval_root
  clip = data / "frames" / "growing_0000"  # 24 frames: 0.96 s at 25 fps
  common = ["--checkpoint", str(trained_demo.checkpoint), "--label-file", str(data / "labels.csv"),
            "--descriptions", str(data / "descriptions.csv"), "--json", str(clip)]
  _, out, _ = _run(capsys, *common, "--timeline", "--window", "10")
  (video,) = json.loads(out)
  assert video["duration"] == pytest.approx(0.96)
  (window,) = video["windows"]
  assert (window["start"], window["end"]) == (0.0, pytest.approx(0.96))
  _, out, _ = _run(capsys, *common)
  (whole,) = json.loads(out)
  assert [t["label"] for t in window["top_k"]] == [p["label"] for p in whole["predictions"]]
  np.testing.assert_allclose([t["probability"] for t in window["top_k"]],
                             [p["probability"] for p in whole["predictions"]], atol=1e-6)
  assert video["segments"] == [{"start": 0.0, "end": pytest.approx(0.96), "label": whole["predictions"][0]["label"],
                                "probability": pytest.approx(whole["predictions"][0]["probability"], abs=1e-6)}]


def test_slide_by_hand():
  # 25 fps, 1 s windows every 0.5 s over 70 frames: starts 0, 12 (0.5 s = 12.5 rounds to 12), 24, 36;
  # 36 + 25 = 61 < 70, so one more window ends at the last frame.
  assert windows.slide(70, 25.0, 1.0, 0.5) == [windows.Window(s, 25) for s in (0, 12, 24, 36, 45)]
  assert windows.slide(50, 25.0, 1.0, 1.0) == [windows.Window(0, 25), windows.Window(25, 25)]
  assert windows.slide(20, 25.0, 4.0, 2.0) == [windows.Window(0, 20)]
  # Segment centres of frames 10..34 for T = 4: 10 + int(6.25 i + 2.625) = 10 + (2, 8, 15, 21).
  np.testing.assert_array_equal(windows.Window(10, 25).frame_indices(4), [12, 18, 25, 31])


def test_segments_by_hand():
  times = np.array([[0, 4], [2, 6], [4, 8], [6, 10], [8, 12]], float)
  probs = np.array([[.9, .1], [.8, .2], [.45, .55], [.3, .7], [.6, .4]])
  assert windows.segments(times, probs, ["a", "b"]) == (
      windows.Segment(0.0, 5.0, "a", pytest.approx(.85)),   # windows 0-1; split halfway between centres 4 and 6
      windows.Segment(5.0, 9.0, "b", pytest.approx(.625)),  # windows 2-3
      windows.Segment(9.0, 12.0, "a", pytest.approx(.6)))
  # Window 2 (0.55 < 0.6) is background: it joins no segment and splits the b run off.
  assert windows.segments(times, probs, ["a", "b"], min_probability=0.6) == (
      windows.Segment(0.0, 5.0, "a", pytest.approx(.85)),
      windows.Segment(7.0, 9.0, "b", pytest.approx(.7)),
      windows.Segment(9.0, 12.0, "a", pytest.approx(.6)))


def _write_long_video(path: pathlib.Path, seconds: int, fps: int, width: int, height: int) -> None:
  """A bar sweeping over a flat background: compresses to almost nothing, decodes like any H.264."""
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "35"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.gop_size = 10 * fps  # keyframes every 10 s
    frame = np.full((height, width, 3), 60, np.uint8)
    for i in range(seconds * fps):
      frame[:, :] = 60
      x = (i * 7) % (width - 40)
      frame[:, x:x + 40] = 220
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def test_a_long_video_runs_in_bounded_memory(tmp_path):
  """A 10-minute 640x360 video: peak RSS grows by less than its frames would take, well under 2 GB."""
  video, short = tmp_path / "ten_minutes.mp4", tmp_path / "ten_seconds.mp4"
  _write_long_video(video, 600, 1, 640, 360)
  _write_long_video(short, 10, 1, 640, 360)
  config = dataclasses.replace(model_lib.TINY, num_frames=4)
  ckpt = checkpoint.save_pretrained(tmp_path / "tiny", config,
                                    model_lib.init_variables(config, jax.random.key(0))["params"])
  # One process: the peak after a 10-second video (model, decoder, batches all warm) and after 10 minutes.
  script = textwrap.dedent(f"""
      import sys
      from ezclip_jax import predict
      def peak_mb():  # this program's peak RSS (ru_maxrss also counts the pytest process it forked from)
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
      argv = ["--checkpoint", {str(ckpt)!r}, "--labels", "a,b", "--timeline", "--no-cache", "--json",
              "--batch-size", "16"]
      assert predict.main(argv + [{str(short)!r}]) == 0
      before = peak_mb()
      assert predict.main(argv + [{str(video)!r}]) == 0
      print("PEAK", before, peak_mb(), file=sys.stderr)
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  before, after = map(float, result.stderr.split("PEAK")[1].split())
  # All 600 decoded frames would take 600 * 640 * 360 * 3 bytes = 415 MB (decoding the whole
  # video first: +720 MB); streaming stays well under half of that (~125 MB more here).
  assert after - before < 200, (before, after)
  assert after < 2000
  decoder = json.JSONDecoder()
  _, end = decoder.raw_decode(result.stdout)
  (long,), _ = decoder.raw_decode(result.stdout[end:].lstrip())
  assert long["duration"] == 600 and len(long["windows"]) == 299  # 4 frames every 2
