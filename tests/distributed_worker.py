"""One process of the multi-process tests (run by tests/test_distributed.py, not collected).

  python tests/distributed_worker.py step PROCESS_ID NUM_PROCESSES PORT OUT.npz
      two train steps on a (2, 2, 1) mesh over all processes' devices; each process feeds
      only its rows of the global batch. Process 0 writes the losses and trainable params.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402


def _initialize(process_id: int, num_processes: int, port: int) -> None:
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)


def run_steps(out: str) -> None:
  from ezclip_jax import optim  # pylint: disable=g-import-not-at-top
  from ezclip_jax import sharding  # pylint: disable=g-import-not-at-top
  from ezclip_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  from tests import references  # pylint: disable=g-import-not-at-top

  config = references.TINY_WITH_DROPOUT
  mesh = sharding.make_mesh((2, 2, 1))
  tx = optim.make_optimizer(references.optim_config(), total_steps=10, warmup_steps=1)
  params = references.random_variables(config)["params"]
  train_step = step_lib.create_train_step(config, tx, mesh, params, trainable_patterns=optim.DEFAULT_TRAINABLE)
  state = train_step.state
  rows = 8 // jax.process_count()
  start = jax.process_index() * rows
  losses = []
  for i in range(2):
    local = {k: v[start:start + rows] for k, v in references.train_batch(config, i).items()}
    state, metrics = train_step.step(state, step_lib.to_global(local, train_step.batch_shardings))
    losses.append(float(metrics["loss"]))
  leaves = [np.asarray(multihost_utils.process_allgather(x, tiled=True))
            for x in jax.tree.leaves(state.trainable)]
  if jax.process_index() == 0:
    np.savez(out, losses=np.array(losses), *leaves)


def main() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  mode, process_id, num_processes, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
  _initialize(process_id, num_processes, port)
  if mode != "step":
    raise ValueError(f"unknown mode {mode!r}")
  run_steps(sys.argv[5])


if __name__ == "__main__":
  main()
