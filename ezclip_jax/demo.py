"""The README demo: EZ-CLIP learns temporal order that frame averaging cannot see.

Generates the synthetic motion dataset (`ezclip_jax.synthetic`: classes in pairs whose clips
are each other's reverses), trains a tiny random-init EZ-CLIP, then the same model with
temporal prompts disabled (frame averaging only), and scores both on held-out clips:

  * top-1 over all classes (chance: 1 / classes);
  * direction accuracy: how often a clip scores its own class above its reverse
    partner class (chance: 50%).

Without prompts (and with the temporal embedding frozen at zero, as in the official
recipe) every frame is encoded on its own and the video embedding is the mean over
frames, which is the same for a clip and its reverse: both get the same class scores,
so exactly one of the two is right about the direction. Direction accuracy is then
50% and top-1 at most 50%, whatever the training. The demo checks that invariance
on its own scores and prints the largest difference it found.
"""

import copy
import csv
import dataclasses
import pathlib

import ml_collections
import numpy as np

from ezclip_jax import checkpoint
from ezclip_jax import console
from ezclip_jax import datasets
from ezclip_jax import evaluate
from ezclip_jax import synthetic
from ezclip_jax import text_prompts
from ezclip_jax import train
from ezclip_jax import transforms

MODELS = (("ezclip", True), ("frame_average", False))
TITLES = {"ezclip": "EZ-CLIP (temporal prompts)", "frame_average": "frame averaging (no prompts)"}


@dataclasses.dataclass(frozen=True)
class Scores:
  """One model's results on the held-out clips.

  Attributes:
    top1: percent of clips whose most probable class is right.
    direction: percent of clips that score their class above its reverse partner.
    reverse_gap: largest |p(class | clip) - p(class | reversed clip)| over clips and classes.
    num_clips: held-out clips scored.
  """
  top1: float
  direction: float
  reverse_gap: float
  num_clips: int


def partner_classes(classes) -> np.ndarray:
  """For each class, the position in `classes` of its reverse (`moving_left` <-> `moving_right`).

  Raises:
    ValueError: a class's partner is missing (its clips would not be order-only).
  """
  classes = tuple(classes)
  partners = []
  for name in classes:
    if name not in synthetic.CLASSES:
      raise ValueError(f"config.demo.classes: unknown class {name!r}; expected names from {synthetic.CLASSES}.")
    partner = synthetic.CLASSES[synthetic.CLASSES.index(name) ^ 1]
    if partner not in classes:
      raise ValueError(f"config.demo.classes has {name!r} without its reverse {partner!r}; the demo needs "
                       "both so that the classes differ only in temporal order.")
    partners.append(classes.index(partner))
  return np.array(partners)


def check_symmetric_sampling(source_frames: int, num_frames: int) -> None:
  """Evaluation must sample the same frames from a clip and from its reverse.

  Otherwise the two would show different frames and the frame-averaging model would not be
  order-blind on the held-out set.
  """
  indices = transforms.eval_frame_indices(source_frames, num_frames)[0]
  if not np.array_equal(np.sort(source_frames - 1 - indices), np.sort(indices)):
    raise ValueError(
        f"config.demo.source_frames={source_frames} with model.num_frames={num_frames}: evaluation samples "
        f"frames {indices.tolist()}, which are not symmetric under reversal; use source_frames = num_frames "
        "times an odd number.")


def make_splits(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """Writes the training and held-out clips; returns their dataset specs.

  Each spec is a copy of `config.data.train` (the config's dataset defaults) pointed at the
  written clips. Horizontal flips are off: a flip turns `moving_left` into `moving_right` and
  clockwise into anticlockwise, so it would swap the labels the demo is about.
  """
  demo = config.demo
  specs = []
  # role=test: no "best" checkpoint is picked on the clips the demo reports.
  for split, videos, seed, role in (("train", demo.train_videos_per_class, 2 * config.seed, "train"),
                                    ("eval", demo.eval_videos_per_class, 2 * config.seed + 1, "test")):
    root = workdir / "data" / split
    synthetic.make_dataset(root, videos_per_class=videos, num_frames=demo.source_frames, height=demo.frame_size,
                           width=demo.frame_size, classes=tuple(demo.classes), seed=seed)
    spec = copy.deepcopy(config.data.train)
    spec.update(name=f"synthetic_{split}", kind="list", list_file=str(root / "frames.txt"),
                labels_csv=str(root / "labels.csv"), descriptions=write_descriptions(root), flip=False, role=role)
    specs.append(spec)
  return specs


# One text per class, in the LLM-description CSV format. The 16 templates would not do on a random
# text tower: its embedding of a text is dominated by the template (same template, other class:
# cosine ~0.87; same class, other template: ~0.53), so the class signal drowns in template noise.
DESCRIPTIONS = {
    "moving_left": "a bright rectangle slides from the right side of the frame to the left side",
    "moving_right": "a bright rectangle slides from the left side of the frame to the right side",
    "moving_up": "a bright rectangle rises from the bottom of the frame to the top",
    "moving_down": "a bright rectangle falls from the top of the frame to the bottom",
    "growing": "a small bright rectangle grows larger until it covers much of the frame",
    "shrinking": "a large bright rectangle shrinks smaller until it is a small patch",
    "rotating_clockwise": "a bright bar turns around its centre in the clockwise direction",
    "rotating_anticlockwise": "a bright bar turns around its centre in the anticlockwise direction",
}


def write_descriptions(root: pathlib.Path) -> str:
  """Writes ROOT/descriptions.csv for the classes in ROOT/labels.csv; returns its path."""
  path = root / "descriptions.csv"
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["SNo", "Class Name", "description"])
    for i, name in enumerate(text_prompts.read_class_names(root / "labels.csv")):
      writer.writerow([i, name, DESCRIPTIONS[name]])
  return str(path)


def held_out_probabilities(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                           spec: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """Class probabilities of every held-out clip under the model trained in `workdir`.

  Returns:
    (float32 `[N, C]` probabilities, int `[N]` labels), in the order of the list file.
  """
  with console.hide_library_warnings():  # orbax warns that the checkpoints it reads are read-only
    model, variables = checkpoint.load_pretrained(workdir)
  source = datasets.make_source(spec, config.data.official_repo, skip_bad=False)
  _, prompts = datasets.class_prompts(spec, config.data.official_repo, model.config.context_length)
  text_embeddings = evaluate.encode_class_texts(model, variables, prompts.tokens)
  batches = datasets.eval_batches(config, source, model.config)
  # Eval batches come in list order; the mask drops the padding.
  scored = [(probs[mask], labels[mask])
            for probs, labels, mask in evaluate.scored_batches(model, variables, batches, text_embeddings)]
  probs, labels = (np.concatenate(parts) for parts in zip(*scored))
  if len(labels) != len(source):
    raise ValueError(f"{spec.list_file}: scored {len(labels)} of its {len(source)} clips")
  return probs, labels


def score(probs: np.ndarray, labels: np.ndarray, partners: np.ndarray) -> Scores:
  """Top-1, direction accuracy and reverse gap of held-out class probabilities.

  Args:
    probs: `[C * V, C]` class probabilities of the clips in list order: V clips per class, class
      by class, clip k of class c the reverse of clip k of class `partners[c]`
      (`ezclip_jax.synthetic`'s layout).
    labels: int `[C * V]` true classes.
    partners: int `[C]` the reverse partner of each class.

  Returns:
    The scores (percentages).
  """
  num_classes = len(partners)
  per_class = len(labels) // num_classes
  if len(labels) != num_classes * per_class or not np.array_equal(labels, np.arange(len(labels)) // per_class):
    raise ValueError("held-out clips are not listed class by class with the same count per class")
  rows = np.arange(len(labels))
  reverse = partners[labels] * per_class + rows % per_class
  return Scores(
      top1=100.0 * float(np.mean(probs.argmax(axis=1) == labels)),
      direction=100.0 * float(np.mean(probs[rows, labels] > probs[rows, partners[labels]])),
      reverse_gap=float(np.abs(probs - probs[reverse]).max()),
      num_clips=len(labels))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Scores]:
  """Trains both models under WORKDIR/{ezclip,frame_average} and scores them on held-out clips.

  Args:
    config: `configs/demo.py` (with `config.demo`).
    workdir: output directory; training resumes from checkpoints already there.

  Returns:
    {"ezclip": Scores, "frame_average": Scores}.
  """
  workdir = pathlib.Path(workdir)
  demo = config.demo
  partners = partner_classes(demo.classes)
  check_symmetric_sampling(demo.source_frames, config.model.num_frames)
  train_spec, eval_spec = make_splits(config, workdir)
  results = {}
  for name, use_prompts in MODELS:
    run_config = copy.deepcopy(config)
    with run_config.unlocked():
      del run_config.demo
      run_config.model.use_prompts = use_prompts
      run_config.data.train = train_spec
      run_config.data.evals = ml_collections.ConfigDict({"synthetic": eval_spec})
    console.show(f"== {TITLES[name]}: training in {workdir / name}")
    train.train_and_evaluate(run_config, workdir / name)
    results[name] = score(*held_out_probabilities(run_config, workdir / name, eval_spec), partners)
  console.show(report(results, demo.classes))
  console.show(predict_hint(workdir))
  return results


def predict_hint(workdir: pathlib.Path) -> str:
  """The command that scores held-out clips with the trained model (`ezclip_jax.predict`)."""
  data = workdir / "data" / "eval"
  return (f"\nTry the trained model on held-out clips (frame folders or video files):\n"
          f"  python -m ezclip_jax.predict --checkpoint {workdir / 'ezclip'} --label-file {data / 'labels.csv'} "
          f"--descriptions {data / 'descriptions.csv'} {data / 'frames' / 'growing_0000'} "
          f"{data / 'frames' / 'shrinking_0000'}")


def report(results: dict[str, Scores], classes) -> str:
  """The demo's console summary."""
  ezclip, average = results["ezclip"], results["frame_average"]
  chance = 100.0 / len(classes)
  return "\n".join([
      "",
      f"Held-out synthetic clips: {ezclip.num_clips}, classes: {', '.join(classes)}.",
      "Each class is its partner played backwards, so only temporal order separates them.",
      f"{'':32}{'top-1':>8}{'direction':>11}",
      f"{TITLES['ezclip']:32}{ezclip.top1:7.1f}%{ezclip.direction:10.1f}%",
      f"{TITLES['frame_average']:32}{average.top1:7.1f}%{average.direction:10.1f}%",
      f"{'chance':32}{chance:7.1f}%{50.0:10.1f}%",
      "top-1: over all classes. direction: the clip scores its own class above its reverse.",
      "Frame averaging encodes each frame alone and averages over time, so a clip and its reverse get",
      f"the same scores (largest difference here: {average.reverse_gap:.1e}); exactly one of the two",
      "is right about the direction: 50%, and top-1 can be at most 50%.",
  ])
