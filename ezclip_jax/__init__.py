"""ezclip-jax: EZ-CLIP / T2L efficient zero-shot video action recognition in JAX/Flax."""

from ezclip_jax.checkpoint import load_pretrained

__all__ = ["load_pretrained"]
