"""OpenAI CLIP's text tokenizer: byte-level BPE over a 49408-token vocabulary.

Text is cleaned (ftfy, HTML entities, whitespace, lower case), split into words by
CLIP's pre-tokenizer, each word's UTF-8 bytes are merged by BPE into vocabulary
tokens, and every text becomes `<|startoftext|> ... <|endoftext|>` padded with 0
to the context length. Ids are identical to OpenAI CLIP's `clip.tokenize`.

The vocabulary file ships as package data (`ezclip_jax/assets`, MIT-licensed by
OpenAI; see NOTICE).
"""

from collections.abc import Iterable, Sequence
import functools
import gzip
import html
import importlib.resources
import os
import pathlib
import zlib

import ftfy
import numpy as np
import regex

CONTEXT_LENGTH = 77
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 48894
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

# CLIP's pre-tokenizer: the special tokens, English contractions, runs of letters,
# single digits, runs of other non-space symbols. IGNORECASE still matters after
# lower-casing: case folding lets "'ſ" (long s) match "'s", as in OpenAI's code.
_PRE_TOKEN = regex.compile(
    "|".join([regex.escape(START_TOKEN), regex.escape(END_TOKEN),
              "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
              r"\p{L}+", r"\p{N}", r"[^\s\p{L}\p{N}]+"]),
    regex.IGNORECASE)
_WHITESPACE = regex.compile(r"\s+")
_MAX_TEXT_IN_ERROR = 80


def _byte_symbols() -> list[tuple[int, str]]:
  """`(byte, symbol)` for all 256 bytes, in vocabulary-id order.

  BPE works on strings, so each byte gets a visible stand-in character: bytes that
  are printable Latin-1 characters stand for themselves; the other 68 (controls,
  space, NBSP, soft hyphen) get code points 256, 257, ... in byte order.
  """
  printable = [*range(0x21, 0x7f), *range(0xa1, 0xad), *range(0xae, 0x100)]
  unprintable = sorted(set(range(256)) - set(printable))
  return ([(b, chr(b)) for b in printable]
          + [(b, chr(256 + i)) for i, b in enumerate(unprintable)])


def _read_merges(path: str | os.PathLike | None) -> list[tuple[str, str]]:
  """The first `NUM_MERGES` merge rules of a gzipped BPE file, highest priority first."""
  if path is None:
    resource = importlib.resources.files("ezclip_jax") / "assets" / VOCAB_FILE
  else:
    resource = pathlib.Path(path)
  try:
    lines = gzip.decompress(resource.read_bytes()).decode("utf-8").split("\n")
  except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
    raise ValueError(f"{resource}: not a readable gzipped UTF-8 BPE merges file ({e}).") from e
  # Line 1 is a version header; CLIP uses only the next NUM_MERGES lines.
  merges = []
  for line_number, line in enumerate(lines[1:NUM_MERGES + 1], start=2):
    pair = tuple(line.split())
    if len(pair) != 2:
      raise ValueError(f"{resource}:{line_number}: expected a merge rule 'left right', got {line!r}.")
    merges.append(pair)
  if len(merges) != NUM_MERGES:
    raise ValueError(f"{resource}: has {len(merges)} merge rules, CLIP needs {NUM_MERGES}.")
  return merges


def _clean(text: str) -> str:
  """CLIP's normalisation; HTML is unescaped twice to undo double-escaped web text."""
  text = html.unescape(html.unescape(ftfy.fix_text(text)))
  return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
  """CLIP's byte-level BPE tokenizer.

  Args:
    vocab_path: a gzipped BPE merges file; `None` loads the packaged OpenAI one.
  """

  def __init__(self, vocab_path: str | os.PathLike | None = None):
    self._merges = _read_merges(vocab_path)
    self._rank = {pair: rank for rank, pair in enumerate(self._merges)}
    byte_symbols = _byte_symbols()
    self._symbol_of_byte = {b: symbol for b, symbol in byte_symbols}
    self._byte_of_symbol = {ord(symbol): b for b, symbol in byte_symbols}
    symbols = [symbol for _, symbol in byte_symbols]
    self._vocab = [*symbols, *(s + END_OF_WORD for s in symbols),
                   *(left + right for left, right in self._merges), START_TOKEN, END_TOKEN]
    self._id = {token: i for i, token in enumerate(self._vocab)}
    if len(self._id) != VOCAB_SIZE:
      raise ValueError(f"{vocab_path or VOCAB_FILE}: merge rules give {len(self._id)} distinct tokens, "
                       f"CLIP has {VOCAB_SIZE}.")
    self.start_id = self._id[START_TOKEN]
    self.end_id = self._id[END_TOKEN]
    # Word -> ids. Grows with the distinct words seen; class names and prompts
    # repeat a small vocabulary, so this makes re-tokenising them nearly free.
    # Special tokens map to themselves, without the end-of-word marker.
    self._word_cache = {START_TOKEN: (self.start_id,), END_TOKEN: (self.end_id,)}

  @property
  def vocab_size(self) -> int:
    return len(self._vocab)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without start/end tokens and without length limit."""
    if not isinstance(text, str):
      raise TypeError(f"Tokenizer.encode expects a str, got {type(text).__name__}: {text!r:.80}")
    ids = []
    for word in _PRE_TOKEN.findall(_clean(text)):
      ids.extend(self._word_ids(word.encode("utf-8").decode("latin-1").translate(self._symbol_of_byte)))
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of token ids; each word is followed by a space, special tokens appear by name.

    Like OpenAI's decoder, this gives the cleaned, lower-cased text, not the input
    (e.g. "Hello, world" -> "hello , world "); padding zeros would decode as "!".
    """
    tokens = []
    for token_id in ids:
      token_id = int(token_id)
      if not 0 <= token_id < len(self._vocab):
        raise ValueError(f"token id {token_id} is outside the vocabulary [0, {len(self._vocab)}).")
      tokens.append(self._vocab[token_id])
    raw = "".join(tokens).translate(self._byte_of_symbol).encode("latin-1")
    return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

  def _word_ids(self, word: str) -> tuple[int, ...]:
    ids = self._word_cache.get(word)
    if ids is None:
      ids = tuple(self._id[part] for part in self._bpe(word))
      self._word_cache[word] = ids
    return ids

  def _bpe(self, word: str) -> list[str]:
    """Splits a word (in byte symbols) into vocabulary tokens.

    Starts from single symbols, the last one marked as word end, then repeatedly
    applies the highest-priority merge rule present, to every non-overlapping
    occurrence from left to right.
    """
    parts = [*word[:-1], word[-1] + END_OF_WORD]
    no_merge = len(self._merges)
    while len(parts) > 1:
      rank = min(self._rank.get(pair, no_merge) for pair in zip(parts, parts[1:]))
      if rank == no_merge:
        break
      left, right = self._merges[rank]
      merged, i = [], 0
      while i < len(parts):
        if parts[i] == left and i + 1 < len(parts) and parts[i + 1] == right:
          merged.append(left + right)
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return parts


@functools.cache
def get_tokenizer() -> Tokenizer:
  """The packaged OpenAI CLIP tokenizer, loaded once per process."""
  return Tokenizer()


def _shorten(text: str) -> str:
  if len(text) <= _MAX_TEXT_IN_ERROR:
    return text
  return text[:_MAX_TEXT_IN_ERROR - 3] + "..."


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> np.ndarray:
  """Tokenizes texts for CLIP's text encoder.

  Args:
    texts: one text or a sequence of N texts.
    context_length: tokens per row, start and end tokens included (CLIP: 77).
    truncate: cut texts that are too long, keeping the end token last; otherwise
      they raise ValueError.

  Returns:
    int32 `[N, context_length]`: start token, text tokens, end token, zeros.
  """
  if context_length < 2:
    raise ValueError(f"context_length={context_length} cannot hold the start and end tokens; need >= 2.")
  texts = [texts] if isinstance(texts, str) else list(texts)
  tokenizer = get_tokenizer()
  ids = np.zeros((len(texts), context_length), np.int32)
  for row, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{row}] is a {type(text).__name__}, expected str: {text!r:.80}")
    tokens = [tokenizer.start_id, *tokenizer.encode(text), tokenizer.end_id]
    if len(tokens) > context_length:
      if not truncate:
        raise ValueError(f"texts[{row}] {_shorten(text)!r} is {len(tokens)} tokens long (start/end "
                         f"included), more than context_length={context_length}; shorten it or pass "
                         "truncate=True.")
      tokens = tokens[:context_length - 1] + [tokenizer.end_id]
    ids[row, :len(tokens)] = tokens
  return ids
