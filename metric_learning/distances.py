r"""Pairwise and paired distances with NaN-free gradients.

Everything here follows three rules:

* The all-pairs squared euclidean distance uses the matmul form
  :math:`\|x\|^2 + \|y\|^2 - 2 x^\top y` with ``precision=HIGHEST``: TPU/GPU default
  matmul precision (bf16 / tf32 passes) mis-ranks close pairs, which breaks mining.
* The matmul form cancels catastrophically for (near-)identical points, leaving
  noise of the order of ``eps * (|x|^2 + |y|^2)``; values below that bound are
  set to exactly 0, so duplicates get distance 0 and gradient 0.
* ``sqrt`` has an infinite derivative at 0; the "double where" pattern feeds
  it a safe argument and selects 0 afterwards, so the gradient at zero distance
  is 0, never NaN.

fp16 / bf16 inputs are computed in fp32 and returned in the input dtype.

``"dot"`` is a *similarity*, not a distance: :func:`pairwise_distances` and
:func:`paired_distances` return :math:`x^\top y`, where larger means closer,
and the diagonal of ``pairwise_distances(x, metric="dot")`` is
:math:`\|x_i\|^2`, not 0. Everything that ranks by distance (miners, the
triplet family) must use the distance :math:`-x^\top y` instead; the
internal helpers below (``_pairwise``, ``_row_ranking``, ``_paired``) already
return that form for ``"dot"``, so for every metric they follow one rule:
smaller = closer. Only :data:`METRICS` (true distances) are accepted by the
distance-based losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _validation

# True distances (smaller = closer): what the distance-based losses accept.
METRICS = ("euclidean", "sqeuclidean", "cosine")
# Similarities (larger = closer); their internal distance form is the negation.
SIMILARITIES = ("dot",)
# Everything pairwise_distances / paired_distances accept.
ALL_METRICS = METRICS + SIMILARITIES

_HIGHEST = jax.lax.Precision.HIGHEST
# Multiple of eps * (|x|^2 + |y|^2) below which a matmul-form squared distance is
# indistinguishable from rounding noise.
_CANCELLATION_NOISE = 4.0


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


def _cosine_distance(cos: jax.Array) -> jax.Array:
  """1 - cos of unit vectors, in [0, 2]; rounding noise around 0 is set to 0."""
  d = jnp.minimum(1.0 - cos, 2.0)
  noise = 2 * _CANCELLATION_NOISE * jnp.finfo(d.dtype).eps
  return jnp.where(d > noise, d, 0.0)


def _pairwise(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """All-pairs distances of validated arrays in their (compute) dtype.

  Smaller = closer for every metric: ``"dot"`` gives the distance form
  :math:`-x^\top y`.
  """
  if metric == "dot":
    return -jnp.matmul(x, y.T, precision=_HIGHEST)
  if metric == "cosine":
    xn, yn = l2_normalize(x), l2_normalize(y)
    return _cosine_distance(jnp.matmul(xn, yn.T, precision=_HIGHEST))
  xx = jnp.sum(x * x, axis=-1)[:, None]
  yy = jnp.sum(y * y, axis=-1)[None, :]
  sq = xx + yy - 2.0 * jnp.matmul(x, y.T, precision=_HIGHEST)
  noise = _CANCELLATION_NOISE * jnp.finfo(sq.dtype).eps * (xx + yy)
  sq = jnp.where(sq > noise, sq, 0.0)
  return safe_sqrt(sq) if metric == "euclidean" else sq


def _row_ranking(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """``[n, m]`` scores that order each row exactly as its distances do.

  Mining only needs each row's order, so the row constant ``|x_i|^2``, the clamp
  and the sqrt are dropped: one fused pass after the matmul.
  """
  if metric == "dot":
    return -jnp.matmul(x, y.T, precision=_HIGHEST)
  if metric == "cosine":
    return -jnp.matmul(l2_normalize(x), l2_normalize(y).T, precision=_HIGHEST)
  yy = jnp.sum(y * y, axis=-1)[None, :]
  return yy - 2.0 * jnp.matmul(x, y.T, precision=_HIGHEST)


def _paired(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
  """Row-wise distances of validated arrays; the accurate difference form.

  ``"dot"`` gives the distance form :math:`-x^\top y`, as :func:`_pairwise`.
  """
  if metric == "dot":
    return -jnp.sum(x * y, axis=-1)
  if metric == "cosine":
    return _cosine_distance(jnp.sum(l2_normalize(x) * l2_normalize(y), axis=-1))
  diff = x - y
  sq = jnp.sum(diff * diff, axis=-1)
  return safe_sqrt(sq) if metric == "euclidean" else sq


def pairwise_distances(x: jax.Array, y: jax.Array | None = None, *,
                       metric: str = "euclidean") -> jax.Array:
  r"""Distances between every row of ``x`` and every row of ``y``.

  .. math::
    D_{ij} = \begin{cases}
      \|x_i - y_j\|_2 & \text{euclidean} \\
      \|x_i - y_j\|_2^2 & \text{sqeuclidean} \\
      1 - \frac{x_i^\top y_j}{\|x_i\| \|y_j\|} & \text{cosine} \\
      x_i^\top y_j & \text{dot (a similarity: larger = closer)}
    \end{cases}

  Computed with one matmul at ``HIGHEST`` precision. With ``y=None`` the
  diagonal of the distances is exactly 0 (for ``"dot"`` it is
  :math:`\|x_i\|^2`). The gradient at zero distance is 0, never NaN; a zero
  vector has cosine distance 1 to everything. To rank by ``"dot"`` where a
  distance is expected (a miner, a triplet loss), pass its negation
  :math:`-x_i^\top y_j`.

  Args:
    x: ``[n, dim]`` floating array.
    y: ``[m, dim]`` floating array, or None for ``y = x``.
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.

  Returns:
    ``[n, m]`` distances (similarities for ``"dot"``) in the dtype of ``x``
    (computed in fp32 or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [3.0, 4.0]])
    >>> ml.pairwise_distances(x).tolist()[1]
    [5.0, 0.0, 4.242640495300293, 0.0]
    >>> ml.pairwise_distances(x, metric="sqeuclidean").tolist()[0]
    [0.0, 25.0, 1.0, 25.0]
    >>> ml.pairwise_distances(x, metric="dot").tolist()[1]
    [0.0, 25.0, 4.0, 25.0]
  """
  _validation.choice(metric, "metric", ALL_METRICS)
  x = _validation.float_matrix(x, "x")
  same = y is None
  y = x if same else _validation.float_matrix(y, "y")
  _validation.same_dim(x, y, "x", "y")
  dtype = _validation.compute_dtype(jnp.result_type(x, y))
  d = _pairwise(x.astype(dtype), y.astype(dtype), metric)
  if metric in SIMILARITIES:
    d = -d        # back from the internal distance form to the similarity
  elif same:
    d = jnp.where(jnp.eye(d.shape[0], dtype=bool), 0.0, d)
  return d.astype(jnp.result_type(x, y))


def paired_distances(x: jax.Array, y: jax.Array, *,
                     metric: str = "euclidean") -> jax.Array:
  r"""Distances between matching rows: :math:`d_i = D(x_i, y_i)`.

  Uses the difference form :math:`\sum_k (x_{ik} - y_{ik})^2`, which is exact for
  close points (no cancellation); gradient 0 at zero distance. ``"dot"`` gives
  the similarity :math:`x_i^\top y_i` (larger = closer).

  Args:
    x: ``[n, dim]`` floating array.
    y: ``[n, dim]`` floating array.
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.

  Returns:
    ``[n]`` distances (similarities for ``"dot"``) in the dtype of ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.paired_distances(jnp.array([[0.0, 0.0], [1.0, 1.0]]),
    ...                     jnp.array([[3.0, 4.0], [1.0, 1.0]])).tolist()
    [5.0, 0.0]
  """
  _validation.choice(metric, "metric", ALL_METRICS)
  x = _validation.float_matrix(x, "x")
  y = _validation.float_matrix(y, "y")
  if x.shape != y.shape:
    raise ValueError(
        f"x and y must have the same shape; got {x.shape} and {y.shape}.")
  dtype = _validation.compute_dtype(jnp.result_type(x, y))
  d = _paired(x.astype(dtype), y.astype(dtype), metric)
  if metric in SIMILARITIES:
    d = -d
  return d.astype(jnp.result_type(x, y))
