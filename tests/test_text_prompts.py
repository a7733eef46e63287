"""Tests for ezclip_jax/text_prompts.py: official templates, LLM descriptions, ensembling."""

import jax.numpy as jnp
import numpy as np
import pytest

from ezclip_jax import text_prompts
from ezclip_jax import tokenizer

# The first lines of the official GPT_discription/UCF_101_gpt_Class_discription_new.csv, in
# its format: a header, then quoted descriptions that start with blank lines.
UCF_DESCRIPTIONS = (
    'SNo,Class Name,GPT3 discription\r\n'
    '1,ApplyEyeMakeup,"\r\n\r\nApplyEyeMakeup is an action performed by humans to enhance their eyes and create a '
    'more dramatic look."\r\n'
    '2,ApplyLipstick,"\r\n\r\nApplyLipstick is an action performed by humans to enhance the appearance of their '
    'lips."\r\n'
    '3,Archery,"\n\nArchery is an action performed by humans where a bow and arrow are used to launch arrows at a '
    'target.\nIt is an ancient sport."\n'
)


def test_templates_are_the_official_sixteen():
  assert len(text_prompts.TEMPLATES) == 16
  texts = text_prompts.template_texts(["air_drumming", "Archery"])
  assert texts[0] == ["a photo of action air drumming", "a photo of action Archery"]
  assert [row[0] for row in texts] == [
      "a photo of action air drumming", "a picture of action air drumming", "Human action of air drumming",
      "air drumming, an action", "air drumming this is an action", "air drumming, a video of action",
      "Playing action of air drumming", "air drumming", "Playing a kind of action, air drumming",
      "Doing a kind of action, air drumming", "Look, the human is air drumming",
      "Can you recognize the action of air drumming?", "Video classification of air drumming",
      "A video of air drumming", "The man is air drumming", "The woman is air drumming"]


def test_descriptions(tmp_path):
  path = tmp_path / "ucf.csv"
  path.write_bytes(UCF_DESCRIPTIONS.encode())
  texts = text_prompts.read_descriptions(path, ["Archery", "ApplyEyeMakeup"])
  assert texts == ["Archery is an action performed by humans where a bow and arrow are used to launch arrows at a "
                   "target.It is an ancient sport.",
                   "ApplyEyeMakeup is an action performed by humans to enhance their eyes and create a more "
                   "dramatic look."]
  with pytest.raises(KeyError, match=r"ucf\.csv has no description for class 'apply_eye_makeup' \(1 of 2"):
    text_prompts.read_descriptions(path, ["Archery", "apply_eye_makeup"])
  prompts = text_prompts.build_prompts(["ApplyLipstick", "Archery"], descriptions_csv=path)
  assert prompts.num_texts == 1 and prompts.tokens.shape == (1, 2, 77)
  np.testing.assert_array_equal(prompts.tokens[0], tokenizer.tokenize(list(prompts.texts[0])))


def test_prompts_are_tokenised_once(tmp_path):
  names = ("brush_hair", "cartwheel", "catch")
  prompts = text_prompts.build_prompts(names)
  assert prompts.tokens.shape == (16, 3, 77) and prompts.tokens.dtype == np.int32
  assert prompts.texts[12][0] == "Video classification of brush hair"
  np.testing.assert_array_equal(prompts.tokens[12, 0], tokenizer.tokenize("Video classification of brush hair")[0])
  assert text_prompts.build_prompts(list(names)) is prompts
  with pytest.raises(ValueError):
    prompts.tokens[0, 0, 0] = 1


def test_read_class_names_errors(tmp_path):
  path = tmp_path / "labels.csv"
  path.write_text("id,name\n0,a\n2,b\n")
  with pytest.raises(ValueError, match=r"labels\.csv:3: expected '1,<class name>'"):
    text_prompts.read_class_names(path)
  path.write_text("index,label\n0,a\n")
  with pytest.raises(ValueError, match=r"labels\.csv:1: expected the header 'id,name'"):
    text_prompts.read_class_names(path)


def test_training_picks_one_text_of_the_class_per_sample():
  tokens = np.arange(4 * 3 * 2, dtype=np.int32).reshape(4, 3, 2)  # [K, C, L]: every row distinct
  labels = np.array([2, 0, 2, 1] * 50)
  picked = text_prompts.sample_text_tokens(tokens, labels, np.random.default_rng(0))
  assert picked.shape == (200, 2)
  k = (picked[:, 0] - 2 * labels) // 6  # tokens[k, c, 0] = 6k + 2c
  np.testing.assert_array_equal(tokens[k, labels], picked)
  assert set(k) == {0, 1, 2, 3}
  again = text_prompts.sample_text_tokens(tokens, labels, np.random.default_rng(0))
  np.testing.assert_array_equal(again, picked)


def test_ensemble_matches_the_official_evaluation():
  rng = np.random.default_rng(0)
  batch, num_texts, num_classes = 3, 16, 5
  # Official: similarity [B, K * C] (texts template-major) viewed as [B, K, C], softmax over C,
  # mean over K.
  similarity = rng.normal(scale=5.0, size=(batch, num_texts * num_classes))
  viewed = similarity.reshape(batch, num_texts, num_classes)
  softmax = np.exp(viewed - viewed.max(-1, keepdims=True))
  reference = (softmax / softmax.sum(-1, keepdims=True)).mean(1)
  logits = jnp.asarray(viewed.transpose(1, 0, 2), jnp.float32)  # [K, B, C]
  out = text_prompts.ensemble_probabilities(logits)
  assert out.shape == (batch, num_classes)
  np.testing.assert_allclose(np.asarray(out), reference, rtol=1e-5, atol=1e-7)
  # Averaging probabilities differs from a softmax of averaged logits.
  mean_logits = np.asarray(logits).mean(0)
  softmax_of_mean = np.exp(mean_logits) / np.exp(mean_logits).sum(-1, keepdims=True)
  assert not np.allclose(np.asarray(out), softmax_of_mean, atol=1e-3)
