"""Keeps an installed libtpu quiet on machines without TPU chips.

The `[tpu]` and `[test]` extras install libtpu (for compiling TPU steps anywhere, see
`ezclip_jax.plan`). Once it is installed, JAX tries the TPU backend whenever
JAX_PLATFORMS is unset, and on a machine without chips libtpu prints about six lines
of warnings (it cannot query the TPU VM metadata for the accelerator type and worker
hostnames) before JAX falls back to the next platform; it also holds a lock that stops
other processes from loading libtpu. Placeholder values for those settings make it fail
quietly instead, without the lock; JAX still picks GPUs or the CPU as before. On a TPU
VM nothing is changed.
"""

import glob
import os
import pathlib

# Any accelerator type libtpu knows and this host as the only worker: with no chip attached
# libtpu then reports "no TPU device found" to JAX without warnings. Without chips its
# one-process-at-a-time lock (/tmp/libtpu_lockfile) guards nothing, and taken it would make
# `ezclip_jax.plan` fail while another JAX process runs.
NO_TPU_ENV = {"TPU_ACCELERATOR_TYPE": "v5litepod-1", "TPU_WORKER_HOSTNAMES": "localhost",
              "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
_DEV = "/dev"
_PCI_DEVICES = "/sys/bus/pci/devices"
_GOOGLE_PCI_VENDOR = "0x1ae0"
_PCI_NETWORK_CLASS = "0x02"  # Google's virtual NIC (gVNIC) has the same vendor id


def has_tpu_chips() -> bool:
  """Whether this machine has TPU chips attached.

  libtpu opens the chips as /dev/accel* or, on some generations, as VFIO groups
  /dev/vfio/N; JAX counts them as Google PCI devices (`jax._src.hardware_utils`). Any of
  these counts.
  """
  vfio_groups = [p for p in glob.glob(f"{_DEV}/vfio/*") if os.path.basename(p) != "vfio"]
  if glob.glob(f"{_DEV}/accel*") or vfio_groups:
    return True
  for vendor in glob.glob(f"{_PCI_DEVICES}/*/vendor"):
    device = pathlib.Path(vendor).parent
    try:
      google = pathlib.Path(vendor).read_text().strip() == _GOOGLE_PCI_VENDOR
      if google and not (device / "class").read_text().strip().startswith(_PCI_NETWORK_CLASS):
        return True
    except OSError:
      continue
  return False


def quiet_absent_tpu() -> None:
  """When JAX_PLATFORMS is unset and there is no TPU, sets `NO_TPU_ENV` (what is not set already).

  Call before JAX initialises its backends (the first `jax.devices()` or computation).
  """
  if os.environ.get("JAX_PLATFORMS") or has_tpu_chips():
    return
  for name, value in NO_TPU_ENV.items():
    os.environ.setdefault(name, value)
