"""Checkpoints: orbax managers holding plain host arrays, resume with fallback.

Checkpoints hold plain NumPy arrays (typed PRNG keys as their key data): the
same bytes whichever device layout wrote them (one device, pmap, a mesh,
several processes), and readable without this library's classes.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from metric_learning.training import rundir


def manager(workdir: str, *, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
  """An orbax manager for ``workdir/checkpoints``; with several processes only
  process 0 writes (every process holds the same replicated state)."""
  directory = rundir.RunDir(os.path.abspath(workdir)).path(rundir.CHECKPOINTS)
  extra: dict[str, Any] = {"create": True}
  if jax.process_count() > 1:
    os.makedirs(directory, exist_ok=True)
    extra = {"create": False, "multiprocessing_options": ocp.options.MultiprocessingOptions(
        primary_host=0, active_processes={0})}
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **extra)
  return ocp.CheckpointManager(directory, options=options)


def _is_key(a) -> bool:
  return jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def storable(tree):
  """Host NumPy copy of ``tree``, typed PRNG keys as their key data."""
  return jax.tree.map(
      lambda a: np.asarray(jax.random.key_data(a) if _is_key(a) else a), tree)


def from_storable(template, stored):
  """Inverse of :func:`storable`, shaped like ``template``."""
  return jax.tree.map(
      lambda t, s: jax.random.wrap_key_data(jnp.asarray(s), impl=jax.random.key_impl(t))
      if _is_key(t) else jnp.asarray(s), template, stored)


def save(mgr: ocp.CheckpointManager, step: int, state) -> None:
  """Saves ``state`` at ``step`` (asynchronously; orbax renames atomically when done)."""
  mgr.save(step, args=ocp.args.StandardSave(storable(state)))


def restore_latest(mgr: ocp.CheckpointManager, state):
  """``(state, step)`` from the newest checkpoint that restores, else ``(state, 0)``.

  A corrupt newest checkpoint is skipped with a warning and the previous one used.
  """
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      restored = mgr.restore(step, args=ocp.args.StandardRestore(storable(state)))
      logging.info("Resumed from checkpoint at step %d.", step)
      return from_storable(state, restored), step
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Checkpoint at step %d could not be restored (%s); trying an "
                      "older one.", step, e)
  return state, 0


def latest_params(workdir: str, template):
  """The newest restorable checkpoint of ``workdir`` restored onto ``template``."""
  mgr = manager(workdir, max_to_keep=None)
  try:
    if not mgr.all_steps():
      raise FileNotFoundError(f"no checkpoint in {rundir.RunDir(workdir).path(rundir.CHECKPOINTS)!r}; "
                              "train first (python -m experiments.main --workdir=...).")
    return restore_latest(mgr, template)
  finally:
    mgr.close()


def broadcast_from_process_0(tree):
  """Process 0's values everywhere; typed PRNG keys travel as their key data."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return from_storable(tree, multihost_utils.broadcast_one_to_all(storable(tree)))
