r"""Per-anchor miners: which positive and negative each anchor uses.

Batch-hard, easy-positive, semi-hard (FaceNet and TensorFlow Addons), batch-all,
rank ranges and distance-weighted sampling; see :mod:`metric_learning.mining`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _validation
from metric_learning import reductions
from metric_learning.mining import blocks
from metric_learning.mining.selections import PairSelection
from metric_learning.mining.selections import RankSelection
from metric_learning.mining.selections import TripletCounts
from metric_learning.mining.selections import TripletSelection

SEMI_HARD_DEFINITIONS = ("facenet", "tfa")


def batch_hard(distances: jax.Array, labels: jax.Array, *,
               where: jax.Array | None = None,
               axis_name: str | None = None) -> TripletSelection:
  r"""Batch-hard mining (Hermans et al. 2017).

  .. math::
    p(i) = \arg\max_{j \in P(i)} D_{ij}, \qquad n(i) = \arg\min_{k \in N(i)} D_{ik}

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    where: optional ``[batch]`` bool; False marks padding rows.

  Every miner also takes ``axis_name``: inside ``pmap`` / ``shard_map``,
  ``distances`` is then ``[local, global]`` (this device's rows against the
  all-gathered batch) and indices refer to the global batch.

  Returns:
    :class:`TripletSelection` with ``[batch]`` fields.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
    >>> sel = ml.mining.batch_hard(ml.pairwise_distances(x), jnp.array([0, 0, 1, 1]))
    >>> sel.positive_index.tolist(), sel.negative_index.tolist()
    ([1, 0, 3, 2], [2, 2, 1, 1])
  """
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  return blocks.select_triplets(distances, masks, positive="hard")


def easy_positive(distances: jax.Array, labels: jax.Array, *,
                  where: jax.Array | None = None,
               axis_name: str | None = None) -> TripletSelection:
  r"""Easy-positive, hard-negative mining (Xuan et al. 2020).

  .. math::
    p(i) = \arg\min_{j \in P(i)} D_{ij}, \qquad n(i) = \arg\min_{k \in N(i)} D_{ik}

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    :class:`TripletSelection` with ``[batch]`` fields.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [5.0], [3.0], [7.0]])
    >>> sel = ml.mining.easy_positive(ml.pairwise_distances(x), jnp.array([0, 0, 0, 1, 1]))
    >>> sel.positive_index.tolist()
    [1, 0, 1, 4, 3]
  """
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  return blocks.select_triplets(distances, masks, positive="easy")


def semi_hard(distances: jax.Array, labels: jax.Array, *, margin=0.2,
              definition: str = "facenet", where: jax.Array | None = None,
              axis_name: str | None = None):
  r"""Semi-hard mining under one of two definitions.

  * ``"facenet"`` (Schroff et al. 2015): every triplet with
    :math:`D_{ij} < D_{ik} < D_{ij} + m`; returns :class:`TripletCounts`
    (how many per anchor; all of them have a non-zero hinge loss).
  * ``"tfa"`` (TensorFlow Addons ``triplet_semihard_loss``): for every positive
    pair, the closest negative with :math:`D_{ik} > D_{ij}`, or else the
    farthest negative; returns :class:`PairSelection`.

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0` (only used by ``"facenet"``).
    definition: ``"facenet"`` or ``"tfa"``.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    :class:`TripletCounts` (``"facenet"``) or :class:`PairSelection` (``"tfa"``).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
    >>> d, y = ml.pairwise_distances(x), jnp.array([0, 0, 1, 1])
    >>> ml.mining.semi_hard(d, y, margin=1.0).num_triplets.tolist()
    [1, 0, 0, 1]
    >>> ml.mining.semi_hard(d, y, definition="tfa").negative_index[0].tolist()
    [-1, 2, -1, -1]
  """
  _validation.choice(definition, "definition", SEMI_HARD_DEFINITIONS)
  _validation.nonnegative(margin, "margin")
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  if definition == "tfa":
    index, valid = blocks.tfa_selection(distances, masks.positive, masks.negative)
    neg = blocks.gather_rows(distances, index)
    return PairSelection(negative_index=index,
                         positive_distance=jnp.where(valid, distances, 0),
                         negative_distance=jnp.where(valid, neg, 0), valid=valid)
  counts = blocks.semi_hard_counts(distances, masks.positive, masks.negative, margin)
  return TripletCounts(num_triplets=counts, num_active=counts)


def batch_all(distances: jax.Array, labels: jax.Array, *, margin=0.2,
              where: jax.Array | None = None,
               axis_name: str | None = None) -> TripletCounts:
  r"""Counts every valid triplet and the active ones, per anchor.

  .. math::
    T_i = |P(i)| \cdot |N(i)|, \qquad
    A_i = |\{(j, k) : j \in P(i), k \in N(i), m + D_{ij} - D_{ik} > 0\}|

  Counted without the triplet cube (:func:`blocks.window_sums`: O(batch²)
  per positive slot for few positives per anchor, O(batch² log batch) sorted
  otherwise). For the dense triplet cube itself see :func:`metric_learning.masks.triplet_mask`.

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0`.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    :class:`TripletCounts` with ``[batch]`` fields.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
    >>> c = ml.mining.batch_all(ml.pairwise_distances(x), jnp.array([0, 0, 1, 1]))
    >>> c.num_triplets.tolist(), c.num_active.tolist()
    ([2, 2, 2, 2], [0, 1, 2, 0])
  """
  _validation.nonnegative(margin, "margin")
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  counts = jnp.sum(masks.positive, -1) * jnp.sum(masks.negative, -1)
  fixed = jax.lax.stop_gradient(distances)
  active = blocks.window_sums(fixed, masks.positive, masks.negative, margin, lower=False)[2]
  return TripletCounts(num_triplets=counts.astype(jnp.int32),
                       num_active=active.astype(jnp.int32))


def rank_range(distances: jax.Array, labels: jax.Array, *,
               positive_ranks: tuple[int, int] = (0, 1),
               negative_ranks: tuple[int, int] = (0, 1),
               where: jax.Array | None = None,
               axis_name: str | None = None) -> RankSelection:
  r"""Positives and negatives at hardness ranks ``[lo, hi)`` (hardest = rank 0).

  Positives are ranked by decreasing distance, negatives by increasing distance.
  ``(0, k)`` gives the hardest k (``hardest-k``); skipping the first ranks
  (e.g. ``negative_ranks=(2, 5)``) guards against label noise, as OML's
  ``NHardTripletsMiner`` does. Ranks beyond an anchor's count are invalid.

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    positive_ranks: static ``(lo, hi)`` with ``0 <= lo < hi``.
    negative_ranks: static ``(lo, hi)`` with ``0 <= lo < hi``.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    :class:`RankSelection`.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [2.0], [4.0], [5.0]])
    >>> sel = ml.mining.rank_range(ml.pairwise_distances(x), jnp.array([0, 0, 0, 1, 1]),
    ...                            negative_ranks=(0, 2))
    >>> sel.negative_index[0].tolist(), sel.negative_valid[3].tolist()
    ([3, 4], [True, True])
  """
  for name, ranks in (("positive_ranks", positive_ranks),
                      ("negative_ranks", negative_ranks)):
    if (not isinstance(ranks, tuple) or len(ranks) != 2
        or not all(isinstance(r, int) for r in ranks)
        or not 0 <= ranks[0] < ranks[1]):
      raise ValueError(f"{name} must be a tuple (lo, hi) of ints with "
                       f"0 <= lo < hi; got {ranks!r}.")
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  size = distances.shape[1]

  def top(scores, mask, ranks):
    lo, hi = ranks
    k = min(hi, size)
    vals, idx = jax.lax.top_k(jnp.where(mask, scores, -jnp.inf), k)
    vals, idx = vals[:, lo:], idx[:, lo:]
    pad = hi - max(k, lo)
    if pad:
      vals = jnp.pad(vals, ((0, 0), (0, pad)), constant_values=-jnp.inf)
      idx = jnp.pad(idx, ((0, 0), (0, pad)))
    valid = jnp.isfinite(vals)
    return (jnp.where(valid, idx, -1),
            jnp.where(valid, blocks.gather_rows(distances, idx), 0), valid)

  pi, pd, pv = top(distances, masks.positive, positive_ranks)
  ni, nd, nv = top(-distances, masks.negative, negative_ranks)
  return RankSelection(positive_index=pi, positive_distance=pd, positive_valid=pv,
                       negative_index=ni, negative_distance=nd, negative_valid=nv)


def distance_weighted(distances: jax.Array, labels: jax.Array, *, key: jax.Array,
                      dim: int, cutoff: float = 0.5,
                      nonzero_loss_cutoff: float = 1.4,
                      where: jax.Array | None = None,
               axis_name: str | None = None) -> TripletSelection:
  r"""Distance-weighted sampling (Wu et al. 2017) for unit-norm embeddings.

  One positive per anchor uniformly at random, and one negative with
  probability :math:`\propto 1 / q(D_{ik})` where
  :math:`q(d) \propto d^{n-2} (1 - d^2/4)^{(n-3)/2}` is the density of pairwise
  distances of uniform points on the unit sphere :math:`S^{n-1}`; distances are
  clipped below at ``cutoff`` and negatives at or beyond ``nonzero_loss_cutoff``
  are not sampled (they could not contribute). If an anchor has no negative
  below the cutoff, one of its negatives is drawn uniformly.

  Args:
    key: a PRNG key (keyword-only: arrays first, options after, as everywhere in
      this library — ``margin_loss(..., key=...)`` takes it the same way).
    distances: ``[batch, batch]`` euclidean distances of L2-normalised embeddings.
    labels: ``[batch]`` integer labels.
    dim: the embedding dimension :math:`n`.
    cutoff: lower clip of distances.
    nonzero_loss_cutoff: negatives at this distance or farther are not sampled.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    :class:`TripletSelection` with ``[batch]`` fields.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = ml.l2_normalize(jax.random.normal(jax.random.key(0), (6, 8)))
    >>> sel = ml.mining.distance_weighted(ml.pairwise_distances(x),
    ...                                   jnp.array([0, 0, 1, 1, 2, 2]),
    ...                                   key=jax.random.key(1), dim=8)
    >>> sel.valid.tolist()
    [True, True, True, True, True, True]
  """
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  if distances.shape[-1] == 0:     # nothing to sample from (categorical needs a column)
    none = jnp.full(distances.shape[:1], -1, jnp.int32)
    zero = jnp.zeros(distances.shape[:1], distances.dtype)
    return TripletSelection(positive_index=none, negative_index=none, positive_distance=zero,
                            negative_distance=zero, valid=masks.valid_anchor)
  d = jnp.maximum(distances, cutoff)
  log_q = ((dim - 2.0) * jnp.log(d)
           + ((dim - 3.0) / 2.0) * jnp.log(jnp.maximum(1.0 - 0.25 * d * d, 1e-8)))
  near = masks.negative & (distances < nonzero_loss_cutoff)
  use = jnp.where(jnp.any(near, axis=-1, keepdims=True), near, masks.negative)
  # 1/q, stabilised per row; the max shift cancels in the categorical.
  log_w = jnp.where(use, -log_q, -jnp.inf)
  pkey, nkey = jax.random.split(key)
  ni = jax.random.categorical(nkey, log_w, axis=-1)
  pi = jax.random.categorical(
      pkey, jnp.where(masks.positive, 0.0, -jnp.inf), axis=-1)
  valid = masks.valid_anchor
  pi, ni = jnp.where(valid, pi, -1), jnp.where(valid, ni, -1)
  return TripletSelection(
      positive_index=pi, negative_index=ni,
      positive_distance=jnp.where(valid, blocks.gather_rows(distances, pi[:, None])[:, 0], 0),
      negative_distance=jnp.where(valid, blocks.gather_rows(distances, ni[:, None])[:, 0], 0),
      valid=valid)


def statistics(distances: jax.Array, labels: jax.Array, *, margin=0.2,
               where: jax.Array | None = None,
               axis_name: str | None = None) -> dict[str, jax.Array]:
  r"""Scalars a training loop can log about what mining sees.

  Keys: ``valid_anchor_fraction`` (of real rows), ``active_anchor_fraction``
  (valid anchors whose batch-hard hinge :math:`m + d^+_i - d^-_i` is > 0),
  ``active_triplet_fraction`` (of all valid triplets, hinge > 0),
  ``hardest_positive_mean`` / ``hardest_negative_mean`` (over valid anchors).

  Args:
    distances: ``[batch, batch]`` distances.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0`.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    A dict of float32 scalars; every value is 0, never NaN, on empty batches.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
    >>> s = ml.mining.statistics(ml.pairwise_distances(x), jnp.array([0, 0, 1, 1]))
    >>> round(float(s["active_anchor_fraction"]), 2), float(s["hardest_positive_mean"])
    (0.5, 1.75)
  """
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  sel = blocks.select_triplets(distances, masks)
  counts = batch_all(distances, labels, margin=margin, where=where, axis_name=axis_name)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  valid = sel.valid
  return {
      "valid_anchor_fraction": reductions.masked_mean(f32(valid), masks.anchor_where),
      "active_anchor_fraction": reductions.masked_mean(
          f32(margin + sel.positive_distance - sel.negative_distance > 0), valid),
      "active_triplet_fraction": reductions.safe_divide(
          f32(jnp.sum(counts.num_active)), f32(jnp.sum(counts.num_triplets))),
      "hardest_positive_mean": reductions.masked_mean(f32(sel.positive_distance), valid),
      "hardest_negative_mean": reductions.masked_mean(f32(sel.negative_distance), valid),
  }
