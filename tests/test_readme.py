"""The README's commands work: every line of its ```bash blocks runs here, or is run by .ci/run.

Each command is one of these kinds (anything else fails `test_every_command_has_a_kind`):
  ci       the quick start's set-up and test commands, which `.ci/run` runs verbatim;
  python   `python -m MODULE ...`: run in a shell from the repository root, with the README's
           placeholders (`$CLIP_PT`, `$WORKDIR`, ...) bound to tiny files made here and, per
           module, arguments appended for tiny sizes (`TINY_ARGS`, `MAIN_TINY`, `DEMO_TINY`);
           then its outputs are checked (`CHECKS`);
  pip      `pip install ...`: not run (it would change this environment and needs the network);
           every requirement must be valid, our extras must exist in setup.py and `jax`'s extras
           in the installed jax's metadata;
  tpu-ssh  `gcloud compute tpus tpu-vm ssh ... --worker=all --command="A && B ..."`: no TPU here,
           so each part of the payload is handled by its own kind (`_payload_part`); the python
           part runs as two jax.distributed processes of one simulated cluster;
  srun     `srun [options] python -m ...`: no Slurm here; the payload runs as two processes with
           the variables srun sets, which `jax.distributed.initialize()` reads.
Commands run in README order in one module (later ones use what earlier ones wrote), so run
this file as a whole. A shared JAX compilation cache keeps the repeated tiny compilations cheap.
"""

import ast
import dataclasses
import importlib
import importlib.metadata
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from data import synthetic
from ezclip_jax import model as model_lib
from ezclip_jax import sharding
from tests import test_configs

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"

CLASSES = ("growing", "shrinking")
NUM_FRAMES = 8  # model_lib.TINY's T, the README's `--num-frames 8`
FRAME_SIZE = 64  # model_lib.TINY's resolution
# Official lists name these datasets' frame folders with the video's extension (README table).
LISTS_WITH_EXTENSION = ("/HMDB/", "/K-600/", "/SSv2/")
# A literal path of the quick start, replaced by a placeholder so the test writes under tmp.
LITERAL_PATHS = {"/tmp/ezclip-demo": "$WORKDIR/demo"}

MAIN_TINY = ("--config.train.epochs=1", "--config.data.batch_size=4", "--config.data.eval_batch_size=4",
             "--config.data.num_workers=0")
DEMO_TINY = ("--config.train.epochs=1", "--config.demo.train_videos_per_class=4",
             "--config.demo.eval_videos_per_class=2", "--config.demo.source_frames=8",
             "--config.data.batch_size=4", "--config.data.eval_batch_size=4")
TINY_ARGS = {
    "data.extract_frames": ("--workers", "1"),
    "data.tfds_builders": ("--workers", "1"),
    # The PyTorch side times a 2048^2 matmul peak for half a minute on this machine; it is the
    # same subprocess for every architecture, so the tiny run covers the JAX path only.
    "benchmarks.bench": ("--arch=tiny", "--frames=2", "--batch_sizes=1", "--repeats=1", "--notorch"),
    "benchmarks.input_bench": ("--repeats=1", "--seconds=0.5", "--pipelines=0x1"),
    # A tiny model's step compiles for the TPU slice in seconds (colour jitter is off: it
    # alone triples this compile).
    "ezclip_jax.plan": ("--config.model.arch=tiny", "--config.data.batch_size=8", "--config.data.color_jitter=False"),
}
CLUSTER_PROCESSES = 2
SRUN_OPTIONS = ("--nodes", "--ntasks-per-node", "--gpus-per-node")


# ------------------------------------------------------------------------ reading the README


@dataclasses.dataclass(frozen=True)
class Command:
  line: int  # README line where the command starts
  text: str  # continuation lines joined (bash: backslash-newline removed), comment stripped


def strip_comment(line: str) -> str:
  """`line` without a `#` comment (a `#` that starts a word outside quotes)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char == "#" and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
  """(language, line of the first content line, content lines) of every fenced block."""
  blocks = []
  for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S):
    first = text.count("\n", 0, match.start(2)) + 1
    blocks.append((match.group(1), first, match.group(2).split("\n")[:-1]))
  return blocks


def bash_commands(text: str) -> list[Command]:
  commands = []
  for language, first, lines in fenced_blocks(text):
    if language != "bash":
      continue
    i = 0
    while i < len(lines):
      start, joined = i, lines[i]
      while joined.endswith("\\"):
        i += 1
        joined = joined[:-1] + lines[i]
      commands.append(Command(first + start, strip_comment(joined).strip()))
      i += 1
  return commands


def section(text: str, title: str) -> str:
  """The text of the `## title` section, up to the next `## `."""
  start = text.index(f"\n## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end != -1 else len(text)]


def ci_lines() -> list[str]:
  return [line.strip() for line in CI_RUN.read_text().splitlines() if line.strip() and not line.startswith("#")]


def is_ci_run(command: str) -> bool:
  """`.ci/run` runs `command` verbatim: a line of it is the command, or the command then `|| ...`."""
  return any(line == command or line.startswith(command + " || ") for line in ci_lines())


def kind(command: str) -> str:
  argv = shlex.split(command)
  if is_ci_run(command):
    return "ci"
  if argv[:2] == ["pip", "install"]:
    return "pip"
  if argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]:
    return "tpu-ssh"
  if argv[0] == "srun":
    return "srun"
  if argv[0] in ("python", "python3") and argv[1:2] == ["-m"]:
    return "python"
  raise AssertionError(f"README command of no known kind (add one to tests/test_readme.py): {command}")


TEXT = README.read_text()
COMMANDS = bash_commands(TEXT)


def _id(command: Command) -> str:
  argv = shlex.split(command.text)
  what = argv[argv.index("-m") + 1] if "-m" in argv[:3] else " ".join(argv[:2])
  return f"L{command.line}-{what}"


# ----------------------------------------------------------------------------- the inputs


def _fake_official_repo(root: pathlib.Path, frames_list: pathlib.Path) -> None:
  """Every file the configs read from the official repository, over the synthetic clips.

  List lines keep the official shape, `<the authors' directory>/<folder> <num_frames> <label>`,
  so `root` has to replace the directory, as with the real lists.
  """
  clips = [line.split() for line in frames_list.read_text().splitlines() if line]
  for name in test_configs.OFFICIAL_FILES:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".txt"):
      suffix = ".mp4" if any(part in "/" + name for part in LISTS_WITH_EXTENSION) else ""
      path.write_text("".join(f"/media/authors/Data_for_Action_CLIP/{pathlib.Path(folder).name}{suffix} "
                              f"{count} {label}\n" for folder, count, label in clips))
    elif name.startswith("GPT_discription/"):
      path.write_text("SNo,Class Name,GPT3 discription\n" + "".join(
          f'{i + 1},{c},"A rectangle keeps {c} in the middle of the frame."\n' for i, c in enumerate(CLASSES)))
    else:
      path.write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES)))


def _ucf101_download(root: pathlib.Path, videos: pathlib.Path) -> None:
  """The UCF101 download layout (`UCF-101/`, `ucfTrainTestlist/`) over the synthetic videos."""
  (root / "ucfTrainTestlist").mkdir(parents=True)
  (root / "ucfTrainTestlist" / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
  for name in CLASSES:
    (root / "UCF-101" / name).mkdir(parents=True)
    for video in sorted((videos / name).glob("*.mp4")):
      shutil.copy(video, root / "UCF-101" / name / f"v_{video.stem}.avi")
  for split in (1, 2, 3):
    (root / "ucfTrainTestlist" / f"trainlist0{split}.txt").write_text(
        "".join(f"{c}/v_{c}_0000.avi {i + 1}\n" for i, c in enumerate(CLASSES)))
    (root / "ucfTrainTestlist" / f"testlist0{split}.txt").write_text("".join(f"{c}/v_{c}_0001.avi\n" for c in CLASSES))


def _torch_checkpoints(clip_pt: pathlib.Path, ezclip_pt: pathlib.Path) -> None:
  """A random tiny official EZ-CLIP checkpoint and the CLIP backbone it extends (a plain state dict)."""
  import torch  # pylint: disable=g-import-not-at-top

  from convert import mapping  # pylint: disable=g-import-not-at-top
  from tests import references  # pylint: disable=g-import-not-at-top

  state = references.random_ezclip_state(model_lib.TINY, seed=0)
  torch.save({"model_state_dict": state}, ezclip_pt)
  torch.save({k: v for k, v in state.items() if not any(a in k for a in mapping.EZCLIP_ADDITIONS)}, clip_pt)


@pytest.fixture(scope="module")
def variables(tmp_path_factory) -> dict[str, str]:
  """The README's placeholders, bound to tiny inputs (and to where commands write)."""
  root = tmp_path_factory.mktemp("readme")
  clips = synthetic.make_dataset(root / "synthetic", videos_per_class=2, num_frames=NUM_FRAMES, height=FRAME_SIZE,
                                 width=FRAME_SIZE, classes=CLASSES, videos=True)
  _torch_checkpoints(root / "ViT-B-16.pt", root / "ezclip_k400.pt")
  _fake_official_repo(root / "EZ-CLIP", clips.frames_list)
  _ucf101_download(root / "ucf101_download", clips.root / "videos")
  k600 = root / "k600_frames"
  k600.mkdir()
  for folder in sorted((clips.root / "frames").iterdir()):
    (k600 / f"{folder.name}.mp4").symlink_to(folder)
  mine = root / "my_videos"
  mine.mkdir()
  shutil.copy(clips.root / "videos" / "growing" / "growing_0000.mp4", mine / "archery.mp4")
  shutil.copy(clips.root / "videos" / "shrinking" / "shrinking_0000.mp4", mine / "juggling.mp4")
  return {
      "CLIP_PT": str(root / "ViT-B-16.pt"), "EZCLIP_PT": str(root / "ezclip_k400.pt"),
      "CLIP_DIR": str(root / "ckpt" / "vit-b16"), "EZCLIP_DIR": str(root / "ckpt" / "ezclip-k400"),
      "EZCLIP_REPO": str(root / "EZ-CLIP"), "WORKDIR": str(root / "work"),
      "UCF101_VIDEOS": str(clips.root / "videos"), "HMDB51_VIDEOS": str(clips.root / "videos"),
      "UCF101_FRAMES": str(root / "ucf101_frames"), "HMDB51_FRAMES": str(root / "hmdb51_frames"),
      "K400_FRAMES": str(clips.root / "frames"), "K600_FRAMES": str(k600),
      "UCF101_MANUAL": str(root / "ucf101_download"), "TFDS_DIR": str(root / "tfds"),
      "MY_VIDEOS": str(mine),
      "MY_TRAIN_VIDEOS": str(clips.root / "videos"), "MY_VAL_VIDEOS": str(clips.root / "videos"),
      "MY_LABELS_CSV": str(clips.labels_csv),
      # Only in commands that cannot run here (they are checked, not run).
      "TPU_NAME": "ezclip-pod", "ZONE": "us-central2-b", "EZCLIP_JAX_GIT": "https://example.invalid/ezclip-jax.git",
      "_ROOT": str(root),
  }


@pytest.fixture(scope="module")
def env(variables) -> dict[str, str]:
  root = pathlib.Path(variables["_ROOT"])
  return {
      **os.environ, **{k: v for k, v in variables.items() if not k.startswith("_")},
      "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
      "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
      "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "EZCLIP_JAX_CACHE": str(root / "text_cache"),
  }


# ---------------------------------------------------------------------------- running them


def expand(text: str, env: dict[str, str]) -> str:
  return re.sub(r"\$([A-Z][A-Z0-9_]*)", lambda m: env[m.group(1)], text)


def tiny_args(argv: list[str]) -> tuple[str, ...]:
  module = argv[argv.index("-m") + 1]
  if module == "ezclip_jax.main":
    return DEMO_TINY if argv[argv.index("--config") + 1] == "configs/demo.py" else MAIN_TINY
  return TINY_ARGS.get(module, ())


def run_shell(command: str, env: dict[str, str], stderr=subprocess.PIPE) -> subprocess.Popen:
  """`bash -c command` from the repository root; stdout piped, stderr piped unless redirected."""
  return subprocess.Popen(["bash", "-c", command], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def communicate(process: subprocess.Popen) -> tuple[str, str]:
  """(stdout, stderr) of `process`, killed if it runs past 10 minutes."""
  try:
    return process.communicate(timeout=600)
  except subprocess.TimeoutExpired:
    process.kill()
    process.communicate()
    raise


def run_python(command: str, env: dict[str, str]) -> tuple[int, str, str]:
  """Runs a README `python -m` command with its tiny arguments; returns (status, stdout, stderr)."""
  extra = tiny_args(shlex.split(command))
  process = run_shell(command + "".join(" " + shlex.quote(a) for a in extra), env)
  out, err = communicate(process)
  return process.returncode, out, err


_CLUSTER_RUNS: dict[tuple[str, ...], list[tuple[int, str]]] = {}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_cluster(command: str, env: dict[str, str]) -> list[tuple[int, str]]:
  """Runs a multi-host payload as `CLUSTER_PROCESSES` local processes with Slurm's variables
  (two simulated devices each); the same payload runs once. Returns (status, output) per process."""
  key = tuple(shlex.split(command))
  if key not in _CLUSTER_RUNS:
    # --log_level=info: each process logs its "process i/N" line (checked by check_cluster_run).
    extra = "".join(" " + shlex.quote(a) for a in (*tiny_args(list(key)), "--log_level=info"))
    port = str(_free_port())
    processes = []
    for rank in range(CLUSTER_PROCESSES):
      slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": str(CLUSTER_PROCESSES),
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "JAX_COORDINATOR_PORT": port,
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
      processes.append(run_shell(command + extra, {**env, **slurm}, stderr=subprocess.STDOUT))
    outputs = [communicate(p)[0] for p in processes]
    _CLUSTER_RUNS[key] = [(p.returncode, output) for p, output in zip(processes, outputs)]
  return _CLUSTER_RUNS[key]


# --------------------------------------------------------------------- checking the outputs


def _value(argv: list[str], flag: str) -> str:
  return argv[argv.index(flag) + 1]


def _positional(argv: list[str]) -> list[str]:
  """Arguments after `-m MODULE` that are neither flags nor flag values (flags given as `--x=y`
  or `--x y`; only the flags the README uses take a separate value)."""
  valued = {"--list", "--labels", "--videos", "--num-frames", "--manual_dir", "--data_dir", "--workers",
            "--checkpoint", "--label-file", "--descriptions", "--out"}
  rest, found = argv[argv.index("-m") + 2:], []
  i = 0
  while i < len(rest):
    if rest[i] in valued:
      i += 2
      continue
    if not rest[i].startswith("-"):
      found.append(rest[i])
    i += 1
  return found


def check_torch_to_flax(argv, out, env):
  del out, env
  from ezclip_jax import checkpoint  # pylint: disable=g-import-not-at-top

  config = checkpoint.load_config(_positional(argv)[1])
  assert (config.embed_dim, config.vision_width, config.num_frames) == (64, 128, NUM_FRAMES)
  assert config.use_prompts


def check_flax_to_torch(argv, out, env):
  del out
  import torch  # pylint: disable=g-import-not-at-top

  back = torch.load(_positional(argv)[1], weights_only=True)["model_state_dict"]
  original = torch.load(env["EZCLIP_PT"], weights_only=True)["model_state_dict"]
  assert list(back) == list(original)  # official key order
  for key, tensor in original.items():
    assert torch.equal(back[key], tensor), key


def check_extract_frames(argv, out, env):
  del out, env
  lines = [line.split() for line in pathlib.Path(_value(argv, "--list")).read_text().splitlines()]
  assert len(lines) == 2 * len(CLASSES)
  for folder, count, _ in lines:
    assert pathlib.Path(folder).name.endswith(".mp4") == ("--keep-extension" in argv), folder
    assert int(count) == NUM_FRAMES == len(list(pathlib.Path(folder).glob("img_*.jpg"))), folder


def check_tfds_builders(argv, out, env):
  del out, env
  name = _positional(argv)[0]
  info = json.loads((pathlib.Path(_value(argv, "--data_dir")) / name / "1.0.0" / "dataset_info.json").read_text())
  assert {split["name"] for split in info["splits"]} == {"train", "test"}


def _records(workdir: pathlib.Path) -> dict[str, list[dict]]:
  records = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    records.setdefault(record["split"], []).append(record)
  return records


def _config_of(argv: list[str]):
  """The config `ezclip_jax.main` ran, loaded as main loads it (with the appended tiny flags)."""
  file, _, arg = _value(argv, "--config").removeprefix("configs/").partition(":")
  return test_configs.load(file, arg, *[a for a in argv if a.startswith("--config.")], *MAIN_TINY)


def check_main(argv, out, env):
  """Every enabled evaluation ran, each group was summarised, and the best checkpoint exists iff
  a validation split was evaluated while training."""
  workdir = pathlib.Path(_value(argv, "--workdir"))
  if _value(argv, "--config") == "configs/demo.py":
    assert "EZ-CLIP (temporal prompts)" in out and "frame averaging (no prompts)" in out
    hints = [line.strip() for line in out.splitlines() if line.strip().startswith("python -m ezclip_jax.predict ")]
    assert len(hints) == 1, out  # the demo's closing suggestion runs too
    status, predicted, err = run_python(hints[0], env)
    assert status == 0, err[-4000:]
    assert predicted.count(" rank ") == len(_positional(shlex.split(hints[0])))
    return
  config = _config_of(argv)
  source_field = {"list": "list_file", "tfds": "tfds_name", "video_folder": "root"}
  evals = {k: s for k, s in config.data.evals.items() if s[source_field[s.kind]]}
  records = _records(workdir)
  training = "--mode" not in argv
  assert ("train" in records) == training
  for name in evals:
    assert records[f"eval/{name}"][-1]["values"]["num_samples"] > 0, name
  groups = {}
  for name, spec in evals.items():
    if spec.group:
      groups[spec.group] = groups.get(spec.group, 0) + 1
  for group, count in groups.items():
    assert records[f"protocol/{group}"][-1]["values"]["num_splits"] == count, group
  if {"base", "novel"} <= set(groups):
    assert "hm" in records["protocol/base_to_novel"][-1]["values"]
  has_val = any(spec.role == "val" for spec in evals.values())
  assert (workdir / "best").is_dir() == (training and has_val)


def _class_names(argv: list[str]) -> list[str]:
  if "--labels" in argv:
    return [name.strip() for name in _value(argv, "--labels").split(",")]
  lines = pathlib.Path(_value(argv, "--label-file")).read_text().splitlines()[1:]
  return [line.split(",", 1)[1] for line in lines]


def check_predict(argv, out, env):
  videos = sorted(str(p) for p in pathlib.Path(env["MY_VIDEOS"]).iterdir())
  names = _class_names(argv)
  if "--timeline" in argv:
    assert [line for line in out.splitlines() if not line.startswith(" ")] == videos
    assert out.count(" windows, ") == len(videos)
    assert len(list(pathlib.Path(_value(argv, "--plot")).glob("*.png"))) == len(videos)
    return
  if "--json" not in argv:
    for video in videos:
      assert video in out
    assert out.count(" rank ") == len(videos)
    return
  results = json.loads(out)
  assert [r["path"] for r in results] == videos
  for result in results:
    probabilities = [p["probability"] for p in result["predictions"]]
    assert {p["label"] for p in result["predictions"]} == set(names)  # top 5 of fewer classes: all
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def check_embed(argv, out, env):
  del out, env
  from ezclip_jax import embed  # pylint: disable=import-outside-toplevel
  folders = sorted(str(p) for p in pathlib.Path(_positional(argv)[0]).iterdir())
  entries = embed.read_manifest(_value(argv, "--out"))
  assert sorted(entries) == folders and all(e["error"] is None for e in entries.values())


def check_search(argv, out, env):
  del env
  if "--json" in argv:
    assert {p["label"] for row in json.loads(out) for p in row["predictions"]} <= set(_class_names(argv))
  else:
    from ezclip_jax import embed  # pylint: disable=import-outside-toplevel
    indexed = len(embed.read_manifest(_positional(argv)[0]))
    assert len(out.splitlines()) == 1 + min(int(_value(argv, "--top-k")), indexed), out


def check_visualize(argv, out, env):
  del out, env
  out_dir = pathlib.Path(_value(argv, "--out"))
  assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(
      [f"frame_{t}.png" for t in range(NUM_FRAMES)] + ["contact_sheet.png"])
  assert Image.open(out_dir / "frame_0.png").size == (FRAME_SIZE, FRAME_SIZE)
  assert Image.open(out_dir / "contact_sheet.png").size == (4 * FRAME_SIZE, 2 * FRAME_SIZE)


def check_bench(argv, out, env):
  del env
  if "--what=train" in argv:
    rows = re.findall(r"^ *(train|eval) +1 +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +\d+%$", out, re.M)
    assert rows == ["train", "eval"], out
  else:
    assert re.search(r"^batch +compile s", out, re.M), out


def check_input_bench(argv, out, env):
  del argv, env
  for media in ("JPEG folders", "mp4 files"):
    table = out[out.index(media):]
    assert re.search(r"^  pipeline, 0 workers x 1 threads .*%$", table, re.M), out


def check_plan(argv, out, env):
  del env
  rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
  assert rows["target"].startswith(_value(argv, "--topology") + ": "), out
  assert rows["HBM per chip"].endswith("fits yes") and "roofline step" in rows, out


CHECKS = {
    "convert.torch_to_flax": check_torch_to_flax,
    "convert.flax_to_torch": check_flax_to_torch,
    "data.extract_frames": check_extract_frames,
    "data.tfds_builders": check_tfds_builders,
    "ezclip_jax.main": check_main,
    "ezclip_jax.predict": check_predict,
    "ezclip_jax.embed": check_embed,
    "ezclip_jax.search": check_search,
    "ezclip_jax.visualize": check_visualize,
    "ezclip_jax.plan": check_plan,
    "benchmarks.bench": check_bench,
    "benchmarks.input_bench": check_input_bench,
}


def check_pip(argv: list[str]) -> None:
  """`pip install` arguments: known options, `.` or `./ezclip-jax` with extras of setup.py, and
  requirement strings whose extras the installed package declares."""
  setup = ast.parse((REPO / "setup.py").read_text())
  extras = next(ast.literal_eval(node.value) for node in setup.body
                if isinstance(node, ast.Assign) and node.targets[0].id == "EXTRAS_REQUIRE")
  for arg in argv[2:]:
    if arg.startswith("-"):
      assert arg in ("-e", "-q", "-U", "--no-deps"), arg
    elif arg.startswith("."):
      path, _, wanted = arg.partition("[")
      assert path in (".", "./ezclip-jax"), arg
      assert set(filter(None, wanted.rstrip("]").split(","))) <= set(extras), arg
    else:
      requirement = Requirement(arg)
      declared = importlib.metadata.metadata(requirement.name).get_all("Provides-Extra") or []
      assert requirement.extras <= set(declared), (arg, declared)


def check_cluster_run(command: str, env: dict[str, str]) -> None:
  results = run_cluster(command, env)
  for rank, (status, output) in enumerate(results):
    assert status == 0, output[-4000:]
    assert f"process {rank}/{CLUSTER_PROCESSES}" in output, output[-4000:]
  argv = shlex.split(expand(command, env))
  check_main(argv + list(MAIN_TINY), "", env)
  train_steps = [r["step"] for r in _records(pathlib.Path(_value(argv, "--workdir")))["train"]]
  assert train_steps == sorted(set(train_steps))  # one process logs


def _payload_part(part: str, setup_command: str, env: dict[str, str]) -> None:
  """One `&&` part of a TPU VM payload."""
  argv = shlex.split(part)
  if argv[:2] == ["git", "clone"]:
    assert argv[3:] == ["ezclip-jax"], part  # the directory the other payloads `cd` into; needs the network
  elif argv == ["cd", "ezclip-jax"]:
    pass  # the clone: this checkout, where every command here runs
  elif part in ("python3 -m venv .venv", ". .venv/bin/activate"):
    assert part in setup_command  # the quick start's environment, which this test runs in
  elif argv[:2] == ["pip", "install"]:
    check_pip(argv)
  elif kind(part) == "python":
    check_cluster_run(part, env)
  else:
    raise AssertionError(f"unknown part of a TPU VM command: {part}")


# ------------------------------------------------------------------------------------ tests


def test_fenced_blocks_are_bash_python_or_text():
  assert {language for language, _, _ in fenced_blocks(TEXT)} == {"bash", "python", "text"}


def test_every_bash_line_is_a_command():
  for command in COMMANDS:
    assert command.text, f"README line {command.line}: blank or comment-only line in a bash block"


def test_every_command_has_a_kind():
  kinds = {kind(command.text) for command in COMMANDS}
  assert kinds == {"ci", "python", "pip", "tpu-ssh", "srun"}
  for command in COMMANDS:
    argv = shlex.split(command.text)
    if kind(command.text) == "python":
      assert argv[argv.index("-m") + 1] in CHECKS, f"README line {command.line}: no check for {command.text}"


def test_quick_start_is_set_up_demo_and_tests_and_ci_runs_the_first_and_last():
  quick = bash_commands(section(TEXT, "Quick start"))
  assert len(quick) == 3 and len([b for b in fenced_blocks(section(TEXT, "Quick start"))]) == 3
  setup, demo, tests = (c.text for c in quick)
  assert is_ci_run(setup) and is_ci_run(tests) and not is_ci_run(demo)
  assert setup.startswith("python3 -m venv .venv") and tests == "python -m pytest -q"
  assert shlex.split(demo)[:4] == ["python", "-m", "ezclip_jax.main", "--config"]
  assert [c.text for c in COMMANDS if kind(c.text) == "ci"] == [setup, tests]


def test_placeholders_are_documented_and_bound(variables):
  used = set()
  for command in COMMANDS:
    text = command.text
    for literal, placeholder in LITERAL_PATHS.items():
      text = text.replace(literal, placeholder)
    used |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))
  table = section(TEXT, "Placeholders")
  documented = {name for row in table.splitlines() if row.startswith("| `$")
                for name in re.findall(r"\$([A-Z][A-Z0-9_]*)", row.split("|")[1])}
  assert used == documented
  assert documented == {k for k in variables if not k.startswith("_")}


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_readme_command(command, env):
  text = command.text
  for literal, placeholder in LITERAL_PATHS.items():
    text = text.replace(literal, placeholder)
  argv = shlex.split(text)
  what = kind(text)
  if what == "ci":
    return  # `.ci/run` runs it verbatim (is_ci_run), checked by the quick start test
  if what == "pip":
    check_pip(argv)
  elif what == "python":
    status, out, err = run_python(text, env)
    assert status == 0, f"README line {command.line} failed:\n{err[-4000:]}"
    CHECKS[argv[argv.index("-m") + 1]](shlex.split(expand(text, env)), out, env)
  elif what == "tpu-ssh":
    assert argv[5] == "$TPU_NAME" and "--worker=all" in argv and "--zone=$ZONE" in argv
    payload = [a for a in argv if a.startswith("--command=")]
    assert len(payload) == 1
    setup = bash_commands(section(TEXT, "Quick start"))[0].text
    for part in payload[0].removeprefix("--command=").split("&&"):
      _payload_part(part.strip(), setup, env)
  else:  # srun
    python = argv.index("python")
    options = dict(a.split("=", 1) for a in argv[1:python])
    assert set(options) <= set(SRUN_OPTIONS) and all(v.isdigit() for v in options.values()), options
    assert options["--ntasks-per-node"] == options["--gpus-per-node"]  # one process per GPU
    check_cluster_run(text[text.index(" python -m ") + 1:], env)


def test_config_table_lists_every_config_and_its_arguments():
  rows = {}
  for row in section(TEXT, "Configs").splitlines():
    cells = row.split("|")
    if len(cells) > 3 and cells[1].strip().startswith("`configs/"):
      rows[cells[1].strip().strip("`")] = set(re.findall(r"`([^`]+)`", cells[2]))
  experiments = {f"configs/{p.name}" for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common")}
  assert set(rows) == experiments
  for path, tokens in rows.items():
    args = [arg for file, arg in test_configs.CASES if f"configs/{file}" == path and arg]
    expected = {arg.partition(",")[0] for arg in args} | {"," + arg.partition(",")[2] for arg in args if "," in arg}
    assert tokens == expected, path


INLINE_FLAGS = sorted(set(re.findall(r"`(--config\.[\w.]+=[^`]*)`", TEXT)))
LOADABLE = (("k400_zero_shot.py", ""), ("zero_shot_eval.py", "ucf101"), ("base_to_novel.py", "hmdb51"),
            ("few_shot.py", "hmdb51,k=2"), ("demo.py", ""), ("video_folder.py", ""))


@pytest.mark.parametrize("flag", INLINE_FLAGS)
def test_inline_config_flags_exist(flag):
  errors = []
  for file, arg in LOADABLE:
    try:
      test_configs.load(file, arg, flag)
      return
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{file}: {e}")
  raise AssertionError(f"README flag {flag} loads in no config: {errors}")


@pytest.mark.parametrize("arch", ["ViT-B/16", "ViT-L/14"])
def test_mesh_shapes_of_the_readme_shard_the_models_evenly(arch):
  """Every `--config.mesh_shape` of the README builds a mesh of 8 devices that splits each
  parameter of the paper's architectures evenly."""
  shapes = [tuple(int(x) for x in flag.partition("=")[2].split(",")) for flag in INLINE_FLAGS
            if flag.startswith("--config.mesh_shape=")]
  assert len(shapes) >= 3
  model = model_lib.EZCLIP(model_lib.ARCHITECTURES[arch])
  boxed = jax.eval_shape(lambda: model_lib.init_boxed(model, jax.random.key(0)))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  for shape in shapes:
    mesh = sharding.make_mesh(shape)
    shardings = jax.tree.leaves(sharding.logical_shardings(boxed, mesh))
    assert len(shardings) == len(leaves)
    for leaf, spec in zip(leaves, shardings):
      spec.shard_shape(leaf.value.shape)  # raises if a dimension does not divide


def test_python_blocks_import_what_exists():
  blocks = [lines for language, _, lines in fenced_blocks(TEXT) if language == "python"]
  assert blocks
  for lines in blocks:
    for node in ast.walk(ast.parse("\n".join(lines))):
      if isinstance(node, ast.ImportFrom):
        module = importlib.import_module(node.module)
        for alias in node.names:
          assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def _resolve(dotted: str):
  """The object `a.b.c` names: the longest importable module prefix, then attributes."""
  parts = dotted.split(".")
  for end in range(len(parts), 0, -1):
    try:
      target = importlib.import_module(".".join(parts[:end]))
    except ModuleNotFoundError:
      continue
    for name in parts[end:]:
      target = getattr(target, name)
    return target
  raise ModuleNotFoundError(dotted)


def test_names_and_paths_in_the_text_exist():
  """Inline `ezclip_jax.x.y` names resolve and inline repository paths exist."""
  for number, line in enumerate(TEXT.splitlines(), start=1):
    assert line.startswith("```") or line.count("`") % 2 == 0, f"README line {number}: inline code spans lines"
  spans = re.findall(r"`([^`\n]+)`", TEXT)
  names = {m for span in spans for m in re.findall(r"^ezclip_jax(?:\.\w+)+", span)}
  assert names
  for name in names:
    _resolve(name)
  summary = _resolve("ezclip_jax.evaluate.base_to_novel_summary")([60.0, 60.0], [40.0, 40.0])
  assert summary["hm"] == pytest.approx(2 * 60 * 40 / (60 + 40))  # floats, as the README passes them
  paths = {span for span in spans if re.fullmatch(r"(configs|ezclip_jax|data|convert|tests|notebooks|\.ci)/[\w./-]+",
                                                   span)}
  assert len(paths) >= 5
  for path in paths:
    assert (REPO / path).exists(), path
