"""Experiment configs: they load as main loads them (locked), reference only files of the official
repository, carry the official yaml hyper-parameters, and never select a checkpoint on a test set."""

import pathlib
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from data import synthetic
from data import tfds_builders
from ezclip_jax import datasets
from ezclip_jax import evaluate
from ezclip_jax import metrics
from ezclip_jax import model as model_lib
from ezclip_jax import model_setup
from ezclip_jax import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]

# `git ls-tree -r --name-only HEAD` of the official EZ-CLIP repository (Shahzadnit/EZ-CLIP), the
# split, label and description files.
OFFICIAL_FILES = (
    "GPT_discription/HMDB_gpt_Class_discription_new.csv",
    "GPT_discription/K_600_gpt_Class_discription_new.csv",
    "GPT_discription/Kinetic_400_gpt_Class_discription_new.csv",
    "GPT_discription/Something_gpt_Class_discription_new.csv",
    "GPT_discription/UCF_101_gpt_Class_discription_new.csv",
    "GPT_discription/kinetics_600_labels_exclusive_discription_new.csv",
    "UCF_101_txt/test.txt",
    "UCF_101_txt/train.txt",
    "dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_16.txt",
    "dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_2.txt",
    "dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_4.txt",
    "dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_8.txt",
    "dataset_splits/HMDB/Zero_shot/test.txt",
    "dataset_splits/HMDB/Zero_shot/train.txt",
    "dataset_splits/HMDB/base_to_novel/FS_base_train_s1.txt",
    "dataset_splits/HMDB/base_to_novel/FS_base_train_s2.txt",
    "dataset_splits/HMDB/base_to_novel/FS_base_train_s3.txt",
    "dataset_splits/HMDB/base_to_novel/hmdb_base_train.txt",
    "dataset_splits/HMDB/base_to_novel/hmdb_base_train_class_list.csv",
    "dataset_splits/HMDB/base_to_novel/hmdb_base_val.txt",
    "dataset_splits/HMDB/base_to_novel/hmdb_novel_val.txt",
    "dataset_splits/HMDB/base_to_novel/hmdb_novel_val_class_list.csv",
    "dataset_splits/K-400/Zero_shot/train.txt",
    "dataset_splits/K-400/Zero_shot/val.txt",
    "dataset_splits/K-400/base_to_novel/FS_base_train_s1.txt",
    "dataset_splits/K-400/base_to_novel/FS_base_train_s2.txt",
    "dataset_splits/K-400/base_to_novel/FS_base_train_s3.txt",
    "dataset_splits/K-400/base_to_novel/K_400_base_train.txt",
    "dataset_splits/K-400/base_to_novel/K_400_base_val.txt",
    "dataset_splits/K-400/base_to_novel/K_400_novel_val.txt",
    "dataset_splits/K-400/base_to_novel/k_400_base_val_class_list.csv",
    "dataset_splits/K-400/base_to_novel/k_400_novel_val_class_list.csv",
    "dataset_splits/K-600/Zero_shot/test_600_exclusive.txt",
    "dataset_splits/SSv2/Few_shot/ss_few_shot_16.txt",
    "dataset_splits/SSv2/Few_shot/ss_few_shot_2.txt",
    "dataset_splits/SSv2/Few_shot/ss_few_shot_4.txt",
    "dataset_splits/SSv2/Few_shot/ss_few_shot_8.txt",
    "dataset_splits/SSv2/base_to_novel/SS_base_train.txt",
    "dataset_splits/SSv2/base_to_novel/SS_base_train_class_list.csv",
    "dataset_splits/SSv2/base_to_novel/SS_base_val.txt",
    "dataset_splits/SSv2/base_to_novel/SS_base_val_class_list.csv",
    "dataset_splits/SSv2/base_to_novel/SS_novel_val.txt",
    "dataset_splits/SSv2/base_to_novel/SS_novel_val_class_list.csv",
    "dataset_splits/SSv2/base_to_novel/fs_base_train_s1.txt",
    "dataset_splits/SSv2/base_to_novel/fs_base_train_s2.txt",
    "dataset_splits/SSv2/base_to_novel/fs_base_train_s3.txt",
    "dataset_splits/UCF/Few_shot/my_ucf_few_shot_16.txt",
    "dataset_splits/UCF/Few_shot/my_ucf_few_shot_2.txt",
    "dataset_splits/UCF/Few_shot/my_ucf_few_shot_4.txt",
    "dataset_splits/UCF/Few_shot/my_ucf_few_shot_8.txt",
    "dataset_splits/UCF/Zero_shot/test.txt",
    "dataset_splits/UCF/Zero_shot/test_DS.txt",
    "dataset_splits/UCF/Zero_shot/train.txt",
    "dataset_splits/UCF/base_to_novel/FS_base_train_s1.txt",
    "dataset_splits/UCF/base_to_novel/FS_base_train_s2.txt",
    "dataset_splits/UCF/base_to_novel/FS_base_train_s3.txt",
    "dataset_splits/UCF/base_to_novel/ucf_base_train.txt",
    "dataset_splits/UCF/base_to_novel/ucf_base_train_class_list.csv",
    "dataset_splits/UCF/base_to_novel/ucf_base_val.txt",
    "dataset_splits/UCF/base_to_novel/ucf_novel_val.txt",
    "dataset_splits/UCF/base_to_novel/ucf_novel_val_class_list.csv",
    "lists/hmdb51_labels.csv",
    "lists/kinetics_400_labels.csv",
    "lists/kinetics_600_labels.csv",
    "lists/kinetics_600_labels_exclusive.csv",
    "lists/something_something.csv",
    "lists/ucf_labels.csv",
)

B2N = "dataset_splits/{}/base_to_novel/"
# base-to-novel argument -> (folder, base train list, 16-shot seed lists, base test, novel test)
BASE_TO_NOVEL_LISTS = {
    "k400": ("K-400", "K_400_base_train.txt", "FS_base_train_s{}.txt", "K_400_base_val.txt", "K_400_novel_val.txt"),
    "hmdb51": ("HMDB", "hmdb_base_train.txt", "FS_base_train_s{}.txt", "hmdb_base_val.txt", "hmdb_novel_val.txt"),
    "ucf101": ("UCF", "ucf_base_train.txt", "FS_base_train_s{}.txt", "ucf_base_val.txt", "ucf_novel_val.txt"),
    "ssv2": ("SSv2", "SS_base_train.txt", "fs_base_train_s{}.txt", "SS_base_val.txt", "SS_novel_val.txt"),
}
UCF_TEST = "dataset_splits/UCF/Zero_shot/test.txt"
HMDB_TEST = "dataset_splits/HMDB/Zero_shot/test.txt"
K600_TEST = "dataset_splits/K-600/Zero_shot/test_600_exclusive.txt"
K400_VAL = "dataset_splits/K-400/Zero_shot/val.txt"
UCF_DS_TEST = "dataset_splits/UCF/Zero_shot/test_DS.txt"
ZERO_SHOT_LISTS = {
    "ucf101": {"ucf101_split1": UCF_TEST},
    "hmdb51": {"hmdb51_split1": HMDB_TEST},
    "k600": {"k600": K600_TEST},
    "k400": {"k400": K400_VAL},
    "ucf101_ds": {"ucf101_ds": UCF_DS_TEST},
}
FEW_SHOT_LISTS = {
    "hmdb51": ("dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_{}.txt", {"hmdb51_split1": HMDB_TEST}),
    "ucf101": ("dataset_splits/UCF/Few_shot/my_ucf_few_shot_{}.txt", {"ucf101_split1": UCF_TEST}),
}
# Sets the protocols test on (never role val): UCF101/HMDB51 split 1 test, K600's classes outside
# K400, UCF101-DS, and the base-to-novel "val" lists (split 1 test videos, or the K400/SSv2
# validation sets that serve as their test sets).
TEST_LISTS = frozenset({UCF_TEST, HMDB_TEST, K600_TEST, UCF_DS_TEST} | {
    B2N.format(folder) + name for folder, _, _, *tests in BASE_TO_NOVEL_LISTS.values() for name in tests})

# Label CSV of each list's ids, and the LLM descriptions of each label CSV's classes.
LABELS = {
    "dataset_splits/K-400/Zero_shot/train.txt": "lists/kinetics_400_labels.csv",
    K400_VAL: "lists/kinetics_400_labels.csv",
    UCF_TEST: "lists/ucf_labels.csv",
    UCF_DS_TEST: "lists/ucf_labels.csv",
    HMDB_TEST: "lists/hmdb51_labels.csv",
    K600_TEST: "lists/kinetics_600_labels_exclusive.csv",
    **{f"dataset_splits/HMDB/Few_shot/my_hmdb_few_shot_{k}.txt": "lists/hmdb51_labels.csv" for k in (2, 4, 8, 16)},
    **{f"dataset_splits/UCF/Few_shot/my_ucf_few_shot_{k}.txt": "lists/ucf_labels.csv" for k in (2, 4, 8, 16)},
}
BASE_LABELS = {"K-400": "k_400_base_val_class_list.csv", "HMDB": "hmdb_base_train_class_list.csv",
               "UCF": "ucf_base_train_class_list.csv", "SSv2": "SS_base_train_class_list.csv"}
NOVEL_LABELS = {"K-400": "k_400_novel_val_class_list.csv", "HMDB": "hmdb_novel_val_class_list.csv",
                "UCF": "ucf_novel_val_class_list.csv", "SSv2": "SS_novel_val_class_list.csv"}
for _folder, _train, _seeds, _base, _novel in BASE_TO_NOVEL_LISTS.values():
  for _name in (_train, _base, *(_seeds.format(s) for s in (1, 2, 3))):
    LABELS[B2N.format(_folder) + _name] = B2N.format(_folder) + BASE_LABELS[_folder]
  LABELS[B2N.format(_folder) + _novel] = B2N.format(_folder) + NOVEL_LABELS[_folder]
DESCRIPTIONS = {
    "lists/kinetics_400_labels.csv": "GPT_discription/Kinetic_400_gpt_Class_discription_new.csv",
    "lists/ucf_labels.csv": "GPT_discription/UCF_101_gpt_Class_discription_new.csv",
    "lists/hmdb51_labels.csv": "GPT_discription/HMDB_gpt_Class_discription_new.csv",
    "lists/kinetics_600_labels_exclusive.csv": "GPT_discription/kinetics_600_labels_exclusive_discription_new.csv",
}
for _folder, _gpt in (("K-400", "Kinetic_400"), ("HMDB", "HMDB"), ("UCF", "UCF_101"), ("SSv2", "Something")):
  for _labels in (BASE_LABELS[_folder], NOVEL_LABELS[_folder]):
    DESCRIPTIONS[B2N.format(_folder) + _labels] = f"GPT_discription/{_gpt}_gpt_Class_discription_new.csv"

# The official yamls: data.batch_size, solver.epochs, solver.lr, solver.lr_warmup_step,
# network.drop_out (stochastic depth) and prompt.DROPOUT.
YAML = {
    "K-400/k400_train.yaml": dict(batch_size=80, epochs=150, lr=1e-4, warmup=5, drop_path=0.1, prompt_dropout=0.1),
    "base_to_nove/k_400_base_to_novel.yaml": dict(batch_size=50, epochs=100, lr=5e-6, warmup=5, drop_path=0.1,
                                                  prompt_dropout=0.1),
    "base_to_nove/hmdb_base_to_novel.yaml": dict(batch_size=20, epochs=50, lr=1e-4, warmup=5, drop_path=0.1,
                                                 prompt_dropout=0.1),
    "base_to_nove/ucf_base_to_novel.yaml": dict(batch_size=60, epochs=50, lr=1e-5, warmup=5, drop_path=0.1,
                                                prompt_dropout=0.1),
    "base_to_nove/ss_base_to_novel.yaml": dict(batch_size=50, epochs=100, lr=1e-5, warmup=5, drop_path=0.1,
                                               prompt_dropout=0.1),
    "few_shot/hmdb_base_fs.yaml": dict(batch_size=10, epochs=180, lr=1e-4, warmup=5, drop_path=0.1,
                                       prompt_dropout=0.1),
    "few_shot/ucf_fs.yaml": dict(batch_size=4, epochs=100, lr=1e-4, warmup=5, drop_path=0.0, prompt_dropout=0.1),
}
BASE_TO_NOVEL_YAML = {"k400": "base_to_nove/k_400_base_to_novel.yaml", "hmdb51": "base_to_nove/hmdb_base_to_novel.yaml",
                      "ucf101": "base_to_nove/ucf_base_to_novel.yaml", "ssv2": "base_to_nove/ss_base_to_novel.yaml"}
FEW_SHOT_YAML = {"hmdb51": "few_shot/hmdb_base_fs.yaml", "ucf101": "few_shot/ucf_fs.yaml"}

SEEDS = ("", ",seed=1", ",seed=2", ",seed=3")
CASES = ([("k400_zero_shot.py", "")] + [("zero_shot_eval.py", name) for name in ZERO_SHOT_LISTS]
         + [("base_to_novel.py", name + seed) for name in BASE_TO_NOVEL_LISTS for seed in SEEDS]
         + [("few_shot.py", f"{name},k={k}") for name in FEW_SHOT_LISTS for k in (2, 4, 8, 16)])
DATASET_FIELDS = frozenset(common.dataset().keys())


def load(file: str, arg: str = "", *overrides: str):
  """The config as `ezclip_jax.main` gets it: `--config FILE[:ARG]` and `--config.x=...` flags."""
  argv = ["main", "--config", str(REPO / "configs" / file) + (f":{arg}" if arg else ""), *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def specs(config) -> dict:
  """Training (when the config trains) and evaluation datasets by key."""
  found = {"train": config.data.train} if config.data.train.labels_csv else {}
  found.update(config.data.evals)
  return found


def expected_lists(file: str, arg: str) -> dict[str, str]:
  if file == "k400_zero_shot.py":
    return {"train": "dataset_splits/K-400/Zero_shot/train.txt", "k400_val": K400_VAL, "ucf101_split1": UCF_TEST,
            "hmdb51_split1": HMDB_TEST, "k600": K600_TEST}
  if file == "zero_shot_eval.py":
    return ZERO_SHOT_LISTS[arg]
  name, _, option = arg.partition(",")
  if file == "few_shot.py":
    pattern, tests = FEW_SHOT_LISTS[name]
    return {"train": pattern.format(option.removeprefix("k=")), **tests}
  folder, train_list, seed_lists, base, novel = BASE_TO_NOVEL_LISTS[name]
  train_list = seed_lists.format(option.removeprefix("seed=")) if option else train_list
  return {"train": B2N.format(folder) + train_list, f"{name}_base": B2N.format(folder) + base,
          f"{name}_novel": B2N.format(folder) + novel}


def official_yaml(file: str, arg: str) -> str | None:
  name = arg.partition(",")[0]
  return {"k400_zero_shot.py": "K-400/k400_train.yaml", "base_to_novel.py": BASE_TO_NOVEL_YAML.get(name),
          "few_shot.py": FEW_SHOT_YAML.get(name)}.get(file)


@pytest.mark.parametrize("file,arg", CASES + [("demo.py", ""), ("video_folder.py", "")])
def test_config_loads_locked(file, arg):
  config = load(file, arg)
  assert config.is_locked
  with pytest.raises(AttributeError, match="lr"):
    config.optim.lrr = 1.0
  with pytest.raises(AttributeError, match="lrr"):
    load(file, arg, "--config.optim.lrr=1")
  for key in config.data.evals:
    with pytest.raises(AttributeError, match="list_file"):
      load(file, arg, f"--config.data.evals.{key}.list_fle=x")
  assert load(file, arg, "--config.optim.lr=0.5").optim.lr == 0.5


@pytest.mark.parametrize("file,arg,message", [
    ("zero_shot_eval.py", "", "expected one of ucf101, hmdb51, k600, k400, ucf101_ds"),
    ("zero_shot_eval.py", "ssv2", "unknown dataset 'ssv2'"),
    ("base_to_novel.py", "", "DATASET,seed=S"),
    ("base_to_novel.py", "hmdb51,seed=4", "S one of 1, 2, 3"),
    ("base_to_novel.py", "hmdb51,", "'hmdb51,'"),
    ("base_to_novel.py", "kinetics400", "k400, hmdb51, ucf101, ssv2"),
    ("few_shot.py", "hmdb51", "DATASET,k=K"),
    ("few_shot.py", "hmdb51,k=3", "K one of 2, 4, 8, 16"),
    ("few_shot.py", "ssv2,k=8", "hmdb51, ucf101"),
])
def test_bad_argument_names_the_choices(file, arg, message):
  with pytest.raises(flags.IllegalFlagValueError, match=re.escape(message)):
    load(file, arg)


@pytest.mark.parametrize("file,arg", CASES)
def test_datasets_reference_official_files(file, arg):
  config = load(file, arg)
  for key, spec in specs(config).items():
    assert set(spec.keys()) == DATASET_FIELDS, key
    assert spec.name, key
    assert spec.root == "", key  # the user's frame folders
    for field in ("list_file", "labels_csv", "descriptions"):
      if spec[field]:
        assert spec[field] in OFFICIAL_FILES, f"{key}.{field}={spec[field]}"
  enabled = {key: spec.list_file for key, spec in specs(config).items() if spec.list_file}
  assert enabled == expected_lists(file, arg)
  for key, list_file in enabled.items():
    spec = specs(config)[key]
    assert (spec.kind, spec.media, spec.template, spec.index_bias) == ("list", "frames", "img_{:05d}.jpg", 1)
    assert spec.labels_csv == LABELS[list_file], key
    assert spec.descriptions == DESCRIPTIONS[spec.labels_csv], key  # every yaml has use_llm: True


@pytest.mark.parametrize("file,arg", CASES)
def test_hyper_parameters_are_the_official_ones(file, arg):
  config = load(file, arg)
  assert (config.seed, config.model.num_frames, config.model.arch) == (1024, 8, "ViT-B/16")
  assert (config.model.emb_dropout, config.model.t_adapter, config.model.use_prompts) == (0.0, False, True)
  assert (config.optim.b1, config.optim.b2, config.optim.eps, config.optim.weight_decay) == (0.9, 0.98, 1e-8, 0.2)
  assert (config.optim.visual_lr_ratio, config.train.motion_weight, config.train.eval_every_epochs) == (1, 1, 1)
  assert tuple(config.train.trainable) == ("prompt", "Adapter")
  yaml = official_yaml(file, arg)
  if yaml is None:
    assert not config.data.train.list_file  # evaluation only
    return
  want = YAML[yaml]
  got = dict(batch_size=config.data.batch_size, epochs=config.train.epochs, lr=config.optim.lr,
             warmup=config.optim.warmup_epochs, drop_path=config.model.drop_path_rate,
             prompt_dropout=config.model.prompt_dropout)
  assert got == want, yaml
  assert config.data.train.flip == (not arg.startswith("ssv2")), "no flips for SSv2 only"


@pytest.mark.parametrize("file,arg", CASES)
def test_best_checkpoint_is_never_chosen_on_a_test_set(file, arg):
  config = load(file, arg)
  assert config.data.train.role == "train"
  roles = {key: spec.role for key, spec in config.data.evals.items()}
  assert set(roles.values()) <= {"val", "test"}
  val = [key for key, role in roles.items() if role == "val"]
  assert val == (["k400_val"] if file == "k400_zero_shot.py" else [])
  for key, spec in config.data.evals.items():
    if spec.list_file in TEST_LISTS:
      assert spec.role == "test", key
    assert not spec.list_file or spec.list_file != config.data.train.list_file, key


def test_protocol_groups():
  groups = {}
  for key, spec in load("k400_zero_shot.py").data.evals.items():
    groups.setdefault(spec.group, []).append(key)
  assert groups == {"": ["k400_val", "k600"], "ucf101": ["ucf101_split1", "ucf101_split2", "ucf101_split3"],
                    "hmdb51": ["hmdb51_split1", "hmdb51_split2", "hmdb51_split3"],
                    "k600": ["k600_subset1", "k600_subset2", "k600_subset3"]}
  for name in BASE_TO_NOVEL_LISTS:
    evals = load("base_to_novel.py", f"{name},seed=2").data.evals
    assert {key: spec.group for key, spec in evals.items()} == {f"{name}_base": "base", f"{name}_novel": "novel"}
  for name in FEW_SHOT_LISTS:
    assert [spec.group for spec in load("few_shot.py", f"{name},k=4").data.evals.values()] == [""]


@pytest.fixture(scope="module")
def official_repo(tmp_path_factory):
  root = tmp_path_factory.mktemp("EZ-CLIP")
  for name in OFFICIAL_FILES:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).touch()
  return root


@pytest.mark.parametrize("file,arg", CASES)
def test_check_paths_on_the_official_repo_layout(file, arg, official_repo):
  config = load(file, arg, f"--config.data.official_repo={official_repo}")
  datasets.check_paths(config)
  referenced = {spec[field] for spec in specs(config).values()
                for field in ("list_file", "labels_csv", "descriptions") if spec[field]}
  assert referenced
  for name in sorted(referenced):
    path = official_repo / name
    path.rename(path.with_name(path.name + ".gone"))
    try:
      with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        datasets.check_paths(config)
    finally:
      path.with_name(path.name + ".gone").rename(path)


@pytest.mark.parametrize("name,builder", [("ucf101", tfds_builders.Ucf101), ("hmdb51", tfds_builders.Hmdb51)])
def test_split_placeholders_are_enabled_from_the_command_line(name, builder, official_repo, tmp_path):
  assert [c.name for c in builder.BUILDER_CONFIGS] == ["split1", "split2", "split3"]
  for file, arg in (("zero_shot_eval.py", name), ("k400_zero_shot.py", "")):
    config = load(file, arg, f"--config.data.official_repo={official_repo}")
    for number in (2, 3):
      spec = config.data.evals[f"{name}_split{number}"]
      assert (spec.kind, spec.list_file, spec.role, spec.group) == ("list", "", "test", name)
      assert spec.labels_csv == config.data.evals[f"{name}_split1"].labels_csv
      assert (spec.tfds_name, spec.tfds_split) == (f"{builder.name}/split{number}", "test")
    datasets.check_paths(config)  # placeholders need nothing
    own_list = tmp_path / f"{name}_split2_test.txt"
    config = load(file, arg, f"--config.data.official_repo={official_repo}",
                  f"--config.data.evals.{name}_split2.list_file={own_list}")
    with pytest.raises(FileNotFoundError, match=re.escape(f"data.evals.{name}_split2.list_file={own_list}")):
      datasets.check_paths(config)
    own_list.touch()
    datasets.check_paths(config)
    own_list.unlink()
    config = load(file, arg, f"--config.data.evals.{name}_split3.kind=tfds")
    assert config.data.evals[f"{name}_split3"].tfds_name == f"ezclip_{name}/split3"


@pytest.mark.parametrize("file", ["k400_zero_shot.py", "zero_shot_eval.py", "base_to_novel.py", "few_shot.py"])
def test_docstring_command_runs_and_sets_every_root(file):
  source = (REPO / "configs" / file).read_text()
  docstring = source.split('"""')[1].replace("\\\\\n", " ")
  command = re.search(r"python -m ezclip_jax\.main .*", docstring)
  assert command, f"configs/{file} docstring has no run command"
  argv = shlex.split(command.group(0))
  config_arg = argv[argv.index("--config") + 1]
  assert config_arg.startswith(f"configs/{file}")
  overrides = [a for a in argv if a.startswith("--config.")]
  config = load(file, config_arg.partition(":")[2], *overrides)
  assert config.data.official_repo and config.model.pretrained
  for key, spec in specs(config).items():
    assert bool(spec.root) == bool(spec.list_file), f"configs/{file} command: root of {key}"
  assert ("--mode" in argv) == (file == "zero_shot_eval.py")


def test_placeholders_are_skipped_by_evaluation(tmp_path):
  """UCF101 split 1 evaluated (synthetic clips stand in for it), splits 2 and 3 left empty."""
  data = synthetic.make_dataset(tmp_path / "data", videos_per_class=3, num_frames=4, height=32, width=32,
                                classes=("moving_left", "moving_right"))
  split1 = "--config.data.evals.ucf101_split1."
  config = load("zero_shot_eval.py", "ucf101", f"{split1}list_file={data.frames_list}",
                f"{split1}labels_csv={data.labels_csv}", f"{split1}descriptions=", "--config.data.num_workers=0",
                "--config.model.arch=tiny", "--config.model.num_frames=4", "--config.data.eval_batch_size=4")
  datasets.check_paths(config)
  model_config, params = model_setup.initial_params(config)
  writer = metrics.MetricWriter(tmp_path / "run", enabled=True)
  top1 = evaluate.evaluate_datasets(config, model_lib.EZCLIP(model_config), params,
                                    sharding.make_mesh(config.mesh_shape), 0, writer, tmp_path / "run")
  writer.close()
  assert list(top1) == ["ucf101_split1"]
  records = {r["split"]: r["values"] for r in metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl")}
  assert records["eval/ucf101_split1"]["num_samples"] == 6
  assert records["protocol/ucf101"]["num_splits"] == 1
  assert records["protocol/ucf101"]["top1_mean"] == records["eval/ucf101_split1"]["top1"]


def test_video_folder_config_shares_its_labels_and_needs_its_folders(tmp_path):
  labels = tmp_path / "labels.csv"
  labels.write_text("id,name\n0,growing\n")
  config = load("video_folder.py", "", f"--config.labels_csv={labels}", "--config.descriptions=/no/descriptions.csv")
  for spec in (config.data.train, config.data.evals.val):
    assert (spec.kind, spec.labels_csv, spec.descriptions) == ("video_folder", str(labels), "/no/descriptions.csv")
  assert (config.data.train.role, config.data.evals.val.role) == ("train", "val")
  with pytest.raises(FileNotFoundError, match=r"data\.train\.root \(empty; kind=video_folder"):
    datasets.check_paths(config, training=True)
  train_dir, val_dir = tmp_path / "train", tmp_path / "val"
  train_dir.mkdir()
  config = load("video_folder.py", "", f"--config.labels_csv={labels}", f"--config.data.train.root={train_dir}",
                f"--config.data.evals.val.root={val_dir}")
  with pytest.raises(FileNotFoundError, match=re.escape(f"data.evals.val.root={val_dir}")):
    datasets.check_paths(config, training=True)
  val_dir.mkdir()
  datasets.check_paths(config, training=True)
