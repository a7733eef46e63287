"""Device mesh and shardings, derived from the logical axis names the model puts on its params.

Mesh axes are ('data', 'fsdp', 'tensor'). Batches shard over data x fsdp;
parameters follow `LOGICAL_AXIS_RULES` (the flax `lm1b` recipe: abstract init ->
logical partition specs -> mesh shardings). One code path serves 1 device, many
local devices and many hosts.
"""

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axis. Names not listed stay replicated.
LOGICAL_AXIS_RULES = (
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("adapter", "tensor"),
)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh; one entry of `shape` may be -1 (fills the rest).

  `jax.make_mesh` orders the devices so that neighbouring mesh positions are neighbours in
  the physical topology (TPU ICI rings, GPU NVLink islands). The axes are `Auto`: shardings
  are given explicitly to `jax.jit`, not carried by the array types.

  Args:
    shape: mesh shape (`config.mesh_shape`), e.g. (-1, 1, 1) for pure data parallelism.
    devices: defaults to all devices of all processes (also: devices of a TPU topology
      that is only compiled for, not attached).

  Returns:
    The mesh.

  Raises:
    ValueError: `shape` is malformed or does not fit the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(shape)
  count = len(devices)
  if len(shape) != len(MESH_AXES) or shape.count(-1) > 1 or any(s < 1 and s != -1 for s in shape):
    raise ValueError(f"mesh_shape {shape}: expected {len(MESH_AXES)} sizes {MESH_AXES}, each at least 1 "
                     "or one of them -1 (the remaining devices)")
  fixed = math.prod(s for s in shape if s != -1)
  if (count % fixed if -1 in shape else fixed != count):
    need = f"its fixed sizes multiply to {fixed}, which does not divide" if -1 in shape else (
        f"its sizes multiply to {fixed}, not")
    raise ValueError(f"mesh_shape {shape} does not fit the {count} devices ({need} {count}); "
                     f"e.g. mesh_shape (-1, 1, 1) is data parallel over all {count}")
  shape = tuple(count // fixed if s == -1 else s for s in shape)
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def one_device_mesh() -> Mesh:
  """A (1, 1, 1) mesh on this process's first device: the mesh of tools that run on one device."""
  return make_mesh((1, 1, 1), jax.local_devices()[:1])


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(boxed_tree, mesh: Mesh):
  """Mesh shardings of a tree of `nn.LogicallyPartitioned` leaves (e.g. from `jax.eval_shape(init)`)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch axis is split."""
  return mesh.shape["data"] * mesh.shape["fsdp"]
