"""Tokenizer ids against open_clip's SimpleTokenizer (OpenAI CLIP's BPE) on varied text."""

import gzip
import json
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ezclip_jax import tokenizer as tokenizer_lib
from ezclip_jax.tokenizer import tokenize
from tests import references

# Label lists of the official EZ-CLIP repository (lists/ucf_labels.csv, lists/hmdb51_labels.csv).
UCF101_CLASSES = [
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards", "BlowDryHair",
    "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag", "BoxingSpeedBag", "BreastStroke",
    "BrushingTeeth", "CleanAndJerk", "CliffDiving", "CricketBowling", "CricketShot", "CuttingInKitchen",
    "Diving", "Drumming", "Fencing", "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl",
    "GolfSwing", "Haircut", "Hammering", "HammerThrow", "HandstandPushups", "HandstandWalking",
    "HeadMassage", "HighJump", "HorseRace", "HorseRiding", "HulaHoop", "IceDancing", "JavelinThrow",
    "JugglingBalls", "JumpingJack", "JumpRope", "Kayaking", "Knitting", "LongJump", "Lunges",
    "MilitaryParade", "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars", "PizzaTossing", "PlayingCello",
    "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar", "PlayingPiano", "PlayingSitar",
    "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse", "PullUps", "Punch", "PushUps", "Rafting",
    "RockClimbingIndoor", "RopeClimbing", "Rowing", "SalsaSpin", "ShavingBeard", "Shotput", "SkateBoarding",
    "Skiing", "Skijet", "SkyDiving", "SoccerJuggling", "SoccerPenalty", "StillRings", "SumoWrestling",
    "Surfing", "Swing", "TableTennisShot", "TaiChi", "TennisSwing", "ThrowDiscus", "TrampolineJumping",
    "Typing", "UnevenBars", "VolleyballSpiking", "WalkingWithDog", "WallPushups", "WritingOnBoard", "YoYo",
]
HMDB51_CLASSES = [
    "brush hair", "cartwheel", "catch", "chew", "clap", "climb", "climb stairs", "dive", "draw sword",
    "dribble", "drink", "eat", "fall floor", "fencing", "flic flac", "golf", "handstand", "hit", "hug",
    "jump", "kick ball", "kick", "kiss", "laugh", "pick", "pour", "pullup", "punch", "push", "pushup",
    "ride bike", "ride horse", "run", "shake hands", "shoot ball", "shoot bow", "shoot gun", "sit", "situp",
    "smile", "smoke", "somersault", "stand", "swing baseball", "sword exercise", "sword", "talk", "throw",
    "turn", "walk", "wave",
]
# The 16 prompt templates of the official utils/Text_Prompt.py.
PROMPT_TEMPLATES = [
    "a photo of action {}", "a picture of action {}", "Human action of {}", "{}, an action",
    "{} this is an action", "{}, a video of action", "Playing action of {}", "{}",
    "Playing a kind of action, {}", "Doing a kind of action, {}", "Look, the human is {}",
    "Can you recognize the action of {}?", "Video classification of {}", "A video of {}",
    "The man is {}", "The woman is {}",
]

MISC_TEXTS = [
    # Empty and whitespace only.
    "", " ", "   \t\n  ", "\u3000", "\u00a0\u2003\u2029", "\n\n\n",
    # Accents, other scripts, combining marks, case mapping.
    "café déjà vu", "naïve façade", "Ångström Øresund", "Crème Brûlée", "e\u0301le\u0300ve", "ÉCOLE ÜBER",
    "STRASSE straße", "İstanbul ıi", "ΣΊΣΥΦΟΣ σοφός", "Привет, мир", "我喜欢打篮球", "日本語のテキスト",
    "スケートボード", "태권도 연습", "ตะกร้อ มวยไทย", "योग करना", "رياضة كرة القدم", "שלום עולם",
    "mixed עברית and English", "العربية 123 abc", "ﬁnal ﬂow", "ＡＢＣ　１２３", "Ⅻ ① ¼ ½ ²",
    # Emoji: single, skin tone, ZWJ sequence, flags, keycap, variation selectors.
    "🏀🏀 dunk 🔥", "thumbs 👍🏽 up", "family 👨‍👩‍👧‍👦", "🇯🇵 🇺🇸", "1️⃣ ❤️ ☺︎", "😀😃😄😁😆😅🤣😂",
    # Punctuation and symbols.
    "Hello, World!", "!!!???...", "a--b---c", "(hello) [world] {x}", "@#$%^&*", "foo_bar-baz", "x+y=z",
    "e-mail@example.com", "https://example.com/a?b=c&d=e#f", "C:\\path\\to\\file.txt", "50% off!",
    "“quoted” ‘text’", "it’s", "— … •", "§¶†‡", "<b>bold</b>", "a</w>b", "|pipe|", "~tilde~ `tick`",
    "'", "''", "'''s",
    # Numbers.
    "12345", "3.14159", "1,000,000", "2nd 3rd 21st", "-42", "0x1F", "١٢٣٤", "1e-5 2E+10", "00007",
    # Contractions, including upper case and case folding ("ſ" is a long s).
    "don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "IT'S", "WE'RE", "DON'T",
    "rock 'n' roll", "'s's't're've'm'll'd", "it'ſ", "o'clock", "'twas", "y'all'd've",
    # HTML entities, single and double escaped.
    "&amp;", "Tom &amp; Jerry", "&#39;hello&#39;", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;",
    "&amp;lt;tag&amp;gt;", "&nbsp;space&nbsp;", "&eacute;t&eacute;", "&#x1F600;", "&quot;quote&quot;",
    "&#28;x", "AT&T", "&unknown;",
    # A literal "<" turns off ftfy's own unescaping, leaving only the double html.unescape.
    "<i>Tom &amp;amp; Jerry</i>", "x < y &amp;lt; z", "< &amp;#39;s &amp;",
    # Mojibake that ftfy repairs, and control characters it removes.
    "cafÃ©", "schÃ¶n", "â€œquotedâ€\x9d", "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.",
    "Ã¼ber", "a\x00b\x07c\x1bd", "\ufeffBOM", "line\r\nbreak", "tab\tseparated\tvalues", "a\x1cb\x1fc",
    "\x1b[36mcolour\x1b[0m",
    # Whitespace inside and around text, mixed case, repeated and long words.
    "jump\n\nrope\t\tfast", "   leading and trailing   ", "BasketBall DUNK", "aaaaaaaaaaaaaaaaaaaa",
    "zzzzzzzzzz", "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious",
    "a video of archery", "A Video Of Archery", "playing_guitar", "ApplyEyeMakeup", "apply eye makeup",
    "<|endoftex|>", "<|startoftext", "start of text",
]

LONG_TEXTS = [
    "the quick brown fox jumps over the lazy dog " * 10,
    "1234567890" * 10,
    "🏀" * 200,
    "我喜欢打篮球" * 60,
    "word, " * 60,
    "&amp; " * 100,
    "Playing a kind of action, " + " ".join(UCF101_CLASSES),
    " ".join(HMDB51_CLASSES),
]


@pytest.fixture(scope="module")
def reference():
  return references.import_open_clip().tokenizer


@pytest.fixture(scope="module")
def ref_tokenizer(reference):
  return reference.SimpleTokenizer()


def _random_texts(count: int, seed: int = 0) -> list[str]:
  pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
          "      \t\n.,;:!?'\"-_()[]{}&#/\\@*+=<>|~^%$"
          "éèêëàâäçñøåßÉÀÖſ’“”—…ÃƒÂ©"
          "我喜欢打篮球中国人日本語テスト한국어ไทย"
          "🏀🔥😀👍🏽❤️\u200d\u0301"
          "عربيשלום١٢")
  rng = random.Random(seed)
  return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def _class_prompts() -> list[str]:
  names = UCF101_CLASSES + HMDB51_CLASSES
  return names + [template.format(name) for template in PROMPT_TEMPLATES for name in names]


def _mismatches(texts, ref_tokenizer) -> list[str]:
  ours = tokenizer_lib.get_tokenizer()
  return [f"{text!r}: ours {ours.encode(text)} vs open_clip {ref_tokenizer.encode(text)}"
          for text in texts if ours.encode(text) != ref_tokenizer.encode(text)]


def _no_special_literals(texts, reference) -> None:
  # open_clip names its special tokens differently from OpenAI ("<start_of_text>"),
  # so these literals are tested separately against hand-derived ids.
  literals = ["<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>"]
  for text in texts:
    cleaned = reference._clean_lower(text)
    assert not any(literal in cleaned for literal in literals), text


def test_class_name_lists_are_complete():
  assert len(UCF101_CLASSES) == len(set(UCF101_CLASSES)) == 101
  assert len(HMDB51_CLASSES) == len(set(HMDB51_CLASSES)) == 51
  assert len(PROMPT_TEMPLATES) == len(set(PROMPT_TEMPLATES)) == 16


def test_vocabulary_matches_reference(ref_tokenizer):
  ours = tokenizer_lib.get_tokenizer()
  assert ours.vocab_size == len(ref_tokenizer.encoder) == 49408
  assert (ours.start_id, ours.end_id) == (49406, 49407)
  assert [ours.decode([i]) for i in range(49406)] == [ref_tokenizer.decode([i]) for i in range(49406)]
  assert ours.decode([49406, 49407]) == "<|startoftext|><|endoftext|>"


def test_class_names_and_prompts_match_reference(reference, ref_tokenizer):
  texts = _class_prompts()
  assert len(texts) == 152 * 17
  _no_special_literals(texts, reference)
  assert _mismatches(texts, ref_tokenizer) == []


def test_varied_texts_match_reference(reference, ref_tokenizer):
  texts = MISC_TEXTS + LONG_TEXTS + _random_texts(200)
  assert len(texts) >= 300
  _no_special_literals(texts, reference)
  assert _mismatches(texts, ref_tokenizer) == []


def test_tokenize_arrays_match_reference(reference, ref_tokenizer):
  boundary = ["a " * n for n in (74, 75, 76, 77)]  # 76, 77, 78, 79 tokens with start/end
  texts = _class_prompts()[::7] + MISC_TEXTS + LONG_TEXTS + boundary + _random_texts(100, seed=1)
  lengths = np.array([len(ref_tokenizer.encode(text)) + 2 for text in texts])
  fits = lengths <= 77
  assert fits.sum() > 300 and (~fits).sum() >= 9
  fitting = [text for text, ok in zip(texts, fits) if ok]
  long = [text for text, ok in zip(texts, fits) if not ok]

  ours = tokenize(fitting)
  assert ours.dtype == np.int32 and ours.shape == (len(fitting), 77)
  np.testing.assert_array_equal(ours, reference.tokenize(fitting).numpy())
  truncated = tokenize(long, truncate=True)
  np.testing.assert_array_equal(truncated, reference.tokenize(long).numpy())
  assert (truncated[:, -1] == 49407).all() and (truncated[:, 0] == 49406).all()
  np.testing.assert_array_equal(tokenize(texts, context_length=16, truncate=True),
                                reference.tokenize(texts, context_length=16).numpy())


def test_single_string_gives_one_row(ref_tokenizer):
  np.testing.assert_array_equal(tokenize("a video of archery"), tokenize(["a video of archery"]))
  expected = [49406, *ref_tokenizer.encode("a video of archery"), 49407]
  assert tokenize("a video of archery")[0, :6].tolist() == expected
  assert tokenize([]).shape == (0, 77)
  assert tokenize("")[0].tolist() == [49406, 49407] + [0] * 75


def test_too_long_text_raises_naming_it():
  tokenize("a " * 75)  # 77 tokens: fits exactly
  with pytest.raises(ValueError) as error:
    tokenize(["fine", "a " * 76])
  message = str(error.value)
  assert "texts[1]" in message and "'a a a a" in message
  assert "78 tokens" in message and "context_length=77" in message

  text = "a long description of somebody playing the guitar " * 20
  with pytest.raises(ValueError, match="truncate=True") as error:
    tokenize(text)
  message = str(error.value)
  assert text[:50] in message and len(message) < 300
  assert f"{len(text.split()) + 2} tokens" in message


def test_special_token_literals_follow_openai(ref_tokenizer):
  # OpenAI's pre-tokenizer keeps its special-token names whole; open_clip's differ.
  a = ref_tokenizer.encode("a")
  assert a == [320]
  assert tokenize("<|startoftext|>a<|endoftext|>")[0, :5].tolist() == [49406, 49406, 320, 49407, 49407]
  assert tokenize("<|ENDOFTEXT|>")[0, :3].tolist() == [49406, 49407, 49407]
  ours = tokenizer_lib.get_tokenizer()
  assert ours.encode("<start_of_text>") == ref_tokenizer.encode("< start _ of _ text >")


def test_decode(ref_tokenizer):
  ours = tokenizer_lib.get_tokenizer()
  assert ours.decode(ours.encode("A Video  of Archery")) == "a video of archery "
  assert ours.decode(ours.encode("café 我 🏀")) == "café 我 🏀 "
  for text in ["Hello, World!", "don't stop", "&amp; 12.5%", "👨‍👩‍👧‍👦 ΣΊΣΥΦΟΣ"] + _random_texts(20, seed=2):
    ids = ours.encode(text)
    assert ours.decode(ids) == ref_tokenizer.decode(ids), text
    assert ours.decode(np.array(ids, np.int32)) == ref_tokenizer.decode(ids), text
  with pytest.raises(ValueError, match="49408"):
    ours.decode([320, 49408])


def test_bad_input_errors(tmp_path):
  with pytest.raises(TypeError, match=r"texts\[1\] is a bytes"):
    tokenize(["ok", b"bytes"])
  with pytest.raises(ValueError, match="context_length=1"):
    tokenize("a", context_length=1)
  not_gzip = tmp_path / "vocab.txt.gz"
  not_gzip.write_text("plain text")
  with pytest.raises(ValueError, match="vocab.txt.gz: not a readable gzipped"):
    tokenizer_lib.Tokenizer(not_gzip)
  bad_line = tmp_path / "bad.txt.gz"
  bad_line.write_bytes(gzip.compress("#version: 0.2\ni n\nthree parts here\n".encode()))
  with pytest.raises(ValueError, match=r"bad.txt.gz:3: expected a merge rule"):
    tokenizer_lib.Tokenizer(bad_line)
  short = tmp_path / "short.txt.gz"
  short.write_bytes(gzip.compress("#version: 0.2\ni n\nt h".encode()))
  with pytest.raises(ValueError, match="has 2 merge rules, CLIP needs 48894"):
    tokenizer_lib.Tokenizer(short)


def test_packaged_vocabulary_found_from_elsewhere(tmp_path, ref_tokenizer):
  # A copy of the package outside the checkout stands for a non-editable install;
  # running from another directory proves the vocabulary is found via the package.
  package = pathlib.Path(tokenizer_lib.__file__).parent
  site = tmp_path / "site"
  shutil.copytree(package, site / "ezclip_jax", ignore=shutil.ignore_patterns("__pycache__"))
  workdir = tmp_path / "elsewhere"
  workdir.mkdir()
  script = ("import json, sys\n"
            "from ezclip_jax.tokenizer import tokenize\n"
            "import ezclip_jax\n"
            "print(json.dumps([ezclip_jax.__file__, 'torch' in sys.modules,"
            " tokenize('a video of archery')[0, :6].tolist()]))\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
                          check=False)
  assert result.returncode == 0, result.stderr
  module_file, imported_torch, ids = json.loads(result.stdout.strip().splitlines()[-1])
  assert pathlib.Path(module_file).is_relative_to(site)
  assert not imported_torch
  assert ids == [49406, *ref_tokenizer.encode("a video of archery"), 49407]
