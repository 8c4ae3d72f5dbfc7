"""Data-parallel train steps with global-batch mining.

``make_runner(mode, ...)`` returns a :class:`Runner` whose ``step`` takes and
returns host-level state and batches:

* ``"none"``: one device, ``jax.jit``.
* ``"pmap"``: ``jax.pmap`` over the local devices (the design the project was
  asked for). Each device holds ``batch / devices`` rows; the loss mines over
  the whole batch with ``axis_name`` and every device gets the gradient of its
  rows; parameter gradients are summed over devices (each device's share is
  its rows' contribution to the one global loss), so parameters stay equal to
  single-device training.
* ``"mesh"``: ``jax.jit`` over a ``jax.make_mesh`` data mesh, parameters
  replicated and the batch sharded — the path current JAX recommends; the
  loss sees the global batch and XLA inserts the collectives.

With several processes (``jax.distributed``), each feeds its slice of the
global batch; the returned metrics are global.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from metric_learning import registry
from metric_learning.training import state as state_lib

# The data-parallel modes by name: each builds a :class:`Runner`.
MODES = registry.Registry("parallel mode", field="parallel")
AXIS = "batch"


@dataclasses.dataclass
class Runner:
  step: Callable[[Any, dict], tuple[Any, dict]]
  put_state: Callable[[Any], Any]       # host state -> device state
  get_state: Callable[[Any], Any]       # device state -> host-level state (one copy)
  mode: str


def _check_divisible(batch_size: int, devices: int, mode: str) -> None:
  if batch_size % devices:
    raise ValueError(f"parallel={mode!r}: the global batch of {batch_size} rows "
                     f"(sampler.p * sampler.k) must divide evenly over {devices} devices.")


def make_runner(mode: str, graphdef, tx, make_loss: Callable[[str | None], Callable],
                batch_size: int, *, local_rows: bool = False,
                statistics: Callable | None = None,
                statistics_at: Callable | None = None,
                embed_chunk: int | None = None) -> Runner:
  """A runner for ``mode``.

  Args:
    mode: ``"none"``, ``"pmap"`` or ``"mesh"``.
    graphdef: the model's NNX graph definition.
    tx: the Optax optimizer.
    make_loss: ``make_loss(axis_name) -> loss(embeddings, labels, where)``; called
      with the pmap axis name under ``"pmap"`` (global-batch mining), else ``None``.
    batch_size: the global batch size (it must divide over the devices).
    local_rows: the batches given to ``step`` already hold only this process's
      rows (``batch_size / process_count`` of them, e.g. from
      :func:`metric_learning.data.pipeline.train_batches`, which decodes only
      this process's share); by default ``step`` gets the whole global batch and
      takes this process's rows itself.
    statistics, statistics_at: training statistics computed inside the step over
      the global batch, at the steps ``statistics_at`` chooses (see
      :func:`metric_learning.training.make_train_step`).
    embed_chunk: gradient caching (:func:`metric_learning.training.make_train_step`):
      each device embeds its rows this many at a time; it must divide them.

  Returns:
    A :class:`Runner`.
  """
  make_step = lambda loss_fn, axis_name=None: state_lib.make_train_step(
      graphdef, tx, loss_fn, axis_name=axis_name, statistics=statistics,
      statistics_at=statistics_at, embed_chunk=embed_chunk)
  runner = MODES.lookup(mode, field="parallel")(make_step, make_loss, batch_size,
                                               local_rows=local_rows)
  return dataclasses.replace(runner, mode=mode)


@MODES.register("none")
def _single_device(make_step, make_loss, batch_size, *, local_rows):
  """One device: the jitted step on the whole batch."""
  del batch_size, local_rows
  step = jax.jit(make_step(make_loss(None)), donate_argnums=0)
  return Runner(step, lambda s: s, lambda s: s, "none")


@MODES.register("pmap")
def _pmap(make_step, make_loss, batch_size, *, local_rows):
  """``jax.pmap`` over the local devices; the loss mines over the global batch
  (``axis_name``) and the gradients are summed over devices."""
  mode = "pmap"
  local = jax.local_device_count()
  _check_divisible(batch_size, jax.device_count(), mode)
  per_process = batch_size // jax.process_count()
  loss_fn = make_loss(AXIS)
  pstep = jax.pmap(make_step(loss_fn, AXIS), axis_name=AXIS, donate_argnums=0)

  def own_rows(batch):
    start = 0 if local_rows else jax.process_index() * per_process
    return {k: v[start:start + per_process].reshape((local, -1) + v.shape[1:])
            for k, v in batch.items()}

  def step(state, batch):
    state, metrics = pstep(state, own_rows(batch))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  put = lambda s: jax.tree.map(lambda a: jnp.broadcast_to(a, (local,) + a.shape), s)
  # The first local copy; with several processes the mapped array spans
  # devices of other processes too, so read this process's own shard.
  get = lambda s: jax.tree.map(
      lambda a: a.addressable_data(0).reshape(a.shape[1:]), s)
  return Runner(step, put, get, mode)


@MODES.register("mesh")
def _mesh(make_step, make_loss, batch_size, *, local_rows):
  """``jax.jit`` over a one-axis mesh with the batch sharded: the loss sees the
  global array, so no axis name is needed."""
  mode = "mesh"
  _check_divisible(batch_size, jax.device_count(), mode)
  mesh = jax.make_mesh((jax.device_count(),), (AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
  loss_fn = make_loss(None)
  jstep = jax.jit(make_step(loss_fn), donate_argnums=0,
                  out_shardings=(replicated, replicated))
  per_process = batch_size // jax.process_count()

  def put_batch(batch):
    if jax.process_count() == 1:
      return jax.device_put(batch, sharded)
    start = 0 if local_rows else jax.process_index() * per_process
    rows = {k: v[start:start + per_process] for k, v in batch.items()}
    return multihost_utils.host_local_array_to_global_array(rows, mesh, P(AXIS))

  def step(state, batch):
    return jstep(state, put_batch(batch))

  def put(state):
    if jax.process_count() == 1:
      return jax.device_put(state, replicated)
    return multihost_utils.host_local_array_to_global_array(state, mesh, P())

  def get(state):
    if jax.process_count() == 1:
      return state
    return multihost_utils.global_array_to_host_local_array(state, mesh, P())

  return Runner(step, put, get, mode)




def host_state(state) -> Any:
  """A plain numpy copy (for checkpoint comparisons in tests)."""
  return jax.tree.map(np.asarray, state)
