"""Class texts for zero-shot video classification: the official 16 templates or LLM descriptions.

Texts follow the official `utils/Text_Prompt.py`: a class name has underscores replaced by
spaces and is put into each of `TEMPLATES`; with an LLM description CSV
(`SNo,Class Name,description`, as in the official `GPT_discription/`) each class instead has
one text, its description with newlines removed, looked up by the class name exactly as the
label CSV spells it. Training pairs each clip with one of its class's texts chosen at random;
evaluation averages the class softmax over the texts (`ensemble_probabilities`).
"""

import csv
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ezclip_jax import tokenizer

TEMPLATES: tuple[str, ...] = (
    "a photo of action {}", "a picture of action {}", "Human action of {}", "{}, an action",
    "{} this is an action", "{}, a video of action", "Playing action of {}", "{}",
    "Playing a kind of action, {}", "Doing a kind of action, {}", "Look, the human is {}",
    "Can you recognize the action of {}?", "Video classification of {}", "A video of {}",
    "The man is {}", "The woman is {}",
)


def read_class_names(labels_csv: str | os.PathLike) -> tuple[str, ...]:
  """Reads a label CSV: an `id,name` header, then rows with ids 0, 1, 2, ... in order.

  Args:
    labels_csv: the file (official `lists/*.csv` and `*_class_list.csv` load as-is).

  Returns:
    Class names indexed by label id.
  """
  with open(labels_csv, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip().lower() for c in rows[0]] != ["id", "name"]:
    header = ",".join(rows[0]) if rows else "an empty file"
    raise ValueError(f"{labels_csv}:1: expected the header 'id,name', got {header!r}.")
  names = []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != 2 or row[0].strip() != str(len(names)):
      raise ValueError(f"{labels_csv}:{line}: expected '{len(names)},<class name>' (ids in order from 0), "
                       f"got {','.join(row)!r}.")
    names.append(row[1].strip())
  if not names:
    raise ValueError(f"{labels_csv}: no classes listed.")
  return tuple(names)


def template_texts(class_names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> list[list[str]]:
  """Every class in every template.

  Returns:
    `[K][C]` texts for K templates and C classes.
  """
  return [[template.format(name.replace("_", " ")) for name in class_names] for template in templates]


def read_descriptions(descriptions_csv: str | os.PathLike, class_names: Sequence[str]) -> list[str]:
  """Looks up each class's LLM description.

  Args:
    descriptions_csv: `SNo,Class Name,description` rows; descriptions may span lines.
    class_names: as spelled in the label CSV.

  Returns:
    `[C]` descriptions with newlines removed (as the official code does).
  """
  with open(descriptions_csv, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  table = {}
  for row in rows[1:]:
    if len(row) >= 3:
      # The official code reads in text mode (CR LF -> LF) and deletes the LFs.
      table[row[1]] = row[2].replace("\r", "").replace("\n", "")
  missing = [name for name in class_names if name not in table]
  if missing:
    raise KeyError(f"{descriptions_csv} has no description for class {missing[0]!r} "
                   f"({len(missing)} of {len(class_names)} classes missing).")
  return [table[name] for name in class_names]


@dataclasses.dataclass(frozen=True, eq=False)
class Prompts:
  """All texts of a class list, tokenised once.

  Attributes:
    texts: `[K][C]` strings.
    tokens: int32 `[K, C, context_length]`.
  """
  texts: tuple[tuple[str, ...], ...]
  tokens: np.ndarray

  @property
  def num_texts(self) -> int:
    return self.tokens.shape[0]


@functools.lru_cache(maxsize=16)
def _build_prompts(class_names: tuple[str, ...], descriptions_csv: str | None, context_length: int,
                   truncate: bool) -> Prompts:
  if descriptions_csv is None:
    texts = template_texts(class_names)
  else:
    texts = [read_descriptions(descriptions_csv, class_names)]
  tokens = np.stack([tokenizer.tokenize(row, context_length=context_length, truncate=truncate) for row in texts])
  tokens.flags.writeable = False
  return Prompts(tuple(tuple(row) for row in texts), tokens)


def build_prompts(class_names: Sequence[str], descriptions_csv: str | os.PathLike | None = None,
                  context_length: int = tokenizer.CONTEXT_LENGTH, truncate: bool = False) -> Prompts:
  """Texts and tokens for `class_names`: the 16 templates, or the LLM descriptions.

  Cached per process: the same arguments return the same (read-only) arrays.

  Args:
    class_names: `[C]` names in label order.
    descriptions_csv: an LLM description CSV; None for the templates.
    context_length: tokens per text.
    truncate: cut over-long texts instead of raising (the official code raises).

  Returns:
    `Prompts` with K = 16 (templates) or 1 (descriptions).
  """
  csv_path = None if descriptions_csv is None else os.fspath(descriptions_csv)
  return _build_prompts(tuple(class_names), csv_path, context_length, truncate)


def overlong_texts(texts: Sequence[Sequence[str]], context_length: int = tokenizer.CONTEXT_LENGTH
                   ) -> dict[int, tuple[str, int]]:
  """Texts that `tokenize(..., truncate=True)` cuts: {class position: (its longest text, tokens)}.

  Args:
    texts: `[K][C]` (`Prompts.texts`).
    context_length: tokens per text, start and end included.
  """
  coder = tokenizer.get_tokenizer()
  longest: dict[int, tuple[str, int]] = {}
  for row in texts:
    for position, text in enumerate(row):
      length = len(coder.encode(text)) + 2  # start and end tokens
      if length > context_length and length > longest.get(position, ("", 0))[1]:
        longest[position] = (text, length)
  return longest


# ----------------------------------------------------------------- a training's text setup

SETUP_FILE = "text_setup.json"


def save_setup(workdir: str | os.PathLike, descriptions_csv: str | os.PathLike | None) -> None:
  """Records in WORKDIR/text_setup.json which class texts a training uses: the 16 templates or an
  LLM description CSV (its absolute path and sha256), so predicting from the workdir can use them too."""
  setup = {"texts": "templates", "descriptions": None, "descriptions_sha256": None}
  if descriptions_csv:
    path = pathlib.Path(descriptions_csv).absolute()
    setup.update(texts="descriptions", descriptions=str(path),
                 descriptions_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
  target = pathlib.Path(workdir) / SETUP_FILE
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f".{SETUP_FILE}.{os.getpid()}.partial")
  tmp.write_text(json.dumps(setup, indent=2) + "\n")
  os.replace(tmp, target)


def load_setup(directory: str | os.PathLike) -> dict | None:
  """WORKDIR/text_setup.json (`save_setup`), or None where there is none (e.g. converted checkpoints)."""
  path = pathlib.Path(directory) / SETUP_FILE
  if not path.is_file():
    return None
  return json.loads(path.read_text())


def sample_text_tokens(tokens: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Picks one text of each sample's class, uniformly over the K texts (official training).

  Args:
    tokens: int32 `[K, C, L]`.
    labels: int `[B]` class ids.
    rng: random generator.

  Returns:
    int32 `[B, L]`.
  """
  labels = np.asarray(labels)
  return tokens[rng.integers(0, tokens.shape[0], size=labels.shape), labels]


@jax.jit
def ensemble_probabilities(logits: jax.Array) -> jax.Array:
  """Class probabilities averaged over texts, as the official evaluation does.

  Args:
    logits: `[K, B, C]` scaled video-text similarities (official: 100 * cosine) for K texts
      per class.

  Returns:
    float32 `[B, C]`: the mean over K of the softmax over C.
  """
  return jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=0)
