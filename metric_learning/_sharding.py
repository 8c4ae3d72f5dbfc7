"""Helpers for arrays sharded over an Explicit mesh axis (``jax.sharding.AxisType.Explicit``).

Under ``jax.jit`` on an Explicit mesh, an op whose result would be sharded
twice along one mesh axis (``x @ x.T`` with both sides batch-sharded) is a
``ShardingTypeError``. Mining needs the candidate side whole on every device,
so it is resharded to replicated on purpose; anchors stay sharded.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec


def is_explicitly_sharded(x: jax.Array) -> bool:
  try:
    sharding = jax.typeof(x).sharding
    mesh, spec = sharding.mesh, sharding.spec
  except (AttributeError, TypeError):
    return False
  explicit = {name for name, kind in zip(mesh.axis_names, getattr(mesh, "axis_types", ()))
              if kind == jax.sharding.AxisType.Explicit}
  used = set()
  for entry in spec:
    used.update(entry if isinstance(entry, tuple) else (entry,))
  return bool(explicit & used)


def replicate(x: jax.Array) -> jax.Array:
  """``x`` replicated on every device if it is sharded over an Explicit axis."""
  return jax.reshard(x, PartitionSpec()) if is_explicitly_sharded(x) else x


def take_rows(table: jax.Array, index: jax.Array) -> jax.Array:
  """``table[index]`` (rows); the result follows ``index``'s explicit sharding."""
  if is_explicitly_sharded(index):
    spec = PartitionSpec(*jax.typeof(index).sharding.spec, None)
    return table.at[index].get(out_sharding=spec)
  return table[index]
