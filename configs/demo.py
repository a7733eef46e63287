"""Demo: a tiny random-init EZ-CLIP learns temporal order on synthetic clips (CPU, minutes).

  python -m ezclip_jax.main --config configs/demo.py --workdir /tmp/ezclip-demo
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.get_config()
  config.seed = 0
  config.model.arch = "tiny"
  config.model.num_frames = 8
  config.model.drop_path_rate = 0.0
  config.model.prompt_dropout = 0.0
  config.data.batch_size = 16
  config.data.eval_batch_size = 16
  config.data.num_workers = 0
  config.optim.lr = 3e-3
  config.optim.warmup_epochs = 1
  config.train.epochs = 20
  config.train.log_every_steps = 10
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_steps = 100

  config.demo = ml_collections.ConfigDict()
  config.demo.classes = ("moving_left", "moving_right", "rotating_clockwise", "rotating_anticlockwise")
  config.demo.train_videos_per_class = 32
  config.demo.eval_videos_per_class = 8
  config.demo.source_frames = 16
  config.demo.frame_size = 64
  return config
