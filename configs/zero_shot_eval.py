"""Zero-shot evaluation of a trained EZ-CLIP (no training): UCF101, HMDB51, Kinetics-600.

  python -m ezclip_jax.main --mode eval --config configs/zero_shot_eval.py:ucf101 --workdir /tmp/zs-ucf101 \\
      --config.model.pretrained=/ckpt/ezclip-k400 --config.data.official_repo=/src/EZ-CLIP \\
      --config.data.evals.ucf101_split1.root=/data/ucf101_frames

The argument is one of `ucf101`, `hmdb51`, `k600`, `k400`, `ucf101_ds` (official configs
ucf101/UCF_zero_shot_testing.yaml, hmdb51/hmdb_zero_shot_testing.yaml,
K-600/K-600_zero_shot_testing.yaml, K-400/k400_zero_shot.yaml, and the UCF101-DS set that
K-400/k400_train.yaml evaluates). List, label and description files are the official
repository's (`config.data.official_repo`); the frame folders (`root`) are yours.

* UCF101, HMDB51: the official repo ships the test list of split 1 only. Splits 2 and 3
  are placeholders (`ucf101_split2`, ...) with no list file, which evaluation skips. Enable
  one with your own list in the official format (`python -m data.extract_frames ...
  --labels lists/ucf_labels.csv` writes one), `--config.data.evals.ucf101_split2.list_file=
  /lists/ucf101_split2_test.txt`, or read it from our TFDS build (`ezclip_ucf101/split2`, see
  data/tfds_builders.py) with `--config.data.evals.ucf101_split2.kind=tfds
  [--config.data.evals.ucf101_split2.tfds_data_dir=DIR]`. The splits of a dataset share a
  `group`, summarised as mean +- std over the splits that ran.
* Kinetics-600: the official list covers its 232 classes outside Kinetics-400
  (`k600`). The usual protocol's three 160-class subsets are not in the official repo:
  `k600_subset1..3` (group `k600`) take your list and label CSV (`list_file`, `labels_csv`);
  the descriptions CSV is looked up by class name, so it serves any subset.
* Kinetics-400: its validation list (the yaml names a `K-400/Zero_shot/test.txt` that the
  repo does not have). UCF101-DS: the 47-class distribution-shift set, scored against all
  101 UCF101 class texts.

Frames: 8. The K-400/K-600 testing yamls ask for 16, but the released model is 8x224 and
its temporal prompts hold one token per frame, so 16 needs a 16-frame checkpoint
(`--config.model.num_frames=16`). The official test batch sizes (20, 1, 2) only matter to
its `drop_last`; here every sample counts whatever `data.eval_batch_size` is.
"""

import ml_collections

from configs import common

# name -> (title, official evaluation list, label CSV, LLM descriptions)
_OFFICIAL = {
    "ucf101": ("UCF101", "dataset_splits/UCF/Zero_shot/test.txt", "lists/ucf_labels.csv",
               "GPT_discription/UCF_101_gpt_Class_discription_new.csv"),
    "hmdb51": ("HMDB51", "dataset_splits/HMDB/Zero_shot/test.txt", "lists/hmdb51_labels.csv",
               "GPT_discription/HMDB_gpt_Class_discription_new.csv"),
    "k600": ("Kinetics-600 exclusive classes", "dataset_splits/K-600/Zero_shot/test_600_exclusive.txt",
             "lists/kinetics_600_labels_exclusive.csv",
             "GPT_discription/kinetics_600_labels_exclusive_discription_new.csv"),
    "k400": ("Kinetics-400 val", "dataset_splits/K-400/Zero_shot/val.txt", "lists/kinetics_400_labels.csv",
             "GPT_discription/Kinetic_400_gpt_Class_discription_new.csv"),
    "ucf101_ds": ("UCF101-DS", "dataset_splits/UCF/Zero_shot/test_DS.txt", "lists/ucf_labels.csv",
                  "GPT_discription/UCF_101_gpt_Class_discription_new.csv"),
}
NAMES = tuple(_OFFICIAL)


def official_dataset(dataset: str, **overrides) -> ml_collections.ConfigDict:
  """The official evaluation set `dataset` (one of `NAMES`) as a test-role dataset; `overrides`
  replace any of its fields."""
  title, list_file, labels_csv, descriptions = _OFFICIAL[dataset]
  official = {"name": title, "list_file": list_file, "labels_csv": labels_csv, "descriptions": descriptions}
  return common.dataset(**{**official, **overrides})


def _three_splits(name: str) -> dict[str, ml_collections.ConfigDict]:
  """Split 1 from the official list; splits 2 and 3 wait for a list file or `kind=tfds`."""
  title, list_file = _OFFICIAL[name][:2]
  splits = {}
  for number in (1, 2, 3):
    splits[f"{name}_split{number}"] = official_dataset(
        name, name=f"{title} split {number} test", list_file=list_file if number == 1 else "", group=name,
        tfds_name=f"ezclip_{name}/split{number}", tfds_split="test")
  return splits


def _k600_sets() -> dict[str, ml_collections.ConfigDict]:
  """The official 232-class set, and the three subsets of the usual protocol as placeholders."""
  sets = {"k600": official_dataset("k600")}
  for number in (1, 2, 3):
    sets[f"k600_subset{number}"] = official_dataset("k600", name=f"Kinetics-600 subset {number}", list_file="",
                                                    labels_csv="", group="k600")
  return sets


def eval_datasets(name: str) -> dict[str, ml_collections.ConfigDict]:
  """The datasets (key -> `common.dataset`) that evaluate zero-shot transfer to `name`."""
  if name in ("ucf101", "hmdb51"):
    return _three_splits(name)
  if name == "k600":
    return _k600_sets()
  if name in _OFFICIAL:
    return {name: official_dataset(name)}
  raise ValueError(f"configs/zero_shot_eval.py: unknown dataset {name!r}; expected one of {', '.join(NAMES)}.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """`arg`: the dataset, one of `NAMES`."""
  config = common.get_config()
  config.data.evals.update(eval_datasets(arg))
  return config
