"""PyTorch <-> Flax converters: input formats, bit-exact round trip, clear errors."""

import dataclasses
import math
import os

import numpy as np
import pytest
import safetensors.torch
import torch

from convert import flax_to_torch
from convert import torch_model
from convert import torch_to_flax
from convert import torchscript
from ezclip_jax import checkpoint
from ezclip_jax import load_pretrained
from tests import references


def _flat(tree, prefix=()):
  if isinstance(tree, dict):
    return {k: v for name, sub in tree.items() for k, v in _flat(sub, prefix + (name,)).items()}
  return {"/".join(prefix): np.asarray(tree)}


def _convert(src, dst, *flags) -> int:
  return torch_to_flax.main([str(src), str(dst), *flags])


def _params(directory):
  return _flat(load_pretrained(directory)[1]["params"])


def _error_line(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err, err
  return err


def test_round_trip_is_bit_exact_with_the_official_key_order(tmp_path):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY, seed=3)
  wrapped = {f"module.{k}": v for k, v in state.items()}  # DataParallel checkpoints
  torch.save({"epoch": 7, "model_state_dict": wrapped, "optimizer_state_dict": {}}, tmp_path / "in.pt")
  assert _convert(tmp_path / "in.pt", tmp_path / "flax") == 0
  assert flax_to_torch.main([str(tmp_path / "flax"), str(tmp_path / "out.pt")]) == 0
  back = torch.load(tmp_path / "out.pt", weights_only=True)["model_state_dict"]
  with torch.device("meta"):
    official_keys = list(torch_model.EZCLIPReference(references.CONVERTIBLE_TINY).state_dict())
  assert list(back) == official_keys
  for key, value in state.items():
    assert back[key].dtype == torch.float32 and torch.equal(back[key], value), key


@pytest.mark.parametrize("variant", [{"use_prompts": False, "t_adapter": True}, {"use_prompts": False}])
def test_round_trip_of_other_variants(tmp_path, variant):
  config = dataclasses.replace(references.CONVERTIBLE_TINY, **variant)
  state = references.random_ezclip_state(config)
  torch.save(state, tmp_path / "in.pt")
  assert _convert(tmp_path / "in.pt", tmp_path / "flax") == 0
  stored = checkpoint.load_config(tmp_path / "flax")
  assert (stored.use_prompts, stored.t_adapter) == (config.use_prompts, config.t_adapter)
  assert flax_to_torch.main([str(tmp_path / "flax"), str(tmp_path / "out.pt")]) == 0
  back = torch.load(tmp_path / "out.pt", weights_only=True)["model_state_dict"]
  assert list(back) == list(state) and all(torch.equal(back[k], v) for k, v in state.items())


def _save_torchscript(state, path):
  """A TorchScript archive like OpenAI's CLIP files, metadata entries included."""
  module = torch_model.EZCLIPReference.from_state_dict(state, references.CONVERTIBLE_TINY).eval()
  for name, value in (("input_resolution", 32), ("context_length", 16), ("vocab_size", 500)):
    module.register_buffer(name, torch.tensor(value))
  ids = torch.zeros(1, references.CONVERTIBLE_TINY.context_length, dtype=torch.long)
  torch.jit.save(torch.jit.trace_module(module, {"encode_text": ids}), str(path))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "state_dict", "safetensors"])
def test_every_input_format_gives_the_same_params(tmp_path, fmt):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY, seed=1)
  torch.save({"model_state_dict": state}, tmp_path / "ezclip.pt")
  assert _convert(tmp_path / "ezclip.pt", tmp_path / "want") == 0
  src = tmp_path / f"src.{'safetensors' if fmt == 'safetensors' else 'pt'}"
  if fmt == "torchscript":
    _save_torchscript(state, src)
  elif fmt == "state_dict":
    torch.save(state, src)
  else:
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(src))
  assert _convert(src, tmp_path / "got") == 0
  want, got = _params(tmp_path / "want"), _params(tmp_path / "got")
  assert want.keys() == got.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


class _ScriptableBlock(torch.nn.Module):
  """A CLIP residual block as torch.jit.script compiles it: its attn_mask is a plain attribute, not a buffer."""

  def __init__(self):
    super().__init__()
    self.attn = torch.nn.MultiheadAttention(8, 2)
    self.ln_1 = torch.nn.LayerNorm(8)
    self.attn_mask = torch.full((3, 3), -math.inf).triu(1)
    self.register_buffer("scale", torch.tensor(2.0))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.ln_1(x)
    return x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0] * self.scale


class _SideEffect(torch.nn.Module):

  def __init__(self):
    super().__init__()
    self.weight = torch.nn.Parameter(torch.ones(2))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * self.weight

  @torch.jit.export
  def __getstate__(self) -> tuple[torch.Tensor, bool]:
    return (self.weight, self.training)

  @torch.jit.export
  def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
    print("CODE RAN AT LOAD TIME")
    self.weight = state[0]
    self.training = state[1]


def test_torchscript_tensors_are_read_exactly_without_running_code(tmp_path):
  module = torch.nn.Sequential(_ScriptableBlock(), _ScriptableBlock())
  torch.nn.init.normal_(module[1].attn.in_proj_bias)
  torch.jit.script(module).save(str(tmp_path / "scripted.pt"))
  got = torchscript.read_state_dict(tmp_path / "scripted.pt")
  want = module.state_dict()
  assert list(got) == list(want)
  for key, value in want.items():
    assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_torchscript_with_a_setstate_side_effect_is_refused_before_it_runs(tmp_path, capfd):
  path = tmp_path / "evil.pt"
  torch.jit.script(_SideEffect()).save(str(path))
  torch.jit.load(str(path))  # what torch would do: the side effect is real and visible here
  assert "CODE RAN AT LOAD TIME" in capfd.readouterr().out
  assert _convert(path, tmp_path / "out") == 2
  out, err = capfd.readouterr()
  assert "CODE RAN" not in out + err
  assert err == (f"error: {path}: refused: TorchScript class __torch__.{_SideEffect.__module__}._SideEffect "
                 "defines __setstate__, code that would run on loading; export its weights as a state dict "
                 "(torch.save(model.state_dict(), ...))\n")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


class _Payload:

  def __reduce__(self):
    return (os.remove, ("never-removed",))


def test_a_pickle_payload_is_refused_without_torchs_weights_only_advice(tmp_path, capsys):
  torch.save({"weight": torch.zeros(2), "payload": _Payload()}, tmp_path / "payload.pt")
  assert _convert(tmp_path / "payload.pt", tmp_path / "out") == 2
  assert _error_line(capsys) == (f"error: {tmp_path / 'payload.pt'}: refused: it holds Python objects besides "
                                 "tensors (unsupported GLOBAL posix.remove); only tensors are read from "
                                 "checkpoint files")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.pt"]


def test_backbone_only_clip_gets_the_official_initialisation(tmp_path):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY, seed=2)
  backbone = {k: v for k, v in state.items()
              if "Adapter" not in k and "prompt" not in k and "temporal" not in k}
  torch.save(backbone, tmp_path / "clip.pt")
  assert _convert(tmp_path / "clip.pt", tmp_path / "flax", "--num-frames", "3") == 0
  config = checkpoint.load_config(tmp_path / "flax")
  assert config.num_frames == 3 and config.use_prompts
  params = _params(tmp_path / "flax")
  prompts = params["visual/transformer/T_prompt_embeddings"]
  bound = math.sqrt(6.0 / (3 * 16 * 16 + references.CONVERTIBLE_TINY.vision_width))
  assert prompts.shape == (2, 3, 128) and 0.9 * bound < np.abs(prompts).max() <= bound
  assert not params["visual/temporal_embedding"].any()
  fc2 = [v for k, v in params.items() if "Adapter/D_fc2" in k]
  assert len(fc2) == 2 * 2 * 2 and not any(v.any() for v in fc2)
  # Backbone tensors are copied exactly (conv kernel OIHW -> HWIO).
  np.testing.assert_array_equal(params["visual/conv1/kernel"],
                                backbone["visual.conv1.weight"].numpy().transpose(2, 3, 1, 0))


def test_corrupt_file_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
  src = tmp_path / "broken.pt"
  src.write_bytes(os.urandom(4096))
  assert _convert(src, tmp_path / "out") == 2
  assert "broken.pt" in _error_line(capsys)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]


def test_other_architecture_is_rejected(tmp_path, capsys):
  layer = torch.nn.TransformerEncoderLayer(64, 4)
  torch.save(layer.state_dict(), tmp_path / "bert.pt")
  assert _convert(tmp_path / "bert.pt", tmp_path / "out") == 2
  assert "not a ViT CLIP" in _error_line(capsys)
  resnet = {"visual.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1), "text_projection": torch.zeros(512, 1024)}
  torch.save(resnet, tmp_path / "rn50.pt")
  assert _convert(tmp_path / "rn50.pt", tmp_path / "out") == 2
  assert "ResNet" in _error_line(capsys)
  assert not (tmp_path / "out").exists()


def test_mis_shaped_tensor_is_named(tmp_path, capsys):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY)
  state["visual.transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(512, 100)
  torch.save(state, tmp_path / "bad.pt")
  assert _convert(tmp_path / "bad.pt", tmp_path / "out") == 2
  err = _error_line(capsys)
  assert "visual.transformer.resblocks.1.mlp.c_fc.weight has shape (512, 100), expected (512, 128)" in err
  assert not (tmp_path / "out").exists()


def test_unknown_and_missing_tensors_are_listed(tmp_path, capsys):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY)
  torch.save({**state, "visual.extra_head.weight": torch.zeros(3)}, tmp_path / "extra.pt")
  assert _convert(tmp_path / "extra.pt", tmp_path / "out") == 2
  assert "unknown tensors" in (err := _error_line(capsys)) and "visual.extra_head.weight" in err
  del state["transformer.resblocks.0.Adapter.D_fc1.bias"]
  torch.save(state, tmp_path / "partial.pt")
  assert _convert(tmp_path / "partial.pt", tmp_path / "out") == 2
  assert "transformer.resblocks.0.Adapter.D_fc1.bias" in _error_line(capsys)
  assert not (tmp_path / "out").exists()
  assert _convert(tmp_path / "partial.pt", tmp_path / "out", "--allow-missing", "*.Adapter.D_fc1.bias") == 0
  assert _params(tmp_path / "out")["transformer/resblocks_0/Adapter/D_fc1/bias"].shape == (32,)


def test_existing_destination_needs_overwrite(tmp_path, capsys):
  torch.save(references.random_ezclip_state(references.CONVERTIBLE_TINY), tmp_path / "in.pt")
  (tmp_path / "out").mkdir()
  assert _convert(tmp_path / "in.pt", tmp_path / "out") == 2
  assert "already exists" in _error_line(capsys)
  assert _convert(tmp_path / "in.pt", tmp_path / "out", "--overwrite") == 0
  assert (tmp_path / "out" / checkpoint.CONFIG_FILE).is_file()


def test_flax_to_torch_never_replaces_a_file_unasked_nor_takes_a_folder(tmp_path, capsys):
  torch.save(references.random_ezclip_state(references.CONVERTIBLE_TINY), tmp_path / "in.pt")
  assert _convert(tmp_path / "in.pt", tmp_path / "flax") == 0
  capsys.readouterr()
  out = tmp_path / "out.pt"
  out.write_bytes(b"someone's file")
  assert flax_to_torch.main([str(tmp_path / "flax"), str(out)]) == 2
  assert _error_line(capsys) == f"error: {out} already exists; pass --overwrite to replace it"
  assert out.read_bytes() == b"someone's file"
  (tmp_path / "folder").mkdir()
  assert flax_to_torch.main([str(tmp_path / "flax"), str(tmp_path / "folder")]) == 2
  assert _error_line(capsys) == (f"error: {tmp_path / 'folder'} is a directory; give the .pt file to write, "
                                 f"e.g. {tmp_path / 'folder' / 'model.pt'}")
  assert not any((tmp_path / "folder").iterdir())
  assert flax_to_torch.main([str(tmp_path / "flax"), str(out), "--overwrite"]) == 0
  converted = torch.load(out, weights_only=True)["model_state_dict"]
  assert len(converted) == len(references.random_ezclip_state(references.CONVERTIBLE_TINY))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["flax", "folder", "in.pt", "out.pt"]


def test_a_read_only_destination_fails_before_converting(tmp_path, capsys, monkeypatch):
  torch.save(references.random_ezclip_state(references.CONVERTIBLE_TINY), tmp_path / "in.pt")
  monkeypatch.setattr(torch_to_flax, "load_state_dict", lambda *a: pytest.fail("read SRC before checking DST"))
  assert _convert(tmp_path / "in.pt", "/proc/ezclip-out") == 2
  assert _error_line(capsys) == "error: /proc/ezclip-out: cannot write in /proc (No such file or directory)"


def test_failed_write_leaves_no_destination(tmp_path, monkeypatch):
  torch.save(references.random_ezclip_state(references.CONVERTIBLE_TINY), tmp_path / "in.pt")

  def failing_save(self, *args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(checkpoint.ocp.StandardCheckpointer, "save", failing_save)
  with pytest.raises(OSError, match="disk full"):
    torch_to_flax.convert(tmp_path / "in.pt", tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pt"]


def test_training_workdir_exports_its_best_params(tmp_path):
  state = references.random_ezclip_state(references.CONVERTIBLE_TINY, seed=5)
  torch.save(state, tmp_path / "in.pt")
  assert _convert(tmp_path / "in.pt", tmp_path / "flax") == 0
  model, variables = load_pretrained(tmp_path / "flax")
  workdir = tmp_path / "run"
  checkpoint.save_backbone(workdir, model.config, variables["params"], ("prompt", "Adapter"))
  # A "trained" model: every trainable tensor replaced by a known value.
  trainable = {"visual": {"transformer": {"T_prompt_embeddings": np.full(
      variables["params"]["visual"]["transformer"]["T_prompt_embeddings"].shape, 0.25, np.float32)}}}
  full_trainable = _trainable_tree(variables["params"], trainable)
  checkpoint.save_best(workdir, full_trainable, step=3, metrics={})
  assert flax_to_torch.main([str(workdir), str(tmp_path / "out.pt")]) == 0
  back = torch.load(tmp_path / "out.pt", weights_only=True)["model_state_dict"]
  prompt_keys = [k for k in back if k.endswith("T_prompt_embeddings")]
  assert prompt_keys and all(torch.all(back[k] == 0.25) for k in prompt_keys)
  for key, value in state.items():  # everything else exported unchanged
    if not key.endswith("T_prompt_embeddings"):
      assert torch.equal(back[key], value), key


def _trainable_tree(params: dict, replacements: dict) -> dict:
  """The trainable subset (names with `prompt` or `Adapter`), with `replacements` put in."""
  from ezclip_jax import optim
  trainable, _ = optim.split_params(params, ("prompt", "Adapter"))
  flat = _flat(replacements)

  def put(tree, prefix=()):
    if isinstance(tree, dict):
      return {k: put(v, prefix + (k,)) for k, v in tree.items()}
    return flat.get("/".join(prefix), np.asarray(tree))
  return put(trainable)
