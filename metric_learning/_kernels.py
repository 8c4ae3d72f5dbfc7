r"""The distance kernels: every distance the library computes is computed here.

Internal and unvalidated: inputs are arrays already checked and cast to their
compute dtype by the caller (:func:`metric_learning.pairwise_distances` is the
validated public form). For every metric the kernels follow one rule, smaller =
closer: ``"dot"`` gives the distance form :math:`-x^\top y`.

* :func:`pairwise` -- all pairs, matmul form with ``precision=HIGHEST``; values
  below the cancellation-noise bound ``eps * (|x|^2 + |y|^2)`` are set to 0.
* :func:`row_ranking` -- all pairs, only each row's order (mining).
* :func:`paired` -- row-wise, the accurate difference form.

See :mod:`metric_learning.distances` for the rules and docs/numerics.md for
the float32 error of the matmul form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metric_learning import _validation

HIGHEST = jax.lax.Precision.HIGHEST
# Multiple of eps * (|x|^2 + |y|^2) below which a matmul-form squared distance is
# indistinguishable from rounding noise.
CANCELLATION_NOISE = 4.0


def safe_sqrt(x: jax.Array) -> jax.Array:
  """sqrt with gradient 0 (not inf/NaN) at 0; ``x`` must be ``>= 0``."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  r"""Scales vectors to unit L2 norm; zero vectors stay zero (finite gradient).

  Args:
    x: array of vectors, e.g. ``[batch, dim]``.
    axis: the vector axis.

  Returns:
    An array of the shape and dtype of ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
  """
  x = jnp.asarray(x)
  dtype = _validation.compute_dtype(x.dtype)
  x32 = x.astype(dtype)
  # Divide by the largest |component| first so that squares neither underflow
  # (tiny vectors) nor overflow (huge ones).
  scale = jax.lax.stop_gradient(jnp.max(jnp.abs(x32), axis=axis, keepdims=True))
  x32 = x32 / jnp.where(scale > 0, scale, 1.0)
  sq = jnp.sum(x32 * x32, axis=axis, keepdims=True)
  nonzero = sq > 0
  inv = jnp.where(nonzero, jax.lax.rsqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
  return (x32 * inv).astype(x.dtype)


def cosine_distance(cos: jax.Array) -> jax.Array:
  """1 - cos of unit vectors, in [0, 2]; rounding noise around 0 is set to 0."""
  d = jnp.minimum(1.0 - cos, 2.0)
  noise = 2 * CANCELLATION_NOISE * jnp.finfo(d.dtype).eps
  return jnp.where(d > noise, d, 0.0)


def pairwise(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """All-pairs distances of validated arrays in their (compute) dtype.

  Smaller = closer for every metric: ``"dot"`` gives the distance form
  :math:`-x^\top y`.
  """
  if metric == "dot":
    return -jnp.matmul(x, y.T, precision=HIGHEST)
  if metric == "cosine":
    xn, yn = l2_normalize(x), l2_normalize(y)
    return cosine_distance(jnp.matmul(xn, yn.T, precision=HIGHEST))
  return _squared_form(x, y, metric == "euclidean")


def _squared_form_values(x, y, root: bool):
  xx = jnp.sum(x * x, axis=-1)[:, None]
  yy = jnp.sum(y * y, axis=-1)[None, :]
  sq = xx + yy - 2.0 * jnp.matmul(x, y.T, precision=HIGHEST)
  noise = CANCELLATION_NOISE * jnp.finfo(sq.dtype).eps * (xx + yy)
  sq = jnp.where(sq > noise, sq, 0.0)
  return safe_sqrt(sq) if root else sq


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _squared_form(x, y, root: bool):
  r"""Euclidean (``root``) or squared euclidean distances, matmul form.

  Differentiated as autodiff would (0 where a distance was clamped to 0), by
  one rule instead of the chain through the clamp and :func:`safe_sqrt`:
  :math:`\dot S = 2(x \cdot \dot x + y \cdot \dot y - \dot x y^\top - x \dot y^\top)`,
  :math:`\dot D = \dot S / (2D)` (``root``) or :math:`\dot S`, masked where
  :math:`D = 0`. Its transpose is one fused pass over the matrix and two
  matmuls, where autodiff's chain of selects made XLA's CPU backend run several.
  """
  return _squared_form_values(x, y, root)


@_squared_form.defjvp
def _squared_form_jvp(root, primals, tangents):
  x, y = primals
  dx, dy = tangents
  d = _squared_form_values(x, y, root)
  dsq = 2.0 * (jnp.sum(x * dx, axis=-1)[:, None] + jnp.sum(y * dy, axis=-1)[None, :]
               - jnp.matmul(dx, y.T, precision=HIGHEST)
               - jnp.matmul(x, dy.T, precision=HIGHEST))
  positive = d > 0
  if root:
    dsq = dsq / (2.0 * jnp.where(positive, d, 1.0))
  return d, jnp.where(positive, dsq, 0.0)


def row_ranking(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """``[n, m]`` scores that order each row exactly as its distances do.

  Mining only needs each row's order, so the row constant ``|x_i|^2``, the clamp
  and the sqrt are dropped: one fused pass after the matmul.
  """
  if metric == "dot":
    return -jnp.matmul(x, y.T, precision=HIGHEST)
  if metric == "cosine":
    return -jnp.matmul(l2_normalize(x), l2_normalize(y).T, precision=HIGHEST)
  yy = jnp.sum(y * y, axis=-1)[None, :]
  return yy - 2.0 * jnp.matmul(x, y.T, precision=HIGHEST)


def paired(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """Row-wise distances of validated arrays; the accurate difference form.

  ``"dot"`` gives the distance form :math:`-x^\top y`, as :func:`pairwise`.
  """
  if metric == "dot":
    return -jnp.sum(x * y, axis=-1)
  if metric == "cosine":
    return cosine_distance(jnp.sum(l2_normalize(x) * l2_normalize(y), axis=-1))
  diff = x - y
  sq = jnp.sum(diff * diff, axis=-1)
  return safe_sqrt(sq) if metric == "euclidean" else sq
