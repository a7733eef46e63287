"""ezclip-jax: EZ-CLIP / T2L efficient zero-shot video action recognition in JAX/Flax."""

__all__ = ["load_pretrained"]


def __getattr__(name: str):
  # Lazy, so that light modules (the tokenizer, input pipeline workers) do not
  # pay for importing jax and orbax.
  if name == "load_pretrained":
    from ezclip_jax.checkpoint import load_pretrained  # pylint: disable=g-import-not-at-top
    return load_pretrained
  raise AttributeError(f"module 'ezclip_jax' has no attribute {name!r}")
