"""Stopping a training on SIGTERM or SIGINT (Ctrl-C) with a checkpoint of the step it reached.

Preemptible and spot TPU VMs, Slurm and Kubernetes end a job with SIGTERM and a grace period.
On the first signal the training finishes its current step, saves a checkpoint (with the data
iterators' state) and exits 0; a second signal ends the process at once (the default action).

One process: Python handlers set a flag that the loop reads after each step. Many processes
(`jax.distributed`): JAX's preemption service catches SIGTERM on any process, and
`CheckpointManager.reached_preemption(step)` becomes true on every process at the same step,
so all save that step; SIGINT is passed on to it as SIGTERM.
"""

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import jax
import orbax.checkpoint as ocp

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Whether a stop was asked for; `requested(step, manager)` is called once per step by every process."""

  def __init__(self):
    self.signal_name: str | None = None

  def _on_signal(self, number: int, frame) -> None:
    del frame
    self.signal_name = signal.Signals(number).name
    if jax.process_count() > 1:
      signal.signal(number, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGTERM)  # into JAX's preemption service, which agrees on a step
      return
    for other in _SIGNALS:  # a second signal ends the process at once
      signal.signal(other, signal.SIG_DFL)

  def requested(self, step: int, manager: ocp.CheckpointManager) -> bool:
    if jax.process_count() > 1:
      reached = manager.reached_preemption(step)
      if reached:
        self.signal_name = self.signal_name or "SIGTERM"
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
      return reached
    return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
  """Catches SIGTERM and SIGINT for the block (in the main thread; elsewhere nothing is caught)."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  # With many processes JAX's preemption service owns SIGTERM; only SIGINT is redirected to it.
  caught = _SIGNALS if jax.process_count() == 1 else (signal.SIGINT,)
  handler = request._on_signal  # pylint: disable=protected-access
  previous = {number: signal.signal(number, handler) for number in caught}
  try:
    yield request
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)
