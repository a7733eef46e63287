"""The demo: EZ-CLIP learns order-only classes; frame averaging stays at chance.

`test_demo_*` use the demo run once per session (`trained_demo` in conftest.py: the
README command, both models, about 2 minutes on 2 CPU cores) and check the results it
printed against numbers recomputed here from the saved clips and the models'
probabilities, not against the demo's own scoring.
"""

import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from configs import common
from ezclip_jax import demo

# Each class and the class whose clips are its clips played backwards (data/synthetic.py).
REVERSE = {"growing": "shrinking", "shrinking": "growing", "moving_left": "moving_right",
           "moving_right": "moving_left"}


def _list(root: pathlib.Path) -> list[tuple[str, int]]:
  """(video id, label) per line of the held-out frames.txt."""
  lines = (root / "frames.txt").read_text().split("\n")
  return [(pathlib.Path(path).name, int(label)) for path, _, label in (l.split() for l in lines if l)]


def _reverse_rows(rows: list[tuple[str, int]]) -> np.ndarray:
  """Row of each clip's reverse, found by name: growing_0003 <-> shrinking_0003."""
  position = {name: i for i, (name, _) in enumerate(rows)}
  reverse = []
  for name, _ in rows:
    cls, k = name.rsplit("_", 1)
    reverse.append(position[f"{REVERSE[cls]}_{k}"])
  return np.array(reverse)


def _printed_table(output: str) -> dict[str, tuple[float, float]]:
  """{model: (top-1, direction)} from the demo's final table."""
  rows = {}
  for name, title in demo.TITLES.items():
    (match,) = re.findall(rf"^{re.escape(title)} +([\d.]+)% +([\d.]+)%$", output, re.M)
    rows[name] = (float(match[0]), float(match[1]))
  return rows


@pytest.fixture(scope="module")
def demo_run(trained_demo):
  root = trained_demo.eval_root
  spec = common.dataset(list_file=str(root / "frames.txt"), labels_csv=str(root / "labels.csv"),
                        descriptions=str(root / "descriptions.csv"))
  probs = {name: demo.held_out_probabilities(trained_demo.config, trained_demo.workdir / name, spec)
           for name, _ in demo.MODELS}
  return trained_demo.config, root, _printed_table(trained_demo.output), probs


def test_demo_console_shows_results_not_library_logs(trained_demo):
  lines = trained_demo.output.rstrip("\n").split("\n")
  assert len(lines) <= 40, trained_demo.output
  # absl's own lines start with a level letter and the date (I1202 14:00:00.123 ...).
  assert not [l for l in lines if re.match(r"[IWEF]\d{4} ", l) or "orbax" in l.lower()], trained_demo.output
  headings = [l for l in lines if l.startswith("== ")]
  assert headings == [f"== {demo.TITLES[name]}: training in {trained_demo.workdir / name}" for name, _ in demo.MODELS]
  for name, _ in demo.MODELS:
    part = trained_demo.output.split(f"== {demo.TITLES[name]}")[1].split("\n== ")[0]
    assert re.search(r"^starting fresh: 320 steps; compiling the train step\.\.\. [\d.]+ s \(with step 1\)$", part,
                     re.M), part
    assert re.search(r"^step 320/320 \(100\.0%\) \| loss [\d.]+ \| lr ", part, re.M), part
    # An evaluation every 5 epochs of 16 steps, one line each.
    assert re.findall(r"^eval step (\d+) \| synthetic: top-1", part, re.M) == ["80", "160", "240", "320"]
    assert f"done: step 320 in " in part and str(trained_demo.workdir / name / "checkpoints" / "320") in part
  assert "Held-out synthetic clips: 64" in trained_demo.output
  assert "python -m ezclip_jax.predict --checkpoint" in lines[-2] + lines[-1]


def test_held_out_clips_are_reverses_of_each_other(demo_run):
  config, root, _, _ = demo_run
  rows = _list(root)
  assert len(rows) == len(config.demo.classes) * config.demo.eval_videos_per_class
  for i, j in list(enumerate(_reverse_rows(rows)))[:3]:
    frames = [sorted((root / "frames" / rows[r][0]).glob("*.jpg")) for r in (i, j)]
    assert len(frames[0]) == len(frames[1]) == config.demo.source_frames
    for a, b in zip(frames[0], reversed(frames[1])):
      np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_demo_ezclip_learns_temporal_order(demo_run):
  _, root, printed, probs = demo_run
  p, labels = probs["ezclip"]
  np.testing.assert_array_equal(labels, [label for _, label in _list(root)])
  top1 = 100.0 * np.mean(p.argmax(axis=1) == labels)
  assert top1 >= 90.0
  assert printed["ezclip"][0] == pytest.approx(top1, abs=0.05)


def test_demo_frame_averaging_cannot_tell_a_clip_from_its_reverse(demo_run):
  _, root, printed, probs = demo_run
  p, labels = probs["frame_average"]
  reverse = _reverse_rows(_list(root))
  # Same frames, order ignored: the same class probabilities for a clip and its reverse...
  np.testing.assert_allclose(p, p[reverse], atol=1e-5)
  # ...so the clip and its reverse get one prediction, right for exactly one of the two.
  correct = p.argmax(axis=1) == labels
  assert not np.any(correct & correct[reverse])
  assert 100.0 * np.mean(correct) == pytest.approx(50.0)
  assert printed["frame_average"] == (50.0, 50.0)


def test_score_by_hand():
  # Two pairs of classes (0<->1, 2<->3), one clip per class; clip k of class c is the
  # reverse of clip k of class partners[c].
  probs = np.array([[.5, .2, .2, .1],    # class 0: right; beats its partner 1
                    [.3, .4, .2, .1],    # class 1: right
                    [.1, .1, .3, .5],    # class 2: wrong (3); 0.3 < 0.5: wrong direction
                    [.4, .0, .1, .5]],   # class 3: right
                   np.float32)
  scores = demo.score(probs, np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]))
  assert scores.top1 == 75.0
  assert scores.direction == 75.0
  assert scores.reverse_gap == pytest.approx(0.3)  # rows 2 and 3, column 0: |0.1 - 0.4|
  assert scores.num_clips == 4


def test_classes_need_their_reverse():
  with pytest.raises(ValueError, match="'growing' without its reverse 'shrinking'"):
    demo.partner_classes(("growing", "moving_left", "moving_right"))
  np.testing.assert_array_equal(demo.partner_classes(("shrinking", "moving_left", "growing", "moving_right")),
                                [2, 3, 0, 1])


def test_eval_frames_must_be_symmetric_under_reversal():
  demo.check_symmetric_sampling(24, 8)  # centres 1, 4, ..., 22: reversed 22, 19, ..., 1
  demo.check_symmetric_sampling(8, 8)
  with pytest.raises(ValueError, match="source_frames=16"):
    demo.check_symmetric_sampling(16, 8)  # 0, 2, ..., 14: reversed 15, 13, ..., 1
