"""Your own videos: fine-tune EZ-CLIP on class folders, keep the best checkpoint on a held-out set.

  python -m ezclip_jax.main --config configs/video_folder.py --workdir /runs/mine \\
      --config.model.pretrained=/ckpt/vit-b16 --config.labels_csv=/data/mine/labels.csv \\
      --config.data.train.root=/data/mine/train --config.data.evals.val.root=/data/mine/val

Not an official experiment: the official recipe (configs/common.py) on videos laid out as
`ROOT/<class>/<video file>` (`input_pipeline.VideoFolderSource`), with `train` and `val`
holding different videos of the same classes. `labels_csv` (`id,name`, one line per
class; a folder `playing_guitar` is the class `playing guitar`) and, optionally,
`descriptions` (an LLM description CSV, `SNo,Class Name,description`; empty: the 16
templates) serve both datasets. `val` has role "val": WORKDIR/best is the checkpoint
with the best held-out top-1. Set `--config.data.batch_size` to what fits your devices
and `--config.train.epochs` to your data's size (default: 30 epochs, batch 16).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.get_config()
  labels_csv = ml_collections.FieldReference("")
  descriptions = ml_collections.FieldReference("")
  config.labels_csv = labels_csv
  config.descriptions = descriptions
  config.data.train = common.dataset(name="train", kind="video_folder", labels_csv=labels_csv,
                                     descriptions=descriptions, role="train")
  config.data.evals.val = common.dataset(name="val", kind="video_folder", labels_csv=labels_csv,
                                         descriptions=descriptions, role="val")
  config.data.batch_size = 16
  config.train.epochs = 30
  config.optim.warmup_epochs = 2
  return config
