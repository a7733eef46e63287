"""Defaults shared by every experiment; each config file imports and overrides them.

Values follow the official EZ-CLIP recipe (configs/*.yaml of the paper's code).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 1024

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1e-4
  config.optim.visual_lr_ratio = 1.0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.2
  config.optim.warmup_epochs = 5
  config.optim.clip_norm = 0.0  # The official code defines clip_gradient but never applies it.
  config.optim.grad_accum_steps = 1
  return config
