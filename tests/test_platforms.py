"""platforms: TPU detection and the libtpu settings for machines without a TPU."""

import os
import subprocess
import sys

import pytest

from ezclip_jax import platforms


@pytest.fixture
def machine(tmp_path, monkeypatch):
  """An empty /dev and PCI bus under tmp_path; returns a function that adds a file."""
  monkeypatch.setattr(platforms, "_DEV", str(tmp_path / "dev"))
  monkeypatch.setattr(platforms, "_PCI_DEVICES", str(tmp_path / "pci"))

  def add(path: str, text: str = "") -> None:
    file = tmp_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)

  return add


def _pci(add, slot: str, vendor: str, device_class: str) -> None:
  add(f"pci/{slot}/vendor", vendor + "\n")
  add(f"pci/{slot}/class", device_class + "\n")


def test_no_tpu_devices(machine):
  machine("dev/null")
  machine("dev/vfio/vfio")  # the VFIO control node exists without any device bound
  _pci(machine, "0000:00:04.0", "0x1ae0", "0x020000")  # gVNIC, Google's virtual NIC
  _pci(machine, "0000:00:05.0", "0x8086", "0x120000")
  assert not platforms.has_tpu_chips()


@pytest.mark.parametrize("path", ["dev/accel0", "dev/vfio/0"])
def test_tpu_device_nodes(machine, path):
  machine(path)
  assert platforms.has_tpu_chips()


def test_tpu_on_the_pci_bus(machine):
  _pci(machine, "0000:00:05.0", "0x1ae0", "0x120000")
  assert platforms.has_tpu_chips()


@pytest.mark.parametrize("jax_platforms, chips, expected", [
    (None, False, platforms.NO_TPU_ENV),
    ("cpu", False, {}),
    (None, True, {}),
])
def test_quiet_absent_tpu_sets_placeholders_only_without_tpu_or_platforms(monkeypatch, jax_platforms, chips,
                                                                          expected):
  for name in platforms.NO_TPU_ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  if jax_platforms:
    monkeypatch.setenv("JAX_PLATFORMS", jax_platforms)
  monkeypatch.setattr(platforms, "has_tpu_chips", lambda: chips)
  platforms.quiet_absent_tpu()
  assert {name: os.environ[name] for name in platforms.NO_TPU_ENV if name in os.environ} == expected


def test_quiet_absent_tpu_keeps_settings_already_made(monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2")
  monkeypatch.setattr(platforms, "has_tpu_chips", lambda: False)
  platforms.quiet_absent_tpu()
  assert os.environ["TPU_WORKER_HOSTNAMES"] == "10.0.0.2"


def test_jax_starts_silently_with_libtpu_installed():
  import libtpu  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # the [test] extra has it

  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS" and k not in platforms.NO_TPU_ENV}
  code = ("from ezclip_jax import platforms; platforms.quiet_absent_tpu(); import jax; "
          "print(jax.devices()[0].platform)")
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=True)
  assert result.stderr == ""
  assert result.stdout.strip() in ("cpu", "gpu", "tpu")
