"""Zero-shot recipe: train on Kinetics-400, evaluate zero-shot on UCF101, HMDB51 and Kinetics-600.

  python -m ezclip_jax.main --config configs/k400_zero_shot.py --workdir /ckpt/ezclip-k400 \\
      --config.model.pretrained=/ckpt/vit-b16 --config.data.official_repo=/src/EZ-CLIP \\
      --config.data.train.root=/data/k400_frames --config.data.evals.k400_val.root=/data/k400_frames \\
      --config.data.evals.ucf101_split1.root=/data/ucf101_frames \\
      --config.data.evals.hmdb51_split1.root=/data/hmdb51_frames --config.data.evals.k600.root=/data/k600_frames

Hyper-parameters of the official K-400/k400_train.yaml: ViT-B/16 CLIP, 8 frames, batch 80,
150 epochs, AdamW lr 1e-4 (5 warmup epochs, then cosine), stochastic depth 0.1, prompt
dropout 0.1, motion loss, LLM class descriptions. Lists and labels are the official
repository's (`config.data.official_repo`); the frame folders (`root`) are yours.

Every epoch evaluates all `data.evals`. `WORKDIR/best` is chosen on the Kinetics-400
validation set (`k400_val`, role val). The official code keeps a best model per test set
(UCF101, HMDB51, ...); here those are role test, only reported. The zero-shot sets are those
of configs/zero_shot_eval.py: UCF101 and HMDB51 split 1 from the official lists, splits 2
and 3 as placeholders you enable (see that file), Kinetics-600's 232 exclusive classes and
its three subsets as placeholders. A set you do not have is switched off by emptying its
list, e.g. `--config.data.evals.k600.list_file=`.
"""

import ml_collections

from configs import common
from configs import zero_shot_eval

_TRANSFER = ("ucf101", "hmdb51", "k600")


def get_config() -> ml_collections.ConfigDict:
  config = common.get_config()
  config.data.train = zero_shot_eval.official_dataset(
      "k400", name="Kinetics-400 train", role="train", list_file="dataset_splits/K-400/Zero_shot/train.txt")
  config.data.evals.k400_val = zero_shot_eval.official_dataset("k400", role="val")
  for name in _TRANSFER:
    config.data.evals.update(zero_shot_eval.eval_datasets(name))
  config.train.epochs = 150  # the other hyper-parameters are common.py's
  return config
