"""Defaults shared by every experiment; each config file imports and overrides them.

Values follow the official EZ-CLIP recipe (its configs/*.yaml): ViT-B/16, 8 frames,
AdamW lr 1e-4 (betas .9/.98, eps 1e-8, weight decay .2), 5 warmup epochs then cosine,
prompt dropout .1, stochastic depth .1, motion loss on, LLM class descriptions.
"""

from collections.abc import Sequence

import ml_collections

from ezclip_jax import optim


def dataset(**overrides) -> ml_collections.ConfigDict:
  """One dataset: a list file (official format) or folders of videos or a TFDS dataset.

  Relative `list_file`, `labels_csv` and `descriptions` paths are read from
  `config.data.official_repo` (a checkout of the official EZ-CLIP repository, which
  holds the split files, label lists and LLM descriptions).
  """
  spec = ml_collections.ConfigDict({
      "name": "",
      "kind": "list",           # list | video_folder | tfds
      "list_file": "",          # kind=list: `path num_frames label` (or `path label` for videos)
      "labels_csv": "",         # `id,name`
      "root": "",               # replaces the listed paths' directories; video_folder: the class folders
      "media": "frames",        # kind=list: frames | video | auto
      "template": "img_{:05d}.jpg",
      "index_bias": 1,
      "tfds_name": "",          # kind=tfds: builder name or directory
      "tfds_split": "",
      "tfds_data_dir": "",
      "descriptions": "",       # LLM description CSV; empty: the 16 templates
      "flip": True,             # horizontal flips while training (False for SSv2)
      "role": "test",           # evaluation only: val (selects the best checkpoint) or test
      "group": "",              # evaluation only: summarised together (mean/std over splits; base/novel -> HM)
  })
  spec.update(overrides)
  return spec


def parse_arg(arg: str, config_file: str, datasets: Sequence[str], option: str, values: Sequence[int],
              required: bool) -> tuple[str, int | None]:
  """The argument after a config file's colon: `DATASET,OPTION=VALUE`, or `DATASET` alone.

  Args:
    arg: e.g. `hmdb51,seed=2`.
    config_file: named in the error, e.g. `configs/base_to_novel.py`.
    datasets: the accepted DATASET names.
    option: the option's key, e.g. `seed`.
    values: its accepted values.
    required: the option must be given.

  Returns:
    (DATASET, VALUE), VALUE None when the option is not given.

  Raises:
    ValueError: one line naming the file, the argument and what is expected.
  """
  name, comma, setting = arg.partition(",")
  key, equals, value = setting.partition("=")
  given = key == option and equals and value in map(str, values)
  if name not in datasets or (comma and not given) or (required and not comma):
    symbol = option[0].upper()
    form = f"DATASET,{option}={symbol}" if required else f"DATASET or DATASET,{option}={symbol}"
    raise ValueError(f"{config_file}:{arg!r}: expected {form} with DATASET one of {', '.join(datasets)} and "
                     f"{symbol} one of {', '.join(map(str, values))}.")
  return name, int(value) if comma else None


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 1024
  config.mesh_shape = (-1, 1, 1)  # ('data', 'fsdp', 'tensor'); -1 fills with the remaining devices
  config.distributed = False      # jax.distributed.initialize() for multi-host runs (TPU pods, GPU clusters)

  config.model = ml_collections.ConfigDict()
  config.model.pretrained = ""    # a directory from `python -m convert.torch_to_flax`; empty: random init
  config.model.arch = "ViT-B/16"  # used only for random init
  config.model.num_frames = 8
  config.model.use_prompts = True
  config.model.t_adapter = False
  config.model.drop_path_rate = 0.1
  config.model.prompt_dropout = 0.1
  config.model.emb_dropout = 0.0
  config.model.dtype = "auto"  # bfloat16 compute on TPUs and GPUs, float32 on CPUs (or float32 / bfloat16)
  config.model.remat = False

  config.data = ml_collections.ConfigDict()
  config.data.official_repo = ""
  config.data.train = dataset(role="train")
  config.data.evals = ml_collections.ConfigDict()  # name -> dataset(...)
  config.data.batch_size = 80     # global, over all processes
  config.data.eval_batch_size = 16  # per process
  config.data.num_clips = 1
  config.data.num_crops = 1
  config.data.num_workers = 4
  config.data.color_jitter = True  # torchvision ColorJitter(.4, .4, .2, .1) p=.8 + RandomGrayscale(.2)
  config.data.color_jitter_per_frame = True  # official: factors and order drawn per frame; False: per clip
  config.data.skip_bad = False

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1e-4
  # 0: a new lr every step. The official loop sets it at each epoch's first step and every 10th
  # (a staircase); 10 reproduces that exactly.
  config.optim.lr_staircase_every = 0
  config.optim.visual_lr_ratio = 1.0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.2
  config.optim.warmup_epochs = 5
  config.optim.clip_norm = 0.0  # The official code defines clip_gradient but never applies it.
  config.optim.grad_accum_steps = 1

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 50
  config.train.trainable = optim.DEFAULT_TRAINABLE  # the official filter on parameter names
  config.train.motion_weight = 1.0
  config.train.log_every_steps = 50
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  return config
