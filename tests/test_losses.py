"""EZ-CLIP losses against hand-derived values and the official formulas evaluated in PyTorch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ezclip_jax import losses


def test_motion_loss_hand_derived():
  # One video, T=3, D=1, values 0, 1, 3. Official padding repeats the end frames:
  # previous = 0,0,1; following = 1,3,3; |following - previous| / 2 = .5, 1.5, 1 -> C = 1.
  # Unbiased variance over time of 0,1,3: (16/9 + 1/9 + 25/9) / 2 = 7/3 -> V = 7/3.
  # loss = 1 / (1 + C + V) = 3/13.
  x = np.array([[[0.0], [1.0], [3.0]]], np.float32)
  assert float(losses.motion_loss(x)) == pytest.approx(3 / 13, rel=1e-6)


def test_kl_loss_hand_derived():
  # Two samples of different classes, logits [[2, 0], [0, 2]]. Each row's target is
  # softmax(10 * [1, 0]) = [p, q] with p = e^10 / (e^10 + 1); prediction softmax([2, 0]) = [a, b].
  # Row KL = p log(p/a) + q log(q/b), the same for both rows; the loss sums over a row
  # and averages over rows (official: mean over B*B entries, times B).
  p, q = math.exp(10) / (math.exp(10) + 1), 1 / (math.exp(10) + 1)
  a, b = math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)
  want = p * math.log(p / a) + q * math.log(q / b)
  got = losses.video_text_kl_loss(np.array([[2.0, 0.0], [0.0, 2.0]]), np.eye(2))
  assert float(got) == pytest.approx(want, rel=1e-6)


def _official_kl(logits, same_class):
  """The official KLLoss: KLDivLoss(mean)(log_softmax(logits), softmax(10 * labels)) * B.

  torch's reduction="mean" divides the sum by all B x B elements (and warns that it will change
  meaning), so the sum over numel() is written out.
  """
  logits, same_class = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(same_class, dtype=torch.float64)
  total = F.kl_div(F.log_softmax(logits, 1), F.softmax(same_class * 10, 1), reduction="sum")
  return float(total / logits.numel() * logits.shape[0])


def _official_motion(x):
  x = torch.as_tensor(x, dtype=torch.float64)
  left = torch.cat([x[:, :1], x[:, :-1]], dim=1)
  right = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
  central = torch.mean(torch.abs(right - left) / 2.0)
  variance = torch.mean(torch.var(x, dim=1))
  return float(1 / (central + variance + 1))


@pytest.mark.parametrize("seed", range(3))
def test_losses_match_the_official_formulas(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, 6)
  same_class = (labels[:, None] == labels[None, :]).astype(np.float32)
  logits = (20 * rng.standard_normal((6, 6))).astype(np.float32)
  assert float(losses.video_text_kl_loss(logits, same_class)) == pytest.approx(
      _official_kl(logits, same_class), rel=1e-5)
  frames = rng.standard_normal((4, 8, 16)).astype(np.float32)
  assert float(losses.motion_loss(frames)) == pytest.approx(_official_motion(frames), rel=1e-5)
