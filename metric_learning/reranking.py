r"""k-reciprocal re-ranking of a query-gallery distance matrix, jitted.

Zhong, Zheng, Cao, Li. Re-ranking Person Re-identification with k-reciprocal
Encoding. CVPR 2017. Let :math:`d` be the distance on all :math:`N = Q + G`
samples (queries first), each row divided by its largest value, and
:math:`\mathcal N(i, k)` the :math:`k + 1` nearest samples of :math:`i` (itself
included; ties to the lower index). Then

* k-reciprocal neighbours: :math:`\mathcal R(i, k) = \{j \in \mathcal N(i, k):
  i \in \mathcal N(j, k)\}`;
* the expanded set :math:`\mathcal R^*(i)` is :math:`\mathcal R(i, k_1)` joined
  by every :math:`\mathcal R(c, \mathrm{round}(k_1/2))`, :math:`c \in \mathcal R(i,
  k_1)`, that has more than two thirds of its members in :math:`\mathcal R(i, k_1)`;
* :math:`V_{ij} = e^{-d_{ij}} / \sum_{l \in \mathcal R^*(i)} e^{-d_{il}}` on
  :math:`\mathcal R^*(i)`, 0 elsewhere; with :math:`k_2 > 1` (local query
  expansion) each row is replaced by the mean of the rows of its :math:`k_2`
  nearest samples;
* Jaccard distance :math:`d_J(i, j) = 1 - \frac{\sum_l \min(V_{il}, V_{jl})}
  {\sum_l \max(V_{il}, V_{jl})}` (rows of :math:`V` sum to one, so the
  denominator is :math:`2 - \sum_l \min`);
* result :math:`(1 - \lambda)\, d_J(q, g) + \lambda\, d(q, g)`.

These are the steps of the authors' released code (neighbour lists are cut at
:math:`N` when :math:`k_1 + 1` or :math:`k_2` exceed it). ``tests/reranking_test.py``
checks every value against a loop-by-loop NumPy reference.

Cost: O(N²) memory (the normalised distances and :math:`V`), O(N² log k)
time for the neighbour lists and O(Q · G · W) for the Jaccard sums, where
:math:`W \le k_2 (k_1 + 1)(\mathrm{round}(k_1/2) + 2)` bounds the non-zeros of a
row of :math:`V` (a gather of :math:`W` gallery columns per query, never a
:math:`Q \times G \times N` product).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _validation


def _reciprocal(neighbours: jax.Array) -> jax.Array:
  """``[n, m]`` bool: row ``i`` is among the neighbours of its neighbour ``a``."""
  n = neighbours.shape[0]
  back = neighbours[neighbours]                               # [n, m, m]
  return jnp.any(back == jnp.arange(n)[:, None, None], axis=-1)


@functools.partial(jax.jit, static_argnames=("k1", "k2"))
def _rerank(query_gallery, query_query, gallery_gallery, lambda_value, *, k1, k2):
  q = query_query.shape[0]
  d = jnp.concatenate([jnp.concatenate([query_query, query_gallery], axis=1),
                       jnp.concatenate([query_gallery.T, gallery_gallery], axis=1)], axis=0)
  d = d.astype(jnp.float32)
  n = d.shape[0]
  d = d / jnp.maximum(jnp.max(d, axis=1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  half = int(np.around(k1 / 2))
  k1, half, k2 = min(k1, n - 1), min(half, n - 1), min(k2, n)
  _, order = jax.lax.top_k(-d, max(k1 + 1, k2))               # ties: lower index first
  near = order[:, :k1 + 1]
  recip = _reciprocal(near)                                   # R(i, k1) = near[i][recip[i]]
  near_half = order[:, :half + 1]
  recip_half = _reciprocal(near_half)
  # Candidate c = near[i, a]; its set R(c, half) and how much of it lies in R(i, k1).
  cand = near_half[near]                                      # [n, k1+1, half+1]
  cand_in = recip_half[near]
  in_r = jnp.any((cand[..., None] == near[:, None, None, :]) & recip[:, None, None, :],
                 axis=-1)
  overlap = jnp.sum(cand_in & in_r, axis=-1)
  size = jnp.sum(cand_in, axis=-1)
  accept = recip & (3 * overlap > 2 * size)
  members = jnp.concatenate([jnp.where(recip, near, n),
                             jnp.where(accept[..., None] & cand_in, cand, n).reshape(n, -1)],
                            axis=1)
  member = jnp.zeros((n, n + 1), bool).at[jnp.arange(n)[:, None], members].set(True)[:, :n]
  weight = jnp.where(member, jnp.exp(-d), 0.0)
  v = weight / jnp.maximum(jnp.sum(weight, axis=1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  if k2 != 1:
    v = jnp.mean(v[order[:, :k2]], axis=1)
  width = min(n, k2 * (k1 + 1) * (half + 2))
  values, columns = jax.lax.top_k(v[:q], width)               # every non-zero of a query row
  v_gallery = v[q:]

  def shared(args):   # sum_l min(V_il, V_jl) over the gallery j, for one query
    val, col = args
    return jnp.sum(jnp.minimum(val[None, :], v_gallery[:, col]), axis=1)

  common = jax.lax.map(shared, (values, columns))             # [q, g]
  jaccard = 1.0 - common / (2.0 - common)
  return (1.0 - lambda_value) * jaccard + lambda_value * d[:q, q:]


def k_reciprocal_rerank(query_gallery, query_query, gallery_gallery, *, k1: int = 20,
                        k2: int = 6, lambda_value: float = 0.3) -> jax.Array:
  r"""Re-ranked query-gallery distances (Zhong et al. 2017; see the module docstring).

  The inputs are distances (non-negative, smaller = closer); Zhong et al.
  feed squared euclidean distances, which is what
  :func:`metric_learning.metrics.reid_metrics` passes for ``metric="euclidean"``.

  Args:
    query_gallery: ``[Q, G]`` distances from each query to each gallery sample.
    query_query: ``[Q, Q]`` distances among the queries.
    gallery_gallery: ``[G, G]`` distances among the gallery samples.
    k1: size of the k-reciprocal neighbourhood (static); the paper's 20.
    k2: local query expansion over this many neighbours (static; 1 = none); the paper's 6.
    lambda_value: weight of the original distance, in [0, 1]; the paper's 0.3.

  Returns:
    ``[Q, G]`` float32 distances, in [0, 1].

  Example:
    >>> import numpy as np
    >>> from metric_learning import distances, reranking
    >>> x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]], np.float32)
    >>> q, g = x[:1], x[1:]
    >>> sq = lambda a, b: distances.pairwise_distances(a, b, metric="sqeuclidean")
    >>> d = reranking.k_reciprocal_rerank(sq(q, g), sq(q, q), sq(g, g), k1=2, k2=1)
    >>> [int(i) for i in np.argsort(np.asarray(d)[0])]
    [0, 1, 2, 3]
  """
  qg = _validation.float_matrix(query_gallery, "query_gallery")
  qq = _validation.float_matrix(query_query, "query_query")
  gg = _validation.float_matrix(gallery_gallery, "gallery_gallery")
  nq, ng = qg.shape
  if qq.shape != (nq, nq):
    raise ValueError(f"query_query must be [{nq}, {nq}] (the queries of query_gallery "
                     f"{tuple(qg.shape)}), got {tuple(qq.shape)}.")
  if gg.shape != (ng, ng):
    raise ValueError(f"gallery_gallery must be [{ng}, {ng}] (the gallery of query_gallery "
                     f"{tuple(qg.shape)}), got {tuple(gg.shape)}.")
  for name, value in (("k1", k1), ("k2", k2)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  if isinstance(lambda_value, jax.Array):   # traced (under jit): its range is the caller's
    lambda_value = jnp.asarray(lambda_value, jnp.float32)
  elif not isinstance(lambda_value, (int, float, np.floating)) or not 0 <= lambda_value <= 1:
    raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}.")
  return _rerank(qg, qq, gg, jnp.asarray(lambda_value, jnp.float32), k1=int(k1), k2=int(k2))
