"""Packaging: an install holds only `ezclip_jax`, and the library imports none of the repository's tool folders."""

import ast
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
# The repository's top-level folders besides the library: tools run from a checkout.
TOOL_FOLDERS = ("benchmarks", "configs", "convert", "data", "notebooks", "tests")


def test_install_puts_only_the_library_into_site_packages(tmp_path):
  # A copy of the sources, so the build leaves nothing in the checkout and reads no stale build/.
  source = tmp_path / "source"
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                              "__pycache__", ".pytest_cache"))
  site = tmp_path / "site"
  result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(source)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  (dist_info,) = site.glob("ezclip_jax-*.dist-info")
  assert (dist_info / "top_level.txt").read_text().split() == ["ezclip_jax"]
  installed = {line.split(",")[0].split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines()}
  assert installed == {"ezclip_jax", dist_info.name}
  assert {p.name for p in site.iterdir()} == {"ezclip_jax", dist_info.name}
  assert (site / "ezclip_jax" / "assets" / "bpe_simple_vocab_16e6.txt.gz").is_file()
  assert (site / "ezclip_jax" / "synthetic.py").is_file()


def _imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
  modules = []
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
    if isinstance(node, ast.Import):
      modules += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      modules.append((node.lineno, node.module))
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant)):
      modules.append((node.lineno, node.args[0].value))
  return modules


def test_library_imports_no_tool_folder():
  library = sorted((REPO / "ezclip_jax").rglob("*.py"))
  assert len(library) > 10
  offending = [f"{path.relative_to(REPO)}:{line}: {module}" for path in library
               for line, module in _imported_modules(path) if module.split(".")[0] in TOOL_FOLDERS]
  assert not offending, offending
