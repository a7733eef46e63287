"""EZ-CLIP losses: video<->text KL against soft same-class targets, and the motion loss."""

import jax
import jax.numpy as jnp

Array = jax.Array

# The official targets are softmax(10 * same_class) over each row.
TARGET_SHARPNESS = 10.0


def video_text_kl_loss(logits: Array, same_class: Array) -> Array:
  """KL(targets || softmax(logits)) summed over a row, averaged over rows.

  Equals the official `KLDivLoss(reduction='mean')(log_softmax(logits), targets) * B`
  (a mean over B*B entries times B). Call it once per direction; the training loss
  is the mean of both.

  Args:
    logits: `[B, B]` scaled cosine similarities (rows: queries).
    same_class: `[B, B]` 1 where row and column samples share a class, else 0.

  Returns:
    Scalar loss.
  """
  logits = logits.astype(jnp.float32)
  targets = jax.nn.softmax(TARGET_SHARPNESS * same_class.astype(jnp.float32), axis=-1)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  pointwise = targets * (jnp.log(targets) - log_probs)
  return pointwise.sum() / logits.shape[0]


def motion_loss(frame_embeddings: Array) -> Array:
  """1 / (1 + C + V): rewards frame embeddings that change over time.

  C is the mean absolute central difference over time (one-sided at the ends, with
  the end frame repeated, as the official code pads), V the mean over batch and
  features of the unbiased variance over time.

  Args:
    frame_embeddings: `[B, T, D]` unnormalised per-frame embeddings.

  Returns:
    Scalar loss.
  """
  x = frame_embeddings.astype(jnp.float32)
  previous = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
  following = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
  central = jnp.abs(following - previous).mean() / 2.0
  variance = jnp.var(x, axis=1, ddof=1).mean()
  return 1.0 / (1.0 + central + variance)
