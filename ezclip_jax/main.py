"""Train or evaluate EZ-CLIP.

  python -m ezclip_jax.main --config configs/demo.py --workdir /tmp/ezclip-demo
  python -m ezclip_jax.main --config configs/k400_zero_shot.py --workdir gs://... \\
      --config.model.pretrained=/ckpt/vit-b16 --config.data.official_repo=/src/EZ-CLIP

`--config.key=value` overrides any config field (configs are locked, so a typo
fails at start-up). A workdir with checkpoints is resumed automatically.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from ezclip_jax import demo
from ezclip_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and plots go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train: train with periodic evaluation; eval: evaluate config.model.pretrained.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  if config.distributed:
    jax.distributed.initialize()
  logging.info("process %d/%d, devices %s", jax.process_index(), jax.process_count(), jax.devices())
  if "demo" in config:
    demo.run(config, _WORKDIR.value)
  elif _MODE.value == "train":
    train.train_and_evaluate(config, _WORKDIR.value)
  else:
    train.evaluate_pretrained(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
