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
internal kernels (:mod:`metric_learning._kernels`) already return that form
for ``"dot"``, so for every metric they follow one rule: smaller = closer. Only :data:`METRICS` (true distances) are accepted by the
distance-based losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _kernels
from metric_learning import _validation
from metric_learning._kernels import l2_normalize  # noqa: F401  (public here)
from metric_learning._kernels import safe_sqrt  # noqa: F401  (public here)

# True distances (smaller = closer): what the distance-based losses accept.
METRICS = ("euclidean", "sqeuclidean", "cosine")
# Similarities (larger = closer); their internal distance form is the negation.
SIMILARITIES = ("dot",)
# Everything pairwise_distances / paired_distances accept.
ALL_METRICS = METRICS + SIMILARITIES


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
  d = _kernels.pairwise(x.astype(dtype), y.astype(dtype), metric)
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
  d = _kernels.paired(x.astype(dtype), y.astype(dtype), metric)
  if metric in SIMILARITIES:
    d = -d
  return d.astype(jnp.result_type(x, y))
