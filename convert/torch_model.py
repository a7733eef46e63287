"""A PyTorch EZ-CLIP forward pass, written from the paper's equations, for parity checks.

It mirrors the official model's module tree so that its `state_dict()` has exactly
the official key set and shapes (the converters' target), but it is our own
code: batch-first tensors, inference only (no dropout). Frames of different
videos never mix (the official T-Adapter reshape does mix them when B > 1).

Only `convert/` imports torch; this module is used by the parity tests and by
the benchmark's PyTorch side.
"""

import collections

import torch
from torch import nn
import torch.nn.functional as F

from ezclip_jax.model import ModelConfig


class LayerNorm(nn.LayerNorm):
  """LayerNorm computed in float32, as CLIP does."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class Adapter(nn.Module):
  """Bottleneck D_fc2(GELU(D_fc1(x))), added to x when `residual`."""

  def __init__(self, width: int, ratio: float, residual: bool = True):
    super().__init__()
    self.residual = residual
    self.D_fc1 = nn.Linear(width, int(width * ratio))
    self.D_fc2 = nn.Linear(int(width * ratio), width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.D_fc2(F.gelu(self.D_fc1(x)))
    return x + h if self.residual else h


class Block(nn.Module):
  """CLIP residual attention block with EZ-CLIP's adapter (and optional T-Adapter)."""

  def __init__(self, width: int, heads: int, ratio: float, causal: bool, t_adapter: bool):
    super().__init__()
    self.causal = causal
    self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
    self.ln_1 = LayerNorm(width)
    if t_adapter:
      self.T_Adapter = Adapter(width, ratio, residual=False)
    self.Adapter = Adapter(width, ratio)
    self.mlp = nn.Sequential(collections.OrderedDict([
        ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width))]))
    self.ln_2 = LayerNorm(width)

  def self_attention(self, x: torch.Tensor) -> torch.Tensor:
    """attn(ln_1(x)) over axis 1 of a batch-first x `[N, L, W]`."""
    mask = None
    if self.causal:
      length = x.shape[1]
      mask = torch.full((length, length), float("-inf"), dtype=x.dtype).triu(1)
    y = self.ln_1(x)
    return self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]

  def forward(self, x: torch.Tensor, frames: int = 1, prompt: torch.Tensor | None = None) -> torch.Tensor:
    """x: `[N, L, W]` with N = B*T frames (video) or N texts; prompt: `[T, W]` or None."""
    n, length, width = x.shape
    if prompt is not None:
      # Paper eq.: per frame, prompt + mean token; these T summaries attend to
      # each other (per video) and join the frame as one extra token.
      summary = prompt + x.view(n // frames, frames, length, width).mean(dim=2)
      x = torch.cat([x, self.self_attention(summary).reshape(n, 1, width)], dim=1)
    elif hasattr(self, "T_Adapter"):
      # Attention across the T frames at each token position, per video.
      per_token = x.view(n // frames, frames, length, width).transpose(1, 2).reshape(-1, frames, width)
      temporal = self.T_Adapter(self.self_attention(per_token))
      x = x + temporal.view(n // frames, length, frames, width).transpose(1, 2).reshape(n, length, width)
    x = x + self.self_attention(x)
    x = self.Adapter(x[:, :length])
    return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):

  def __init__(self, width: int, layers: int, heads: int, ratio: float, causal: bool = False,
               prompt_frames: int = 0, t_adapter: bool = False):
    super().__init__()
    if prompt_frames:
      self.T_prompt_embeddings = nn.Parameter(torch.zeros(layers, prompt_frames, width))
    self.resblocks = nn.Sequential(*[Block(width, heads, ratio, causal, t_adapter) for _ in range(layers)])

  def forward(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
    prompts = getattr(self, "T_prompt_embeddings", None)
    for i, block in enumerate(self.resblocks):
      x = block(x, frames, None if prompts is None else prompts[i])
    return x


class Visual(nn.Module):

  def __init__(self, c: ModelConfig):
    super().__init__()
    width, grid = c.vision_width, c.image_resolution // c.vision_patch_size
    self.frames = c.num_frames
    self.conv1 = nn.Conv2d(3, width, c.vision_patch_size, c.vision_patch_size, bias=False)
    self.class_embedding = nn.Parameter(torch.zeros(width))
    self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
    self.temporal_embedding = nn.Parameter(torch.zeros(1, c.num_frames, width))
    self.ln_pre = LayerNorm(width)
    self.transformer = Transformer(width, c.vision_layers, c.vision_heads, c.adapter_ratio,
                                   prompt_frames=c.num_frames if c.use_prompts else 0,
                                   t_adapter=c.t_adapter and not c.use_prompts)
    self.ln_post = LayerNorm(width)
    self.proj = nn.Parameter(torch.zeros(width, c.embed_dim))

  def forward(self, video: torch.Tensor) -> torch.Tensor:
    """video `[B, T, H, W, 3]` -> frame embeddings `[B, T, D]`."""
    b, t = video.shape[:2]
    x = self.conv1(video.flatten(0, 1).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
    cls = self.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + self.positional_embedding
    x = (x.view(b, t, *x.shape[1:]) + self.temporal_embedding[0, :, None]).flatten(0, 1)
    x = self.transformer(self.ln_pre(x), frames=t)
    return (self.ln_post(x[:, 0]) @ self.proj).view(b, t, -1)


class EZCLIPReference(nn.Module):
  """EZ-CLIP with the official key layout; `encode_video` / `encode_text` like ezclip_jax."""

  def __init__(self, c: ModelConfig):
    super().__init__()
    self.config = c
    self.visual = Visual(c)
    self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads, c.adapter_ratio, causal=True)
    self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
    self.positional_embedding = nn.Parameter(torch.zeros(c.context_length, c.text_width))
    self.ln_final = LayerNorm(c.text_width)
    self.text_projection = nn.Parameter(torch.zeros(c.text_width, c.embed_dim))
    self.logit_scale = nn.Parameter(torch.zeros(()))

  @classmethod
  def from_state_dict(cls, state: dict, config: ModelConfig) -> "EZCLIPReference":
    model = cls(config)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    return model

  def encode_video(self, video: torch.Tensor) -> torch.Tensor:
    return self.visual(video)

  def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
    x = self.token_embedding(ids) + self.positional_embedding
    x = self.ln_final(self.transformer(x))
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
