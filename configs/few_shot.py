"""Few-shot: train on K videos per class of HMDB51 or UCF101, test on the full split 1 test set.

  python -m ezclip_jax.main --config configs/few_shot.py:hmdb51,k=8 --workdir /ckpt/fs-hmdb51-k8 \\
      --config.model.pretrained=/ckpt/vit-b16 --config.data.official_repo=/src/EZ-CLIP \\
      --config.data.train.root=/data/hmdb51_frames --config.data.evals.hmdb51_split1.root=/data/hmdb51_frames

The argument is `hmdb51` or `ucf101`, then `,k=2`, `4`, `8` or `16` shots per class: the
official lists `dataset_splits/{HMDB,UCF}/Few_shot/my_*_few_shot_K.txt`, drawn from the split 1
training videos. The test set is the official split 1 test list (splits 2 and 3 would hold
training videos).

Hyper-parameters of the official configs/few_shot/*.yaml (batch, epochs, lr, stochastic
depth): hmdb51 10, 180, 1e-4, 0.1 (hmdb_base_fs.yaml); ucf101 4, 100, 1e-4, 0.0
(ucf_fs.yaml). Both: 8 frames, 5 warmup epochs then cosine, prompt dropout 0.1, motion loss,
LLM descriptions. Not carried over: hmdb_base_fs.yaml turns the temporal prompts off and
ucf_fs.yaml names ViT-L/14; here the architecture, prompts included, is the one in
`model.pretrained` (the released models are EZ-CLIP ViT-B/16). The official repo has no
few-shot validation split (the yaml validates on its training list and keeps the best model
on the test set), so no best checkpoint is kept: the result is the final epoch's.
"""

import ml_collections

from configs import common
from configs import zero_shot_eval

# dataset -> (training list, with the shot count for {}) and yaml hyper-parameters
_EXPERIMENTS = {
    "hmdb51": dict(train="dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_{}.txt", batch_size=10, epochs=180,
                   lr=1e-4, drop_path_rate=0.1),
    "ucf101": dict(train="dataset_splits/UCF/Few_shot/my_ucf_few_shot_{}.txt", batch_size=4, epochs=100,
                   lr=1e-4, drop_path_rate=0.0),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """`arg`: `DATASET,k=K` (see the module docstring)."""
  name, shots = common.parse_arg(arg, "configs/few_shot.py", tuple(_EXPERIMENTS), "k", (2, 4, 8, 16),
                                 required=True)
  exp = _EXPERIMENTS[name]
  config = common.get_config()
  config.data.train = zero_shot_eval.official_dataset(name, role="train", list_file=exp["train"].format(shots))
  config.data.train.name += f" {shots}-shot train"
  config.data.evals[f"{name}_split1"] = zero_shot_eval.eval_datasets(name)[f"{name}_split1"]
  config.data.evals[f"{name}_split1"].group = ""
  config.data.batch_size = exp["batch_size"]
  config.train.epochs = exp["epochs"]
  config.optim.lr = exp["lr"]
  config.model.drop_path_rate = exp["drop_path_rate"]
  return config
