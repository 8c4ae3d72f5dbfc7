"""Trace-time argument checks shared by the public functions.

Every check runs on static information only (shapes, dtypes, Python values), so it
costs nothing inside ``jax.jit`` and fails before any computation starts.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def unknown_name(value: Any, known: Sequence[str], *, field: str, kind: str) -> str:
  """The one message for a name no registry holds: one line, the closest valid
  name when there is one, the known names when they are few.

  Example:
    >>> unknown_name("batch_hard_triplet_los", ["batch_hard_triplet_loss", "npair_loss"],
    ...              field="config.loss.name", kind="loss")
    "config.loss.name: unknown loss 'batch_hard_triplet_los'; did you mean 'batch_hard_triplet_loss'?"
  """
  known = sorted(map(str, known))
  close = difflib.get_close_matches(str(value), known, n=1, cutoff=0.6)
  if close:
    return f"{field}: unknown {kind} {value!r}; did you mean {close[0]!r}?"
  if len(known) <= 12:
    return f"{field}: unknown {kind} {value!r}; the {kind} names are {', '.join(known)}."
  return (f"{field}: unknown {kind} {value!r}; there are {len(known)} {kind} names, "
          f"{', '.join(known[:6])}, ... (the registry lists them all).")


def choice(value: Any, name: str, allowed: Sequence[str]) -> str:
  if not isinstance(value, str) or value not in allowed:
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}{hint}.")
  return value


def known_settings(settings, known, *, field: str, owner: str) -> None:
  """Fails naming the first of ``settings`` that is not in ``known``.

  The one message every registry (losses, models, datasets) and the experiment
  config use: ``{field}.{key} is not an argument of {owner}; its arguments are
  [...]``.
  """
  for key in settings:
    if key not in known:
      close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
      if close:
        raise ValueError(f"{field}.{key} is not an argument of {owner}; did you mean "
                         f"{field}.{close[0]}?")
      raise ValueError(f"{field}.{key} is not an argument of {owner}; its arguments are "
                       f"{sorted(known)}.")


def float_matrix(x: Any, name: str) -> jax.Array:
  """A [batch, dim] floating array."""
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D array [batch, dim]; got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must have a floating dtype; got {x.dtype}.")
  return x


def same_dim(x: jax.Array, y: jax.Array, x_name: str, y_name: str) -> None:
  if x.shape[-1] != y.shape[-1]:
    raise ValueError(
        f"{x_name} and {y_name} must have the same embedding dimension; got "
        f"shapes {x.shape} and {y.shape}.")


def int_vector(labels: Any, size: int, name: str,
               size_name: str = "embeddings") -> jax.Array:
  """A [size] integer array."""
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != size:
    raise ValueError(
        f"{name} must have shape [{size}] to match {size_name}; got shape "
        f"{labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"{name} must have an integer dtype; got {labels.dtype}.")
  return labels


def bool_vector(where: Any, size: int, name: str,
                size_name: str = "embeddings") -> jax.Array:
  """A [size] boolean mask; None means every row is real."""
  if where is None:
    return jnp.ones((size,), dtype=bool)
  where = jnp.asarray(where)
  if where.ndim != 1 or where.shape[0] != size:
    raise ValueError(
        f"{name} must have shape [{size}] to match {size_name}; got shape "
        f"{where.shape}.")
  if where.dtype != jnp.bool_:
    raise TypeError(f"{name} must be a boolean array; got {where.dtype}.")
  return where


def square_matrix(d: Any, name: str) -> jax.Array:
  d = jnp.asarray(d)
  if d.ndim != 2 or d.shape[0] != d.shape[1]:
    raise ValueError(f"{name} must be a square [batch, batch] array; got "
                     f"shape {d.shape}.")
  if not jnp.issubdtype(d.dtype, jnp.floating):
    raise TypeError(f"{name} must have a floating dtype; got {d.dtype}.")
  return d


def nonnegative(value: Any, name: str) -> None:
  """Rejects negative concrete values; traced values are not checked."""
  if isinstance(value, jax.core.Tracer):
    return
  if np.any(np.asarray(value) < 0):
    raise ValueError(f"{name} must be non-negative; got {value!r}.")


def positive(value: Any, name: str) -> None:
  if isinstance(value, jax.core.Tracer):
    return
  if np.any(np.asarray(value) <= 0):
    raise ValueError(f"{name} must be positive; got {value!r}.")


def block_size(value: Any) -> int | None:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"block_size must be None or a positive int; got {value!r}.")
  if value <= 0:
    raise ValueError(f"block_size must be a positive int; got {value!r}.")
  return int(value)


def compute_dtype(dtype) -> jnp.dtype:
  """fp16/bf16 are computed in fp32; fp32/fp64 as they are."""
  return jnp.promote_types(dtype, jnp.float32)
