"""Device mesh and shardings, derived from the logical axis names the model puts on its params.

Mesh axes are ('data', 'fsdp', 'tensor'). Batches shard over data x fsdp;
parameters follow `LOGICAL_AXIS_RULES` (the flax `lm1b` recipe: abstract init ->
logical partition specs -> mesh shardings). One code path serves 1 device, many
local devices and many hosts.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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

  Args:
    shape: mesh shape, e.g. (-1, 1, 1) for pure data parallelism.
    devices: defaults to all devices of all processes.

  Returns:
    The mesh.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(MESH_AXES) or shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}, "
                     "at most one of them -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices; "
                     f"there are {len(devices)}")
  device_grid = np.asarray(devices).reshape(shape)
  return Mesh(device_grid, MESH_AXES)


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
