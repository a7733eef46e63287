"""Zero-shot labelling and text search over an index from `python -m ezclip_jax.embed`; nothing is decoded.

  python -m ezclip_jax.search INDEX_DIR "someone juggling" [--top-k 10] [--windows] [--json]
  python -m ezclip_jax.search INDEX_DIR --label-file labels.csv [--windows] [--json]

Search ranks videos (or, with --windows, windows) by cosine similarity between their pooled
embedding and the query's text features: the mean over the 16 templates of the cosine with
each, or, with --descriptions, the query's description when the query is a class of that CSV
and the query as it is otherwise (a training workdir's own descriptions by default, as
predict uses them). Labelling gives each video (window) its top-k classes with
exactly the probabilities predict gives (`evaluate.class_probabilities` on the stored
embedding, the class texts as predict builds them).

The model comes from the index's model.json (or --checkpoint) and must be the one that built
the index. Exit status: 0 done, 2 usage error (including an index of another model).
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ezclip_jax import console
from ezclip_jax import embed
from ezclip_jax import evaluate
from ezclip_jax import model as model_lib
from ezclip_jax import predict
from ezclip_jax import text_prompts
from ezclip_jax import tokenizer

EXIT_OK, EXIT_USAGE = 0, 2


def load_model(index_dir: str, checkpoint_dir: str | None = None) -> tuple[model_lib.EZCLIP, Any, str]:
  """The index's model (or `checkpoint_dir`'s), refused unless it built the index."""
  checkpoint_dir = checkpoint_dir or embed.read_model_file(index_dir)["checkpoint"]
  if not checkpoint_dir:
    raise predict.UsageError(f"{index_dir}/{embed.MODEL_FILE} names no checkpoint; pass --checkpoint.")
  model, variables = predict.load_checkpoint(checkpoint_dir)
  embed.check_model(index_dir, embed.model_identity(model, variables), checkpoint_dir)
  return model, variables, checkpoint_dir


def index_rows(index_dir: str, windows: bool) -> tuple[list[dict], np.ndarray, list[dict]]:
  """Every embedded video (or window) of the index.

  Returns:
    `(rows, embeddings [N, D], failed entries)`; a row is `{"path"}` plus `{"start", "end"}` for windows.
  """
  entries = embed.read_manifest(index_dir)
  if windows and embed.read_model_file(index_dir).get("windows") is None:
    raise predict.UsageError(f"{index_dir} holds no window embeddings; build it with python -m ezclip_jax.embed "
                             "--windows.")
  rows, vectors, failed = [], [], []
  for path in sorted(entries):
    entry = entries[path]
    if entry["error"] is not None:
      failed.append(entry)
      continue
    arrays = embed.load_embeddings(index_dir, entry)
    if windows:
      rows += [{"path": path, "start": float(s), "end": float(e)} for s, e in arrays["window_times"]]
      vectors += list(arrays["windows"])
    else:
      rows.append({"path": path})
      vectors.append(arrays["video"])
  dim = embed.read_model_file(index_dir)["model"]["embed_dim"]
  return rows, np.asarray(vectors, np.float32).reshape(-1, dim), failed


def query_texts(query: str, descriptions_csv: str | None) -> list[str]:
  """The texts a query stands for: its 16 templates, its description, or itself."""
  if descriptions_csv is None:
    return [row[0] for row in text_prompts.template_texts([query])]
  try:
    return text_prompts.read_descriptions(descriptions_csv, [query])
  except KeyError:
    return [query]


def similarities(model: model_lib.EZCLIP, variables: Any, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
  """float32 `[N]`: mean over `texts` of the cosine between each embedding and the text's features."""
  tokens = tokenizer.tokenize(list(texts), context_length=model.config.context_length, truncate=True)
  features = np.asarray(evaluate.encode_class_texts(model, variables, tokens[:, None]), np.float32)[:, 0]
  features = features / np.linalg.norm(features, axis=-1, keepdims=True)
  videos = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
  return (videos @ features.T).mean(axis=1)


def label_probabilities(embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
  """float32 `[N, C]`: predict's class probabilities from pooled embeddings `[N, D]`."""
  # A pooled embedding is one "frame" whose mean over time is itself.
  return np.asarray(evaluate.class_probabilities(embeddings[:, None, None, :], text_embeddings))


# ------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m ezclip_jax.search", description=__doc__.split("\n\n")[0])
  parser.add_argument("index", metavar="INDEX_DIR", help="an index from python -m ezclip_jax.embed")
  parser.add_argument("query", nargs="?", help="text to search for")
  labels = parser.add_mutually_exclusive_group()
  labels.add_argument("--labels", help="label every video with these comma-separated class names")
  labels.add_argument("--label-file", help="label every video: one class name per line, or an 'id,name' CSV")
  texts = parser.add_mutually_exclusive_group()
  texts.add_argument("--descriptions", help="LLM description CSV (SNo,Class Name,description); default: the one "
                                            "the model was trained with, if any")
  texts.add_argument("--templates", action="store_true", help="the 16 templates, whatever the model was trained with")
  parser.add_argument("--windows", action="store_true", help="rank or label windows instead of whole videos")
  parser.add_argument("--top-k", type=int, default=None, help="results (default 10) or classes per video (5)")
  parser.add_argument("--json", action="store_true", help="print JSON")
  parser.add_argument("--checkpoint", help="the model (default: the one model.json names)")
  parser.add_argument("--cache-dir", default=None, help="text feature cache (as predict)")
  parser.add_argument("--no-cache", action="store_true", help="do not read or write the text feature cache")
  console.add_log_level_argument(parser, default="error")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  with console.log_level(args.log_level):
    try:
      return _search(args)
    except (predict.UsageError, embed.IndexMismatch) as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_USAGE


def _search(args: argparse.Namespace) -> int:
  labelling = args.labels is not None or args.label_file is not None
  if labelling == (args.query is not None):
    raise predict.UsageError("give a query, or --labels / --label-file to label the index (not both).")
  if args.top_k is not None and args.top_k < 1:
    raise predict.UsageError(f"--top-k must be at least 1, got {args.top_k}.")
  class_names = None
  if labelling:
    class_names = predict.parse_labels(args.labels) if args.labels is not None else predict.read_label_file(
        args.label_file)
  rows, vectors, failed = index_rows(args.index, args.windows)
  model, variables, checkpoint_dir = load_model(args.index, args.checkpoint)
  if labelling:
    # The texts predict would use for this checkpoint, so the probabilities are predict's.
    descriptions = predict.training_descriptions(checkpoint_dir, args.descriptions, args.templates, class_names)
    cache_dir = None if args.no_cache else (args.cache_dir or predict.default_cache_dir())
    texts = predict.text_features(model, variables, class_names, descriptions, cache_dir)
    probs = label_probabilities(vectors, texts.embeddings) if len(vectors) else np.zeros((0, len(class_names)))
    print(_labels_output(rows, probs, failed, class_names, min(args.top_k or 5, len(class_names)), args.json))
  else:
    descriptions = None if args.templates else args.descriptions or _trained_descriptions(checkpoint_dir)
    scores = similarities(model, variables, vectors, query_texts(args.query, descriptions))
    order = np.argsort(-scores, kind="stable")[:args.top_k or 10]
    print(_search_output([rows[i] | {"similarity": float(scores[i])} for i in order], args.json))
  return EXIT_OK


def _trained_descriptions(checkpoint_dir: str) -> str | None:
  """The description CSV the checkpoint's training used (`text_prompts.save_setup`), if it is still there."""
  setup = text_prompts.load_setup(checkpoint_dir)
  trained = setup and setup["descriptions"]
  if trained and os.path.isfile(trained):
    print(f"note: queries that name a class of {trained} (which {checkpoint_dir} was trained with) use its "
          "description (--templates for the 16 templates).", file=sys.stderr)
    return trained
  return None


def _labels_output(rows, probs, failed, class_names, top_k: int, as_json: bool) -> str:
  if as_json:
    out = [row | {"predictions": [{"label": name, "probability": p}
                                  for name, p in predict.Prediction(row["path"], prob).top(class_names, top_k)]}
           for row, prob in zip(rows, probs)]
    return json.dumps(out + [{"path": e["path"], "error": e["error"]} for e in failed], indent=2)
  predictions = [predict.Prediction(_row_name(row), prob) for row, prob in zip(rows, probs)]
  predictions += [predict.Prediction(e["path"], error=e["error"]) for e in failed]
  return predict.format_table(predictions, class_names, top_k)


def _search_output(results: list[dict], as_json: bool) -> str:
  if as_json:
    return json.dumps(results, indent=2)
  lines = [f"{'rank':>4}  {'similarity':>10}  video"]
  lines += [f"{rank:>4}  {r['similarity']:10.4f}  {_row_name(r)}" for rank, r in enumerate(results, start=1)]
  return "\n".join(lines)


def _row_name(row: dict) -> str:
  return row["path"] if "start" not in row else f"{row['path']} [{row['start']:.2f}-{row['end']:.2f} s]"


if __name__ == "__main__":
  sys.exit(main())
