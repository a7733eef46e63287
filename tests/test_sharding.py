"""The device mesh: filled shapes, topology order from JAX, one-line errors naming mesh_shape."""

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType
import numpy as np
import pytest

from ezclip_jax import sharding


def test_minus_one_takes_the_remaining_devices():
  mesh = sharding.make_mesh((-1, 2, 1))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert mesh.axis_types == (AxisType.Auto,) * 3
  np.testing.assert_array_equal(mesh.devices, mesh_utils.create_device_mesh((4, 2, 1), jax.devices()))


def test_given_devices_only():
  devices = jax.devices()[2:4]
  mesh = sharding.make_mesh((-1, 1, 1), devices)
  assert mesh.devices.flatten().tolist() == devices
  assert sharding.batch_shards(sharding.make_mesh((1, 1, 1), jax.devices()[:1])) == 1


@pytest.mark.parametrize("shape, message", [
    ((-1, 4, 1), r"mesh_shape \(-1, 4, 1\) does not fit the 2 devices \(its fixed sizes multiply to 4, which does "
                 r"not divide 2\); e.g. mesh_shape \(-1, 1, 1\) is data parallel over all 2"),
    ((1, 1, 1), r"mesh_shape \(1, 1, 1\) does not fit the 2 devices \(its sizes multiply to 1, not 2\)"),
    ((-1, -1, 1), r"mesh_shape \(-1, -1, 1\): expected 3 sizes \('data', 'fsdp', 'tensor'\)"),
    ((0, 1, 1), r"mesh_shape \(0, 1, 1\): expected 3 sizes"),
    ((2, 1), r"mesh_shape \(2, 1\): expected 3 sizes"),
])
def test_shapes_that_do_not_fit_are_one_line_errors(shape, message):
  with pytest.raises(ValueError, match=message) as error:
    sharding.make_mesh(shape, jax.devices()[:2])
  assert "\n" not in str(error.value)
