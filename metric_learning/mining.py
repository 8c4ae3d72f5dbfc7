r"""Online mining: which positives and negatives each anchor uses.

Every miner reads a distance matrix (``[batch, batch]`` from
:func:`metric_learning.pairwise_distances`) and integer labels, and returns a
small pytree dataclass of indices, distances and validity, so a training loop
can log what was chosen. Miners are pure and jit-able; the selection is
piecewise constant, so losses compute it under ``stop_gradient`` and let the
gradient flow only through the selected distances.

Notation as in :mod:`metric_learning.masks`. Where an anchor has nothing to
select, its ``valid`` flag is False, its indices are -1 and its distances 0:
no ±inf ever leaves a miner. An empty batch (zero rows) gives zero-size fields.

References:
  Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
  Re-Identification. 2017. https://arxiv.org/abs/1703.07737
  Schroff, Kalenichenko, Philbin. FaceNet. CVPR 2015.
  https://arxiv.org/abs/1503.03832
  Xuan, Stylianou, Pless. Improved Embeddings with Easy Positive Triplet
  Mining. WACV 2020. https://arxiv.org/abs/1904.04370
  Wu, Manmatha, Smola, Krähenbühl. Sampling Matters in Deep Embedding
  Learning. ICCV 2017. https://arxiv.org/abs/1706.07567
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import masks as masks_lib
from metric_learning import reductions

SEMI_HARD_DEFINITIONS = ("facenet", "tfa")
# Elements of one [anchors_chunk, candidates, candidates] block in the anchor
# streaming of triplet-cube computations (batch-all, semi-hard, ...).
_CUBE_BUDGET = 1 << 22
# Columns per chunk of first_argmax (measured on 2 CPU cores: 256 of a 4096-wide row).
_ARGMAX_CHUNK = 256


def _dataclass(cls):
  return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


@_dataclass
class TripletSelection:
  """One (positive, negative) per anchor; every field is ``[anchors]``."""
  positive_index: jax.Array
  negative_index: jax.Array
  positive_distance: jax.Array
  negative_distance: jax.Array
  valid: jax.Array


@_dataclass
class PairSelection:
  """One negative per (anchor, positive) pair; every field is ``[anchors, candidates]``.

  ``valid[i, j]`` is True when ``j`` is a positive of a valid anchor ``i``.
  """
  negative_index: jax.Array
  positive_distance: jax.Array
  negative_distance: jax.Array
  valid: jax.Array


@_dataclass
class RankSelection:
  """Positives and negatives at chosen hardness ranks.

  ``positive_*`` are ``[anchors, num_positive_ranks]`` (hardest = farthest first),
  ``negative_*`` are ``[anchors, num_negative_ranks]`` (hardest = closest first).
  """
  positive_index: jax.Array
  positive_distance: jax.Array
  positive_valid: jax.Array
  negative_index: jax.Array
  negative_distance: jax.Array
  negative_valid: jax.Array


@_dataclass
class TripletCounts:
  """Per-anchor triplet counts, ``[anchors]`` each: selected and active (loss > 0)."""
  num_triplets: jax.Array
  num_active: jax.Array


# --------------------------------------------------------------------------- #
# Building blocks shared with the losses.
# --------------------------------------------------------------------------- #


def masked_argmax(values: jax.Array, mask: jax.Array):
  """Row-wise argmax over ``mask``: (index or -1, value or 0, any).

  Ties go to the lowest index (:func:`first_argmax`: plain max reductions that
  XLA vectorises, unlike a variadic (value, index) argmax).
  """
  index, _ = first_argmax(jnp.where(mask, values, -jnp.inf))
  found = jnp.any(mask, axis=-1)
  value = jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]
  return jnp.where(found, index, -1), jnp.where(found, value, 0), found


def masked_argmin(values: jax.Array, mask: jax.Array):
  """Row-wise argmin over ``mask``: (index or -1, value or 0, any)."""
  index, value, found = masked_argmax(-values, mask)
  return index, -value, found


def hard_indices(scores: jax.Array, masks: masks_lib.PairMasks, *,
                 positive: str = "hard"):
  """Indices only (no values) of the batch-hard selection: the losses' fast path.

  ``scores`` need only order each row like its distances. Returns
  ``(positive_index, negative_index, valid)`` with -1 where invalid; ties go
  to the first column.
  """
  sign = 1 if positive == "hard" else -1
  pi, has_pos = first_argmax(jnp.where(masks.positive, sign * scores, -jnp.inf))
  ni, has_neg = first_argmax(jnp.where(masks.negative, -scores, -jnp.inf))
  valid = has_pos & has_neg
  return jnp.where(valid, pi, -1), jnp.where(valid, ni, -1), valid


def first_argmax(keys: jax.Array, chunk: int = _ARGMAX_CHUNK):
  """``(index of the first maximum along the last axis, any key > -inf)``.

  ``jnp.argmax`` is a two-operand reduction that XLA CPU does not vectorise, and
  "maximum, then first column equal to it" reads the row twice. Rows longer
  than ``2 * chunk`` are cut into chunks instead: one vectorised pass keeps each
  chunk's maximum, and only the first chunk holding the row's maximum is read
  again. Exact (the same comparisons on the same values). A row holding NaN
  gets some column in range (XLA CPU's vectorised max may skip a NaN); the
  losses turn such a batch into a NaN value through their NaN guard.
  """
  size = keys.shape[-1]
  lead = keys.shape[:-1]
  if size <= 2 * chunk:   # (``initial``: an empty row gives (0, False), not an error)
    best = jnp.max(keys, axis=-1, keepdims=True, initial=-jnp.inf)
    columns = jax.lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
    index = jnp.min(jnp.where(keys == best, columns, size - 1), axis=-1,
                    initial=max(size - 1, 0))
    return index, best[..., 0] > -jnp.inf
  pad = -size % chunk
  tiles = jnp.pad(keys, [(0, 0)] * len(lead) + [(0, pad)], constant_values=-jnp.inf)
  tiles = tiles.reshape(lead + (-1, chunk))
  tile_best = jnp.max(tiles, axis=-1)                        # [..., chunks]
  best = jnp.max(tile_best, axis=-1)
  tile = jnp.argmax(tile_best, axis=-1).astype(jnp.int32)    # first tile holding it
  within = jnp.take_along_axis(tiles, tile[..., None, None], axis=-2)[..., 0, :]
  columns = jax.lax.broadcasted_iota(jnp.int32, within.shape, within.ndim - 1)
  offset = jnp.min(jnp.where(within == best[..., None], columns, chunk), axis=-1)
  index = jnp.where(offset < chunk, tile * chunk + offset, size - 1)
  return index, best > -jnp.inf


def gather_rows(values: jax.Array, index: jax.Array) -> jax.Array:
  """``values[i, index[i, ...]]`` with -1 (nothing selected) read as column 0."""
  return jnp.take_along_axis(values, jnp.maximum(index, 0), axis=-1)


def select_triplets(distances: jax.Array, masks: masks_lib.PairMasks, *,
                    positive: str = "hard") -> TripletSelection:
  """Hardest negative and the hardest (or easiest) positive of every anchor."""
  pi, ni, valid = hard_indices(distances, masks, positive=positive)
  index = jnp.stack([pi, ni], axis=-1)
  chosen = jnp.where(valid[:, None], gather_rows(distances, index), 0)
  return TripletSelection(positive_index=pi, negative_index=ni,
                          positive_distance=chosen[:, 0],
                          negative_distance=chosen[:, 1], valid=valid)


def map_anchors(fn: Callable, *rows: jax.Array):
  """Applies ``fn`` to each anchor's rows, in chunks that bound the memory.

  ``fn`` gets one anchor's ``[candidates]`` rows and may build
  ``[candidates, candidates]`` temporaries; chunks hold at most ``_CUBE_BUDGET``
  such elements and are rematerialised in the backward pass, so memory stays
  O(chunk · candidates²) instead of O(anchors · candidates²).
  """
  anchors, candidates = rows[0].shape
  chunk = max(1, min(anchors, _CUBE_BUDGET // max(1, candidates * candidates)))
  if chunk >= anchors:
    return jax.vmap(fn)(*rows)
  rows = [_sharding.replicate(r) for r in rows]     # see _sharding: Explicit meshes
  return jax.lax.map(jax.checkpoint(lambda r: fn(*r)), rows, batch_size=chunk)


def triplet_cube(d: jax.Array, pos: jax.Array, neg: jax.Array):
  """One anchor's ``d_ap - d_an`` for all (positive j, negative k), and the mask."""
  return d[:, None] - d[None, :], pos[:, None] & neg[None, :]


def facenet_cube(d: jax.Array, pos: jax.Array, neg: jax.Array, margin):
  """FaceNet semi-hard triplets of one anchor: ``d_ap < d_an < d_ap + margin``."""
  gap, mask = triplet_cube(d, pos, neg)
  return gap, mask & (gap < 0) & (gap > -margin)


def tfa_negatives(d: jax.Array, pos: jax.Array, neg: jax.Array):
  """TFA semi-hard negative for each positive j of one anchor (index or -1)."""
  farther = neg[None, :] & (d[None, :] > d[:, None])            # [j, k]
  near_i, _, found = masked_argmin(jnp.broadcast_to(d, farther.shape), farther)
  far_i, _, has_neg = masked_argmax(d, neg)
  index = jnp.where(found, near_i, far_i)
  valid = pos & has_neg
  return jnp.where(valid, index, -1), valid


_INT_OF_WIDTH = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}


def _sortable_bits(x: jax.Array) -> jax.Array:
  """Integer keys that order like the float values (IEEE bits, negatives flipped)."""
  itype = _INT_OF_WIDTH[jnp.dtype(x.dtype).itemsize]
  bits = jax.lax.bitcast_convert_type(x, itype)
  magnitude = jnp.array(jnp.iinfo(itype).max, itype)
  return bits ^ ((bits >> (8 * jnp.dtype(itype).itemsize - 1)) & magnitude)


def _from_sortable_bits(bits: jax.Array, dtype) -> jax.Array:
  magnitude = jnp.array(jnp.iinfo(bits.dtype).max, bits.dtype)
  shift = 8 * jnp.dtype(bits.dtype).itemsize - 1
  return jax.lax.bitcast_convert_type(bits ^ ((bits >> shift) & magnitude), dtype)


def sort_rows(x: jax.Array) -> jax.Array:
  """Each row of float values in increasing order, not differentiable.

  Sorted as integer keys of the same width: XLA CPU sorts one int32 operand
  3–5× faster than a float32 one (whose comparator orders NaN and -0) or an
  (index, key) pair. Values are returned bit for bit.
  """
  x = jax.lax.stop_gradient(x)
  keys = jax.lax.sort(_sortable_bits(x), dimension=x.ndim - 1, is_stable=False)
  return _from_sortable_bits(keys, x.dtype)


def count_below(sorted_rows: jax.Array, t: jax.Array, side: str = "left") -> jax.Array:
  """Per row, #{entries < t} (``side="right"``: <= t) of each query in ``t``."""
  # The default binary search ("scan") loses an Explicit mesh's row sharding
  # inside vmap; "sort" keeps it, at several times the cost, so it is used only
  # for explicitly sharded rows.
  method = ("sort" if _sharding.is_explicitly_sharded(sorted_rows)
            or _sharding.is_explicitly_sharded(t) else "scan")
  return jax.vmap(lambda k, q: jnp.searchsorted(k, q, side=side, method=method))(
      sorted_rows, t)


class SortedNegatives:
  """Each row's negative distances in increasing order, for O(C log C) triplet sums.

  Built from ``[rows, C]`` distances ``d`` and the negative mask; not
  differentiable (see :func:`window_sums` for the gradient).

  * ``count_below(t)`` = #{k in N(i): D_ik < t} (``side="right"``: <= t);
  * ``sum_first(n)`` = the sum of the n smallest (D_ik - base), with base the
    row's smallest negative distance (a constant shift that keeps the prefix
    sums small, so that ``n (t - base) - sum_first(n)`` does not cancel).
  """

  def __init__(self, d, neg):
    self.keys = sort_rows(jnp.where(neg, d, jnp.inf))
    self.count = jnp.sum(neg, -1)
    self.base = self.keys[:, :1]
    real = jnp.arange(d.shape[-1])[None, :] < self.count[:, None]
    self.prefix = jnp.cumsum(jnp.where(real, self.keys - self.base, 0), axis=-1)

  def count_below(self, t, side="left"):
    return count_below(self.keys, jax.lax.stop_gradient(t), side)

  def sum_first(self, n):
    s = jnp.take_along_axis(self.prefix, jnp.maximum(n - 1, 0), -1)
    return jnp.where(n > 0, s, 0)


def window_sums(d, pos, neg, margin, lower: bool):
  r"""Per anchor row, the hinge sum over (j, k) in its triplet windows, with counts.

  :math:`\sum_{j \in P(i)} \sum_k (m + D_{ij} - D_{ik})` over the negatives k
  with [``lower``: :math:`D_{ij} <`] :math:`D_{ik} < D_{ij} + m` (batch-all
  without ``lower``, FaceNet semi-hard with it). Returns ``(sums, triplets,
  active)``, each ``[rows]``: the sums, how many triplets the anchor has
  (batch-all: :math:`|P(i)| |N(i)|`; semi-hard: those in the windows) and how
  many of them have a non-zero term.

  From sorted negatives, :math:`n (m + D_{ij} - b) - \sum_k (D_{ik} - b)` over
  the n negatives of each window: O(C log C) per row instead of the O(C²) cube.
  The sum is piecewise linear in the distances, and its gradient is a count:
  :math:`\partial / \partial D_{ij}` is the size of j's window and
  :math:`\partial / \partial D_{ik} = -|\{j : k \text{ in } j\text{'s window}\}|`,
  found by sorting the windows' ends. No gradient flows through a sort or a
  gather.
  """
  fixed = jax.lax.stop_gradient(d)
  negs = SortedNegatives(fixed, neg)
  upper = fixed + margin                           # t_j, as the comparisons round it
  hi = negs.count_below(upper, "left")             # D_ik < t_j
  lo = negs.count_below(fixed, "right") if lower else jnp.zeros_like(hi)
  n = jnp.where(pos, jnp.maximum(hi - lo, 0), 0)
  inside = negs.sum_first(hi) - negs.sum_first(lo)
  values = jnp.where(n > 0, n * (margin + fixed - negs.base) - inside, 0)
  # Per negative k: the positives whose window holds it. #{j: t_j > D_ik}, less
  # (with ``lower``) #{j: D_ij >= D_ik}, read exactly as the windows compare:
  # where t_j rounds to D_ij itself (m absorbed) j's window is empty, and
  # D_ij > D_ik is tested as prev(D_ij) >= D_ik.
  size = d.shape[-1]
  ends = sort_rows(jnp.where(pos, upper, -jnp.inf))
  covers = size - count_below(ends, fixed, "right")
  if lower:
    starts = jnp.where(upper > fixed, fixed, jnp.nextafter(fixed, -jnp.inf))
    starts = sort_rows(jnp.where(pos, starts, -jnp.inf))
    covers = covers - (size - count_below(starts, fixed, "left"))
    # Only with m = 0 (empty windows) and coincident points can a flushed
    # subnormal prev(0) make this negative; the true count is then 0.
    covers = jnp.maximum(covers, 0)
  slope = (jnp.where(pos, n, 0) - jnp.where(neg, covers, 0)).astype(d.dtype)
  sums = jnp.sum(values, -1) + jnp.sum(slope * (d - fixed), -1)
  active = jnp.sum(n, -1)
  triplets = jnp.sum(pos, -1) * negs.count if not lower else active
  return sums, triplets, active


def tfa_selection(distances, positive, negative):
  """:func:`tfa_negatives` of every anchor row at once: O(C log C) per row.

  For each positive j, the first negative farther than D_ij (the lowest column
  among equal distances), or else the farthest negative (lowest column too).
  """
  keys = jnp.where(negative, jax.lax.stop_gradient(distances), jnp.inf)
  order = jnp.argsort(keys, axis=-1)                 # stable: ties keep column order
  keys = jnp.take_along_axis(keys, order, -1)
  count = jnp.sum(negative, -1)[:, None]
  after = count_below(keys, distances, "right")      # first negative farther than D_ij
  last = jnp.maximum(count - 1, 0)
  farthest = count_below(keys, jnp.take_along_axis(keys, last, -1))
  position = jnp.clip(jnp.where(after < count, after, farthest), 0, keys.shape[-1] - 1)
  index = jnp.take_along_axis(order, position, -1)
  valid = positive & (count > 0)
  return jnp.where(valid, index, -1), valid


def semi_hard_counts(distances, positive, negative, margin):
  """Per anchor: #{(j, k): j in P(i), k in N(i), D_ij < D_ik < D_ij + m}.

  From sorted negatives: O(C log C) per anchor, no [C, C] cube.
  """
  negs = SortedNegatives(distances, negative)
  hi = negs.count_below(distances + margin, "left")
  lo = negs.count_below(distances, "right")
  return jnp.sum(jnp.where(positive, jnp.maximum(hi - lo, 0), 0), -1)


# --------------------------------------------------------------------------- #
# Public miners (square case: candidates = the batch). With ``axis_name``
# (inside pmap / shard_map) ``distances`` is [local anchors, global batch]:
# this device's rows against every device's rows, gathered in device order;
# indices then refer to the global batch.
# --------------------------------------------------------------------------- #


def _across_devices(distances, labels, where, axis_name):
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array [batch]; got shape {labels.shape}.")
  labels = _validation.int_vector(labels, labels.shape[0], "labels", "labels")
  where = _validation.bool_vector(where, labels.shape[0], "where", "labels")
  gather = lambda v: jax.lax.all_gather(v, axis_name, tiled=True)
  all_labels, all_where = gather(labels), gather(where)
  distances = jnp.asarray(distances)
  if distances.shape != (labels.shape[0], all_labels.shape[0]):
    raise ValueError(f"with axis_name, distances must be [local, global] = "
                     f"[{labels.shape[0]}, {all_labels.shape[0]}]; got {distances.shape}.")
  n = labels.shape[0]
  self_index = jax.lax.axis_index(axis_name) * n + jnp.arange(n)
  return distances, masks_lib.pair_masks(labels, where, all_labels, all_where, self_index)


def _square(distances, labels, where, axis_name=None):
  if axis_name is not None:
    return _across_devices(distances, labels, where, axis_name)
  distances = _validation.square_matrix(distances, "distances")
  masks = masks_lib.square_masks(labels, where)
  if masks.positive.shape != distances.shape:
    raise ValueError(f"labels must have shape [{distances.shape[0]}] to match "
                     f"distances; got shape {jnp.shape(labels)}.")
  return distances, masks


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
  distances, masks = _square(distances, labels, where, axis_name)
  return select_triplets(distances, masks, positive="hard")


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
  distances, masks = _square(distances, labels, where, axis_name)
  return select_triplets(distances, masks, positive="easy")


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
  distances, masks = _square(distances, labels, where, axis_name)
  if definition == "tfa":
    index, valid = tfa_selection(distances, masks.positive, masks.negative)
    neg = gather_rows(distances, index)
    return PairSelection(negative_index=index,
                         positive_distance=jnp.where(valid, distances, 0),
                         negative_distance=jnp.where(valid, neg, 0), valid=valid)
  counts = semi_hard_counts(distances, masks.positive, masks.negative, margin)
  return TripletCounts(num_triplets=counts, num_active=counts)


def batch_all(distances: jax.Array, labels: jax.Array, *, margin=0.2,
              where: jax.Array | None = None,
               axis_name: str | None = None) -> TripletCounts:
  r"""Counts every valid triplet and the active ones, per anchor.

  .. math::
    T_i = |P(i)| \cdot |N(i)|, \qquad
    A_i = |\{(j, k) : j \in P(i), k \in N(i), m + D_{ij} - D_{ik} > 0\}|

  Counted from each row's sorted negative distances: O(batch² log batch)
  time, no triplet cube. For the dense triplet cube itself see :func:`metric_learning.masks.triplet_mask`.

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
  distances, masks = _square(distances, labels, where, axis_name)
  negs = SortedNegatives(distances, masks.negative)
  counts = jnp.sum(masks.positive, -1) * negs.count
  below = negs.count_below(distances + margin, "left")    # D_ik < D_ij + m
  active = jnp.sum(jnp.where(masks.positive, below, 0), -1)
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
  distances, masks = _square(distances, labels, where, axis_name)
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
            jnp.where(valid, gather_rows(distances, idx), 0), valid)

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
  distances, masks = _square(distances, labels, where, axis_name)
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
      positive_distance=jnp.where(valid, gather_rows(distances, pi[:, None])[:, 0], 0),
      negative_distance=jnp.where(valid, gather_rows(distances, ni[:, None])[:, 0], 0),
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
  distances, masks = _square(distances, labels, where, axis_name)
  sel = select_triplets(distances, masks)
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


# Pair and triplet mask miners (pytorch-metric-learning's PairMarginMiner,
# TripletMarginMiner, MultiSimilarityMiner) live in their own module, which
# builds on this one; they are part of ``metric_learning.mining``.
from metric_learning.pair_mining import TRIPLET_TYPES  # noqa: E402,F401
from metric_learning.pair_mining import MinedPairs  # noqa: E402,F401
from metric_learning.pair_mining import MinedTriplets  # noqa: E402,F401
from metric_learning.pair_mining import multi_similarity_pairs  # noqa: E402,F401
from metric_learning.pair_mining import pair_margin  # noqa: E402,F401
from metric_learning.pair_mining import triplet_margin  # noqa: E402,F401
