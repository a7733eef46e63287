"""EZ-CLIP in Flax: OpenAI-layout CLIP with temporal prompts and adapters.

Module and parameter names follow the PyTorch keys they are converted from
(`visual.transformer.resblocks.3.attn.in_proj_weight` lives at
`visual/transformer/resblocks_3/attn/in_proj/kernel`, one packed q/k/v projection
of shape `(width, 3, heads, head_dim)`), so `convert/` reads as a table.

EZ-CLIP (arXiv 2312.08010) changes a frozen CLIP in three places:
  * a temporal embedding `[1, T, width]` added to every token of frame t;
  * per vision layer, one learned prompt per frame: prompt + that frame's mean
    token, attended across the T frames by the block's own `ln_1`/`attn`,
    appended as an extra token for the spatial attention, dropped right after;
  * a residual bottleneck `Adapter` after the attention of every block of both
    towers, its up-projection zero-initialised so training starts at CLIP.
"""

import dataclasses
import json
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# The official code sizes the prompt init by a 16x16 patch whatever the model.
_PROMPT_INIT_PATCH = 16


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and regularisation of an EZ-CLIP model.

  The architecture fields are inferable from a state dict (see
  `convert.torch_to_flax.infer_model_config`) and are stored with the params.
  """
  embed_dim: int = 512
  image_resolution: int = 224
  vision_layers: int = 12
  vision_width: int = 768
  vision_patch_size: int = 16
  vision_heads: int = 12
  context_length: int = 77
  vocab_size: int = 49408
  text_width: int = 512
  text_heads: int = 8
  text_layers: int = 12
  num_frames: int = 8
  use_prompts: bool = True
  t_adapter: bool = False
  adapter_ratio: float = 0.25
  # Official `network.drop_out`: stochastic depth rates linspace(0, rate,
  # vision_layers), shared by the text tower and also used as attention dropout.
  drop_path_rate: float = 0.0
  prompt_dropout: float = 0.0
  emb_dropout: float = 0.0
  dtype: str = "float32"
  remat: bool = False

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "ModelConfig":
    fields = json.loads(text)
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"Unknown model config keys {sorted(unknown)}; expected a subset of "
                       f"{sorted(f.name for f in dataclasses.fields(cls))}.")
    return cls(**fields)


VIT_B_32 = ModelConfig(vision_patch_size=32)
VIT_B_16 = ModelConfig()
VIT_L_14 = ModelConfig(embed_dim=768, vision_layers=24, vision_width=1024, vision_patch_size=14,
                       vision_heads=16, text_width=768, text_heads=12)
# For demos and tests on a CPU; no pretrained weights exist for it.
TINY = ModelConfig(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_heads=2,
                   text_width=128, text_heads=2, text_layers=2)
ARCHITECTURES = {"ViT-B/32": VIT_B_32, "ViT-B/16": VIT_B_16, "ViT-L/14": VIT_L_14, "tiny": TINY}


def resolve_dtype(name: str, platform: str) -> str:
  """The compute dtype a config names: "auto" is bfloat16 on TPUs and GPUs (the matrix units'
  fast format) and float32 on CPUs (which have no fast bfloat16 matmuls); any other name is
  returned unchanged. Parameters, LayerNorms and softmaxes stay float32 whatever it is.

  Args:
    name: "auto", "float32" or "bfloat16".
    platform: the devices' platform (`jax.Device.platform`: "cpu", "gpu", "cuda", "rocm", "tpu").
  """
  if name != "auto":
    return name
  return "float32" if platform == "cpu" else "bfloat16"


def drop_path_rates(config: ModelConfig) -> np.ndarray:
  """Per-layer stochastic depth rates: the official linspace(0, rate, vision_layers)."""
  return np.linspace(0.0, config.drop_path_rate, config.vision_layers)


def _normal(std: float):
  return nn.initializers.normal(stddev=std)


def _torch_linear_bias_init(fan_in: int):
  """PyTorch nn.Linear's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _param(module: nn.Module, name: str, init, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class LayerNorm(nn.Module):
  """LayerNorm (eps 1e-5) computed in float32 whatever the compute dtype, as CLIP does."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    scale = _param(self, "scale", nn.initializers.ones, (width,), ("embed",))
    bias = _param(self, "bias", nn.initializers.zeros, (width,), ("embed",))
    y = x.astype(jnp.float32)
    mean = y.mean(axis=-1, keepdims=True)
    var = jnp.square(y - mean).mean(axis=-1, keepdims=True)
    y = (y - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
    return y.astype(x.dtype)


def quick_gelu(x: Array) -> Array:
  return x * jax.nn.sigmoid(1.702 * x)


def _dense(features, name, dtype, kernel_axes, bias_axes, kernel_init, bias_init=nn.initializers.zeros,
           axis=-1):
  return nn.DenseGeneral(
      features, axis=axis, dtype=dtype, param_dtype=jnp.float32, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, kernel_axes),
      bias_init=nn.with_logical_partitioning(bias_init, bias_axes))


class MultiheadAttention(nn.Module):
  """PyTorch-style multi-head attention (packed q/k/v input projection).

  Attributes:
    num_heads: attention heads; head_dim = width // num_heads.
    dropout_rate: dropout on the attention probabilities while training.
    causal: mask future positions (text tower).
  """
  num_heads: int
  dtype: Any
  dropout_rate: float = 0.0
  causal: bool = False

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """Self-attention over axis -2 of x `[..., L, W]`.

    With the `intermediates` collection mutable (`apply(..., mutable=["intermediates"])`),
    each call also sows its attention probabilities `[N, heads, L, L]` (N: x's leading axes
    flattened) as `attention_weights`.
    """
    width = x.shape[-1]
    head_dim = width // self.num_heads
    std = width**-0.5
    # One packed projection, like torch's in_proj: a single large matmul is
    # faster than three on every backend.
    qkv = _dense((3, self.num_heads, head_dim), "in_proj", self.dtype, ("embed", None, "heads", "kv"),
                 (None, "heads", "kv"), _normal(std))(x)
    batch_shape = x.shape[:-2]
    qkv = qkv.reshape((-1,) + qkv.shape[-4:])
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.is_mutable_collection("intermediates") and not self.is_initializing():
      # Asked for by `ezclip_jax.visualize` only: the fused kernel below does not return its weights.
      self.sow("intermediates", "attention_weights", self._attention_weights(q, k))
    if deterministic or self.dropout_rate == 0.0:
      out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    else:
      out = self._attention_with_dropout(q, k, v)
    out = out.reshape(batch_shape + out.shape[-3:])
    return _dense(width, "out_proj", self.dtype, ("heads", "kv", "embed"), ("embed",),
                  _normal(std), axis=(-2, -1))(out)

  def _attention_weights(self, q: Array, k: Array) -> Array:
    """softmax(q k^T / sqrt(head_dim)) of q, k `[N, L, heads, head_dim]` -> float32 `[N, heads, L, L]`."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q.shape[-1])
    if self.causal:
      length = q.shape[1]
      logits = jnp.where(jnp.tril(jnp.ones((length, length), bool)), logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)

  def _attention_with_dropout(self, q: Array, k: Array, v: Array) -> Array:
    # torch's nn.MultiheadAttention drops attention probabilities; the fused
    # kernel has no dropout, so training with a rate uses the explicit form. The
    # probabilities are dropped in the compute dtype: in float32 the dropout's mask and
    # select cost a quarter of a bfloat16 ViT-B/16 train step's memory traffic on TPUs.
    probs = self._attention_weights(q, k).astype(v.dtype)
    probs = nn.Dropout(self.dropout_rate)(probs, deterministic=False)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class Adapter(nn.Module):
  """Bottleneck adapter D_fc2(GELU(D_fc1(x))), residual unless `skip_connect` is off."""
  dtype: Any
  ratio: float = 0.25
  skip_connect: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    hidden = int(width * self.ratio)
    # D_fc1 keeps torch's default Linear init; D_fc2 starts at zero (official).
    fc1_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    h = _dense(hidden, "D_fc1", self.dtype, ("embed", "adapter"), ("adapter",), fc1_init,
               _torch_linear_bias_init(width))(x)
    h = nn.gelu(h, approximate=False)
    h = _dense(width, "D_fc2", self.dtype, ("adapter", "embed"), ("embed",),
               nn.initializers.zeros)(h)
    return x + h if self.skip_connect else h


class MLP(nn.Module):
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    h = _dense(4 * width, "c_fc", self.dtype, ("embed", "mlp"), ("mlp",), _normal((2 * width)**-0.5))(x)
    return _dense(width, "c_proj", self.dtype, ("mlp", "embed"), ("embed",), _normal(width**-0.5))(
        quick_gelu(h))


class DropPath(nn.Module):
  """Stochastic depth over whole samples (axis 0).

  The official code applies its DropPath to sequence-first tensors, so it drops
  token positions rather than samples; we drop samples as stochastic depth means.
  """
  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class ResidualAttentionBlock(nn.Module):
  """A CLIP block with an adapter after attention and, for video, a temporal prompt.

  Attributes:
    num_heads: attention heads.
    num_frames: T; x's batch axis is frames, grouped by video as [B*T].
    drop_rate: stochastic depth (and attention dropout) rate of this block.
    causal: text tower.
    t_adapter: the T-Adapter variant (temporal attention + non-residual adapter).
  """
  num_heads: int
  dtype: Any
  num_frames: int = 1
  drop_rate: float = 0.0
  adapter_ratio: float = 0.25
  causal: bool = False
  t_adapter: bool = False

  def setup(self):
    self.ln_1 = LayerNorm()
    self.attn = MultiheadAttention(self.num_heads, self.dtype, self.drop_rate, self.causal)
    self.Adapter = Adapter(self.dtype, self.adapter_ratio)
    self.mlp = MLP(self.dtype)
    self.ln_2 = LayerNorm()
    self.drop_path = DropPath(self.drop_rate)
    if self.t_adapter:
      self.T_Adapter = Adapter(self.dtype, self.adapter_ratio, skip_connect=False)

  def _attend(self, x: Array, deterministic: bool) -> Array:
    return self.drop_path(self.attn(self.ln_1(x), deterministic=deterministic), deterministic)

  def __call__(self, x: Array, prompt: Array | None = None, deterministic: bool = True) -> Array:
    """Applies the block.

    Args:
      x: tokens `[N, L, W]` (N = B*T frames for video, N texts for text).
      prompt: this layer's temporal prompts `[T, W]`, or None.
      deterministic: no dropout / stochastic depth.

    Returns:
      `[N, L, W]`.
    """
    num_tokens = x.shape[1]
    if prompt is not None:
      x = jnp.concatenate([x, self._temporal_prompt_token(x, prompt, deterministic)], axis=1)
    elif self.t_adapter:
      x = x + self.drop_path(self._temporal_adapter(x, deterministic), deterministic)
    x = x + self._attend(x, deterministic)
    x = self.Adapter(x[:, :num_tokens])
    return x + self.drop_path(self.mlp(self.ln_2(x)), deterministic)

  def _temporal_prompt_token(self, x: Array, prompt: Array, deterministic: bool) -> Array:
    """prompt + frame mean, attended across frames: one extra token per frame `[B*T, 1, W]`."""
    frames = x.reshape(-1, self.num_frames, *x.shape[1:])
    summary = prompt.astype(x.dtype) + frames.mean(axis=2)
    return self._attend(summary, deterministic).reshape(-1, 1, x.shape[-1])

  def _temporal_adapter(self, x: Array, deterministic: bool) -> Array:
    """Attention across frames per token position, through a non-residual adapter."""
    frames = x.reshape(-1, self.num_frames, *x.shape[1:]).swapaxes(1, 2)
    out = self.T_Adapter(self.attn(self.ln_1(frames), deterministic=deterministic))
    return out.swapaxes(1, 2).reshape(x.shape)


class Transformer(nn.Module):
  """A stack of blocks; the vision one owns the deep temporal prompts.

  Attributes:
    prompt_frames: T when this tower carries temporal prompts, else 0.
  """
  layers: int
  heads: int
  dtype: Any
  drop_rates: tuple[float, ...]
  num_frames: int = 1
  use_prompts: bool = False
  prompt_dropout: float = 0.0
  adapter_ratio: float = 0.25
  causal: bool = False
  t_adapter: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    prompts = None
    if self.use_prompts:
      width = x.shape[-1]
      bound = math.sqrt(6.0 / (3 * _PROMPT_INIT_PATCH**2 + width))
      prompts = _param(self, "T_prompt_embeddings",
                       lambda k, s, d: jax.random.uniform(k, s, d, -bound, bound),
                       (self.layers, self.num_frames, width), ("layers", "frames", "embed"))
      prompts = nn.Dropout(self.prompt_dropout)(prompts, deterministic=deterministic)
    block_cls = ResidualAttentionBlock
    if self.remat:
      block_cls = nn.remat(block_cls, static_argnums=(3,))
    for i in range(self.layers):
      block = block_cls(self.heads, self.dtype, self.num_frames, float(self.drop_rates[i]),
                        self.adapter_ratio, self.causal, self.t_adapter, name=f"resblocks_{i}")
      x = block(x, None if prompts is None else prompts[i], deterministic)
    return x


class VisionTransformer(nn.Module):
  """The CLIP ViT applied to every frame, with EZ-CLIP's temporal additions."""
  config: ModelConfig

  @nn.compact
  def __call__(self, frames: Array, *, deterministic: bool = True) -> Array:
    """Encodes frames.

    Args:
      frames: `[B*T, H, W, 3]` CLIP-normalised, grouped by video.
      deterministic: no dropout.

    Returns:
      Frame embeddings `[B*T, embed_dim]`.
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    width, patch = cfg.vision_width, cfg.vision_patch_size
    scale = width**-0.5
    x = nn.Conv(width, (patch, patch), strides=(patch, patch), padding="VALID", use_bias=False,
                dtype=dtype, param_dtype=jnp.float32, name="conv1",
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (None, None, "channels", "embed")))(frames.astype(dtype))
    x = x.reshape(x.shape[0], -1, width)
    cls = _param(self, "class_embedding", _normal(scale), (width,), ("embed",))
    grid = cfg.image_resolution // patch
    pos = _param(self, "positional_embedding", _normal(scale), (grid * grid + 1, width), (None, "embed"))
    temporal = _param(self, "temporal_embedding", nn.initializers.zeros, (1, cfg.num_frames, width),
                      (None, "frames", "embed"))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (x.shape[0], 1, width)), x], axis=1)
    x = x + pos.astype(dtype)
    x = x.reshape(-1, cfg.num_frames, *x.shape[1:]) + temporal[0, :, None].astype(dtype)
    x = x.reshape(-1, *x.shape[2:])
    x = nn.Dropout(cfg.emb_dropout)(x, deterministic=deterministic)
    x = LayerNorm(name="ln_pre")(x)
    x = Transformer(cfg.vision_layers, cfg.vision_heads, dtype, tuple(drop_path_rates(cfg)),
                    cfg.num_frames, cfg.use_prompts, cfg.prompt_dropout, cfg.adapter_ratio,
                    t_adapter=cfg.t_adapter and not cfg.use_prompts, remat=cfg.remat,
                    name="transformer")(x, deterministic=deterministic)
    x = LayerNorm(name="ln_post")(x[:, 0])
    proj = _param(self, "proj", _normal(scale), (width, cfg.embed_dim), ("embed", "joint"))
    return x @ proj.astype(dtype)


class EZCLIP(nn.Module):
  """EZ-CLIP: video tower with temporal prompts + CLIP text tower, both with adapters."""
  config: ModelConfig

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    width = cfg.text_width
    self.visual = VisionTransformer(cfg)
    self.transformer = Transformer(
        cfg.text_layers, cfg.text_heads, dtype, tuple(drop_path_rates(cfg)[:cfg.text_layers]),
        adapter_ratio=cfg.adapter_ratio, causal=True, remat=cfg.remat)
    self.token_embedding = nn.Embed(
        cfg.vocab_size, width, dtype=dtype, param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(_normal(0.02), ("vocab", "embed")))
    self.positional_embedding = _param(self, "positional_embedding", _normal(0.01),
                                       (cfg.context_length, width), (None, "embed"))
    self.ln_final = LayerNorm()
    self.text_projection = _param(self, "text_projection", _normal(width**-0.5),
                                  (width, cfg.embed_dim), ("embed", "joint"))
    self.logit_scale = _param(self, "logit_scale", nn.initializers.constant(math.log(1 / 0.07)), (), ())
    self.emb_dropout = nn.Dropout(cfg.emb_dropout)

  def encode_video(self, video: Array, train: bool = False) -> Array:
    """Per-frame embeddings of videos.

    Args:
      video: `[B, T, H, W, 3]` float, CLIP-normalised; T must equal config.num_frames.
      train: enable dropout / stochastic depth (needs a 'dropout' rng).

    Returns:
      `[B, T, embed_dim]` unnormalised frame embeddings (pooling is the caller's).
    """
    batch, frames = video.shape[:2]
    if frames != self.config.num_frames:
      raise ValueError(f"encode_video got {frames} frames per video; this model was built for "
                       f"num_frames={self.config.num_frames}.")
    x = self.visual(video.reshape(batch * frames, *video.shape[2:]), deterministic=not train)
    return x.reshape(batch, frames, -1).astype(jnp.float32)

  def encode_text(self, ids: Array, train: bool = False) -> Array:
    """Text embeddings taken at each sequence's end token (the largest id).

    Args:
      ids: `[N, context_length]` int token ids from `ezclip_jax.tokenizer.tokenize`.
      train: enable dropout / stochastic depth (needs a 'dropout' rng).

    Returns:
      `[N, embed_dim]` unnormalised text embeddings.
    """
    dtype = jnp.dtype(self.config.dtype)
    x = self.token_embedding(ids) + self.positional_embedding.astype(dtype)
    x = self.emb_dropout(x, deterministic=not train)
    x = self.transformer(x, deterministic=not train)
    x = self.ln_final(x)
    x = x[jnp.arange(x.shape[0]), jnp.argmax(ids, axis=-1)]
    return (x @ self.text_projection.astype(dtype)).astype(jnp.float32)

  def __call__(self, video: Array, ids: Array, train: bool = False) -> tuple[Array, Array]:
    """Returns (frame embeddings `[B, T, D]`, text embeddings `[N, D]`)."""
    return self.encode_video(video, train), self.encode_text(ids, train)


def init_boxed(model: EZCLIP, rng: Array) -> dict:
  """Variables with their logical-axis metadata (`nn.LogicallyPartitioned` leaves)."""
  cfg = model.config
  video = jnp.zeros((1, cfg.num_frames, cfg.image_resolution, cfg.image_resolution, 3))
  ids = jnp.zeros((1, cfg.context_length), jnp.int32)
  return model.init(rng, video, ids)


def init_variables(config: ModelConfig, rng: Array) -> dict:
  """Random-init (unboxed) variables."""
  return nn.meta.unbox(jax.jit(lambda r: init_boxed(EZCLIP(config), r))(rng))
