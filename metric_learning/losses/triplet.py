r"""The triplet family: explicit triplets, batch-hard, batch-all, semi-hard, quadruplet.

Notation (README.md, "Definitions"): :math:`D_{ij}` distance, :math:`P(i)` positives,
:math:`N(i)` negatives, :math:`m` margin, :math:`[x]_+ = \max(x, 0)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _kernels
from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import masks as masks_lib
from metric_learning import mining
from metric_learning import reductions
from metric_learning.losses import _pipeline


def triplet_margin_loss(anchors: jax.Array, positives: jax.Array,
                        negatives: jax.Array, *, margin=0.2,
                        metric: str = "sqeuclidean", soft: bool = False) -> jax.Array:
  r"""Triplet loss on explicit triplets (Weinberger & Saul 2009; Schroff et al. 2015).

  .. math::
    \ell_t = [m + D(a_t, p_t) - D(a_t, n_t)]_+
    \quad\text{or, with soft=True,}\quad \mathrm{softplus}(D(a_t, p_t) - D(a_t, n_t))

  Distances use the accurate difference form; the gradient at zero distance is 0.

  Args:
    anchors: ``[n, dim]`` floating array.
    positives: ``[n, dim]``, same class as the anchors.
    negatives: ``[n, dim]``, other classes.
    margin: :math:`m \ge 0` (ignored with ``soft=True``).
    metric: ``"sqeuclidean"`` (FaceNet), ``"euclidean"``, ``"cosine"``, or
      ``"dot"`` (the similarity, used as the distance :math:`-x^\top y`).
    soft: use the soft margin of Hermans et al. 2017.

  Returns:
    ``[n]`` per-triplet losses in the dtype of ``anchors``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> a = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    >>> p = jnp.array([[0.0, 0.1], [1.0, 0.5]])
    >>> n = jnp.array([[0.0, 0.3], [1.0, 2.0]])
    >>> [round(v, 4) for v in ml.triplet_margin_loss(a, p, n, margin=0.2).tolist()]
    [0.12, 0.0]

  References:
    Schroff, Kalenichenko, Philbin. FaceNet: A Unified Embedding for Face
    Recognition and Clustering. CVPR 2015. https://arxiv.org/abs/1503.03832
  """
  _pipeline.check_options(metric=metric, margin=margin, similarity=True)
  a = _validation.float_matrix(anchors, "anchors")
  p = _validation.float_matrix(positives, "positives")
  n = _validation.float_matrix(negatives, "negatives")
  if not a.shape == p.shape == n.shape:
    raise ValueError("anchors, positives and negatives must have the same shape; "
                     f"got {a.shape}, {p.shape} and {n.shape}.")
  dtype = _validation.compute_dtype(a.dtype)
  a, p, n = (v.astype(dtype) for v in (a, p, n))
  gap = _kernels.paired(a, p, metric) - _kernels.paired(a, n, metric)
  return _pipeline.triplet_term(gap, margin, soft).astype(anchors.dtype)


def _triplet_terms(batch: _pipeline.Batch, positive_index, negative_index, valid,
                   *, margin, metric: str, soft: bool):
  """Per-anchor triplet terms of a selection, distances recomputed row-wise.

  The selection is piecewise constant in the embeddings, so differentiating the
  recomputed distances is the exact gradient of the mined loss. It touches only
  the selected rows: O(batch · dim), no [batch, batch] backward pass.
  """
  # Two gathers, not one of the stacked indices: the backward pass then adds
  # two scatters instead of padding and summing a [2, anchors, dim] cotangent.
  def chosen(index):
    return _sharding.take_rows(batch.candidates,
                               jax.lax.stop_gradient(jnp.maximum(index, 0)))
  dp = _kernels.paired(batch.anchors, chosen(positive_index), metric)
  dn = _kernels.paired(batch.anchors, chosen(negative_index), metric)
  return _pipeline.terms(_pipeline.triplet_term(dp - dn, margin, soft), valid), dp


def _select(batch: _pipeline.Batch, metric: str, block_size: int | None,
            positive: str = "hard"):
  """Batch-hard style (positive_index, negative_index, valid), dense or streamed
  over blocks of anchor rows. Never differentiated; only indices are kept.

  Each anchor's positive columns come from one sort of the labels
  (:func:`mining.anchor_slots`): with few positives per anchor, only the
  negative is found by a pass over the distance block.
  """
  anchors = jax.lax.stop_gradient(batch.anchors)
  cands = jax.lax.stop_gradient(batch.candidates)

  def select(a, labels, where, self_index, *slots):
    # Only indices are used: rank by a per-row monotone score, not the distances.
    def scores():   # built where read: see hard_indices
      return _kernels.row_ranking(a, cands, metric)

    def masks():
      return masks_lib.pair_masks(labels, where, batch.candidate_labels,
                                  batch.candidate_where, self_index)
    return mining.hard_indices(scores, masks, positive=positive, slots=slots or None)

  rows = (anchors, batch.labels, batch.where, batch.self_index) + _anchor_slots(batch)
  return _pipeline.map_row_blocks(select, rows,
                                  _pipeline.block_rows(block_size, anchors.shape[0]))


def _selection_terms(batch: _pipeline.Batch, selection, *, margin, metric: str,
                     soft: bool) -> reductions.Terms:
  """Per-anchor terms of a miner's selection (see :func:`selected_triplet_loss`)."""
  anchors, cands = batch.anchors.shape[0], batch.candidates.shape[0]

  def check(name, array, shape):
    if array.shape != shape:
      raise ValueError(f"selection.{name} must have shape {shape} to match "
                       f"embeddings; got shape {array.shape}.")

  if isinstance(selection, mining.TripletSelection):
    check("valid", selection.valid, (anchors,))
    terms, _ = _triplet_terms(batch, selection.positive_index, selection.negative_index,
                              selection.valid, margin=margin, metric=metric, soft=soft)
    return terms
  if isinstance(selection, mining.PairSelection):
    # Positive j is the column itself: one [anchors, candidates] distance matrix.
    check("valid", selection.valid, (anchors, cands))
    d = batch.distances(metric)
    index = jax.lax.stop_gradient(selection.negative_index)
    gap = d - mining.gather_rows(d, index)
    return _pipeline.terms(_pipeline.triplet_term(gap, margin, soft), selection.valid,
                           axis=-1)
  if isinstance(selection, mining.RankSelection):
    # Every (chosen positive, chosen negative) combination of an anchor.
    for name in ("positive_valid", "negative_valid"):
      valid = getattr(selection, name)
      check(name, valid, (anchors, valid.shape[-1] if valid.ndim else 0))
    a = batch.anchors[:, None, :]

    def dist(index):
      index = jax.lax.stop_gradient(jnp.maximum(index, 0))
      return _kernels.paired(a, jnp.take(batch.candidates, index, axis=0), metric)

    dp, dn = dist(selection.positive_index), dist(selection.negative_index)
    gap = dp[:, :, None] - dn[:, None, :]
    mask = selection.positive_valid[:, :, None] & selection.negative_valid[:, None, :]
    return _pipeline.terms(_pipeline.triplet_term(gap, margin, soft), mask, axis=(1, 2))
  if isinstance(selection, mining.TripletCounts):
    raise TypeError("selection is a TripletCounts (from mining.batch_all or "
                    "mining.semi_hard(definition='facenet')): counts, not indices. Use "
                    "batch_all_triplet_loss or semi_hard_triplet_loss for those triplets.")
  raise TypeError("selection must be a mining.TripletSelection, PairSelection or "
                  f"RankSelection; got {type(selection).__name__}.")


def selected_triplet_loss(embeddings: jax.Array, selection, *, margin=0.2,
                          metric: str = "euclidean", soft: bool = False,
                          where: jax.Array | None = None, reduction: str = "mean",
                          axis_name: str | None = None) -> jax.Array:
  r"""Triplet loss on the triplets a miner selected.

  .. math::
    \ell_i = \sum_{(p, n) \in T_i} [m + D(x_i, x_p) - D(x_i, x_n)]_+

  where :math:`T_i`, anchor :math:`i`'s triplets, comes from the selection:

  * :class:`~metric_learning.mining.TripletSelection` (``batch_hard``,
    ``easy_positive``, ``distance_weighted``): one ``(p(i), n(i))`` per valid anchor;
  * :class:`~metric_learning.mining.PairSelection` (``semi_hard`` with
    ``definition="tfa"``): one per valid positive pair, ``(j, n(i, j))``;
  * :class:`~metric_learning.mining.RankSelection` (``rank_range``): every
    combination of a valid chosen positive and a valid chosen negative.

  ``"mean"`` is over the selected triplets. The selection is treated as
  constant; distances are recomputed from the rows. Miners that only count
  triplets (``batch_all``, ``semi_hard`` with ``definition="facenet"``) return
  :class:`~metric_learning.mining.TripletCounts`, which holds no indices: use
  :func:`batch_all_triplet_loss` / :func:`semi_hard_triplet_loss` for them.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    selection: a miner's result (indices into ``embeddings``, or into the
      global batch with ``axis_name``) and validity.
    margin: :math:`m \ge 0` (ignored with ``soft=True``).
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``, or ``"dot"`` (the
      similarity, used as the distance :math:`-x^\top y`).
    soft: softplus instead of the hinge.
    reduction: ``"mean"`` (over the selected triplets), ``"sum"``, ``"none"`` or
      ``"mean_nonzero"``.
    where: optional ``[batch]`` bool; False marks padding rows (zeroed, so what
      they hold cannot reach the loss). Pass the same ``where`` to the miner.
    axis_name: inside ``pmap`` / ``shard_map``, for a selection mined with the
      same ``axis_name`` (indices into the global batch).

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [5.0], [3.0], [7.0]]), jnp.array([0, 0, 0, 1, 1])
    >>> sel = ml.mining.easy_positive(ml.pairwise_distances(x), y)
    >>> float(ml.selected_triplet_loss(x, sel, margin=1.0, reduction="sum"))  # 3 + 3 + 3
    9.0
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin, similarity=True)
  size = jnp.shape(embeddings)[0] if jnp.ndim(embeddings) else 0
  batch = _pipeline.prepare(embeddings, jnp.zeros((size,), jnp.int32), where,
                            axis_name=axis_name)
  if batch.empty and isinstance(selection, (mining.TripletSelection, mining.PairSelection,
                                            mining.RankSelection)):
    zero = jnp.zeros((1,), batch.anchors.dtype)    # an empty selection: nothing selected
    terms = reductions.Terms(zero, zero, zero)
  else:
    terms = _selection_terms(batch, selection, margin=margin, metric=metric, soft=soft)
  return batch.finish(terms, reduction)


def batch_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, *,
                            margin=0.2, metric: str = "euclidean", soft: bool = False,
                            where: jax.Array | None = None, reduction: str = "mean",
                            block_size: int | None = None,
                            ref_embeddings: jax.Array | None = None,
                            ref_labels: jax.Array | None = None,
                            ref_where: jax.Array | None = None,
                            axis_name: str | None = None) -> jax.Array:
  r"""Batch-hard triplet loss (Hermans, Beyer, Leibe 2017).

  .. math::
    d^+_i = \max_{j \in P(i)} D_{ij}, \quad d^-_i = \min_{k \in N(i)} D_{ik}, \quad
    \ell_i = [m + d^+_i - d^-_i]_+ \;\text{or}\; \mathrm{softplus}(d^+_i - d^-_i)

  over valid anchors (at least one positive and one negative). Mining runs
  under ``stop_gradient``; the gradient flows through the two selected
  distances only, recomputed row-wise (O(batch · dim) backward).

  Args:
    embeddings: ``[batch, dim]`` floating array (bf16/fp16 computed in fp32).
    labels: ``[batch]`` integer labels (any values).
    margin: :math:`m \ge 0` (ignored with ``soft=True``).
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``, or ``"dot"`` (the
      similarity, used as the distance :math:`-x^\top y`).
    soft: soft margin :math:`\mathrm{softplus}` (Hermans' default).
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"`` over valid anchors, ``"sum"``, ``"none"``
      (``[batch]``, 0 at invalid anchors) or ``"mean_nonzero"``.
    block_size: rows per block of the mining. None (the default) is automatic:
      one dense ``[batch, candidates]`` matrix up to 512 rows, blocks of 256
      rows above (O(256 · candidates) memory; faster too, the block stays in
      cache). An int streams over blocks of that many anchor rows; an int
      ``>= batch`` forces the dense matrix. Same values and gradients.
    ref_embeddings: optional ``[refs, dim]`` extra candidates (e.g. a memory
      bank, :mod:`metric_learning.memory`); no gradient flows into them.
    ref_labels: ``[refs]`` integer labels of ``ref_embeddings``.
    ref_where: optional ``[refs]`` bool; False marks empty reference slots.
    axis_name: inside ``pmap`` / ``shard_map``, the device axis to mine over:
      anchors stay local, candidates are every device's rows (global-batch
      mining). Each device returns the loss of the whole global batch and the
      gradient of its own rows, equal to the single-device result on the
      concatenated batch (``"none"`` returns the local anchors' values). Every
      in-batch loss takes this argument.

  Returns:
    A scalar in the dtype of ``embeddings``, or ``[batch]`` with ``"none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> [round(v, 4) for v in ml.batch_hard_triplet_loss(x, y, reduction="none").tolist()]
    [0.0, 0.7, 2.2, 0.0]
    >>> round(float(ml.batch_hard_triplet_loss(x, y, margin=0.2)), 4)
    0.725

  References:
    Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
    Re-Identification. 2017. https://arxiv.org/abs/1703.07737
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin, similarity=True)
  _validation.block_size(block_size)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  terms, _ = _triplet_terms(batch, *_select(batch, metric, block_size), margin=margin,
                            metric=metric, soft=soft)
  return batch.finish(terms, reduction)


def _cube_rows(batch: _pipeline.Batch, metric: str, row_terms):
  """Block function of the losses over (anchor, positive, negative) cubes.

  Each anchor builds ``[candidates, candidates]`` temporaries: O(batch³) time.
  Used only where the terms do not decompose (soft margins).
  """
  def rows(anchors, masks):
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    return reductions.Terms(*mining.map_anchors(row_terms, d, masks.positive, masks.negative))
  return rows


def _soft_rows(batch: _pipeline.Batch, metric: str, row_terms, margin, facenet: bool):
  """Block function of the soft-margin sums over (anchor, positive, negative).

  Blocks whose anchors have few positives take :func:`mining.bounded_softplus_sums`
  (O(batch) per positive); others sum the cube anchor by anchor (:func:`_cube_rows`,
  O(batch²) per anchor), chosen at run time.
  """
  cube = _cube_rows(batch, metric, row_terms)

  def rows(anchors, masks):
    pos, neg = masks.positive, masks.negative

    def bounded(bound):
      d = _kernels.pairwise(anchors, batch.candidates, metric)
      sums, triplets, active = mining.bounded_softplus_sums(bound, d, pos, neg, margin,
                                                             facenet)
      return reductions.Terms(sums, triplets.astype(d.dtype), active.astype(d.dtype))

    return mining.by_positive_count(pos, bounded, lambda: cube(anchors, masks))
  return rows


def _sum_terms(values, mask):
  t = _pipeline.terms(values, mask)
  return jnp.sum(t.values), jnp.sum(t.counts), jnp.sum(t.nonzero)


def _anchor_slots(batch: _pipeline.Batch) -> tuple:
  """Each anchor's positive columns and count from the labels, for :func:`per_anchor`."""
  slots = mining.anchor_slots(batch.labels, batch.where, batch.candidate_labels,
                              batch.candidate_where, batch.self_index)
  return () if slots is None else tuple(slots)


def _tfa_terms(d, pos, neg, margin, soft: bool, slots=None):
  """Per-anchor :class:`Terms` of TFA semi-hard: for each positive the first
  negative farther than D_ij, else the farthest one (:func:`mining.tfa_selection`).

  With few positives per anchor (:func:`mining.by_positive_count`) the terms
  are read per positive slot (two distances each); otherwise from the sorted
  selection over the whole row.
  """
  index, count = slots if slots is not None else (None, None)

  def bounded(bound):
    pi, ni, valid = mining.bounded_tfa_pairs(bound, d, pos, neg, index)
    gap = mining.gather_rows(d, pi) - mining.gather_rows(d, ni)
    return _pipeline.terms(_pipeline.triplet_term(gap, margin, soft), valid, axis=-1)

  def general():
    ni, valid = mining.sorted_tfa_selection(d, pos, neg)
    gap = d - mining.gather_rows(d, jax.lax.stop_gradient(ni))
    return _pipeline.terms(_pipeline.triplet_term(gap, margin, soft), valid, axis=-1)

  return mining.by_positive_count(pos, bounded, general, count)


# Elements of one [anchors, bound, dim] gather of each anchor's positive rows (TFA's
# mined-first pairs, the window losses' thresholds; 64 MB in float32): B = 4096
# with 32 positives per anchor, B = 16384 with 4 (D = 128).
_GATHER_BUDGET = 1 << 24


def _gather_bounds(batch: _pipeline.Batch) -> tuple[int, ...]:
  """The positive bounds whose [anchors, bound, dim] gather fits ``_GATHER_BUDGET``."""
  rows, dim = batch.anchors.shape
  return tuple(b for b in mining.POSITIVE_BOUNDS
               if min(b, batch.candidates.shape[0]) * rows * dim <= _GATHER_BUDGET)


def _tfa_pair_terms(batch: _pipeline.Batch, metric: str, block_size, slots, general, *,
                    margin, soft: bool, reduction: str) -> reductions.Terms:
  """TFA semi-hard terms with the pairs mined first, outside the gradient.

  Where no anchor has more than ``POSITIVE_BOUNDS[-1]`` positives (decided at
  run time from the label sort's counts; a bound whose gathered rows would
  exceed ``_GATHER_BUDGET`` elements is left out), the (positive, negative) column pairs
  are mined block by block under ``stop_gradient``
  (:func:`mining.bounded_tfa_pairs`, the smallest bound that fits every anchor;
  :func:`mining.by_positive_count`)
  and the loss reads two recomputed distances per pair, as batch-hard does:
  O(batch · K · dim) backward instead of a pass over every [block, batch]
  distance block. Otherwise ``general()``, the streamed terms.
  """
  index, count = slots
  anchors = jax.lax.stop_gradient(batch.anchors)
  cands = jax.lax.stop_gradient(batch.candidates)

  def pairs(bound):
    def select(a, labels, where, self_index, known):
      d = _kernels.pairwise(a, cands, metric)
      m = masks_lib.pair_masks(labels, where, batch.candidate_labels,
                               batch.candidate_where, self_index)
      return mining.bounded_tfa_pairs(bound, d, m.positive, m.negative, known)

    rows = (anchors, batch.labels, batch.where, batch.self_index, index)
    pi, ni, valid = _pipeline.map_row_blocks(
        select, rows, _pipeline.block_rows(block_size, anchors.shape[0],
                                           auto=_pipeline.AUTO_SUM_BLOCK_ROWS))
    a = batch.anchors[:, None, :]

    def dist(i):
      chosen = _sharding.take_rows(batch.candidates, jax.lax.stop_gradient(jnp.maximum(i, 0)))
      return _kernels.paired(a, chosen, metric)
    gap = dist(pi) - dist(ni)
    return _pipeline.terms(_pipeline.triplet_term(gap, margin, soft), valid, axis=-1)

  def fits(bound):
    t = pairs(bound)
    if _pipeline.sums_rows(batch, block_size, reduction):    # shaped as general()'s
      t = jax.tree.map(lambda v: jnp.sum(v, keepdims=True), t)
    return t

  # Each bound gathers [anchors, bound, dim] rows twice (and their gradients):
  # bounds whose rows would exceed the budget take the streamed terms.
  return mining.by_positive_count(None, fits, general, count,
                                  width=batch.candidates.shape[0], bounds=_gather_bounds(batch))


def _window_terms(d, pos, neg, margin, lower: bool, slots=None):
  """Per-anchor :class:`Terms` of the hinge windows (:func:`mining.window_sums`)."""
  sums, triplets, active = mining.window_sums(d, pos, neg, margin, lower, slots)
  return reductions.Terms(sums, triplets.astype(d.dtype), active.astype(d.dtype))


def _window_loss_terms(batch: _pipeline.Batch, metric: str, block_size, slots, margin,
                       lower: bool, reduction):
  """The :class:`Terms` of batch-all / FaceNet semi-hard (hinge).

  A batch against itself, reduced to a scalar over blocks of rows, with few
  positives per anchor (a bound whose gathered positive rows fit
  ``_GATHER_BUDGET``, chosen at run time) takes
  :func:`mining.symmetric_window_sums` (two matmuls per block); a memory bank,
  ``axis_name``, ``reduction="none"``, the dense path or more positives take
  the per-block windows.
  """
  def rows(anchors, masks, *known):
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    return _window_terms(d, masks.positive, masks.negative, margin, lower=lower,
                         slots=known or None)

  def streamed():
    return _pipeline.per_anchor(batch, block_size, rows, extra=slots, reduction=reduction)

  size = batch.anchors.shape[0]
  if (not slots or batch.num_refs or batch.axis_name is not None
      or not _pipeline.sums_rows(batch, block_size, reduction)):
    return streamed()
  index, count = slots
  block = _pipeline.block_rows(block_size, size, auto=_pipeline.AUTO_SUM_BLOCK_ROWS)

  def symmetric(bound):
    sums, triplets, active = mining.symmetric_window_sums(
        bound, batch.anchors, batch.labels, batch.where, index, margin, metric, lower, block)
    return reductions.Terms(sums[None], triplets[None], active[None])

  return mining.by_positive_count(None, symmetric, streamed, count=count, width=size,
                                  bounds=_gather_bounds(batch))


def batch_all_triplet_loss(embeddings: jax.Array, labels: jax.Array, *, margin=0.2,
                           metric: str = "euclidean", soft: bool = False,
                           where: jax.Array | None = None, reduction: str = "mean_nonzero",
                           block_size: int | None = None, ref_embeddings: jax.Array | None = None,
                           ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                           axis_name: str | None = None) -> jax.Array:
  r"""Batch-all triplet loss (Hermans et al. 2017): every valid triplet.

  .. math::
    \ell_{ijk} = [m + D_{ij} - D_{ik}]_+, \quad j \in P(i),\ k \in N(i)

  ``"mean"`` averages over all valid triplets (Hermans' BA), the default
  ``"mean_nonzero"`` over the triplets with :math:`\ell > 0` (BA≠0);
  ``"none"`` gives each anchor's sum over its triplets.

  The hinge never builds the triplet cube: :math:`\sum_{k} [m + D_{ij} - D_{ik}]_+`
  is :math:`n_{ij}(m + D_{ij}) - \sum_{D_{ik} < m + D_{ij}} D_{ik}` (a count and
  a sum; its gradient is a count per distance, see
  :func:`metric_learning.mining.window_sums`). Where every anchor of a block of
  rows has at most 32 positives (P×K batches) each positive takes one masked
  pass over the row, O(batch² · K) time; otherwise each row's negative
  distances are sorted, O(batch² log batch); chosen at run time, same values.
  Streamed over blocks of anchor rows, memory is O(block · batch). A batch
  against itself (no ``ref_embeddings``, no ``axis_name``) reduced to a scalar
  over blocks, with few positives, takes both halves of each block's gradient
  from its one distance block
  (:func:`metric_learning.mining.symmetric_window_sums`).
  ``soft=True`` does not decompose into counts: with at most 32 positives per
  anchor it sums softplus over each positive's row (O(batch² · K)), otherwise
  the cube anchor by anchor (O(batch³)); chosen at run time, same values.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0` (ignored with ``soft=True``).
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``, or ``"dot"`` (the
      similarity, used as the distance :math:`-x^\top y`).
    soft: :math:`\mathrm{softplus}(D_{ij} - D_{ik})` instead of the hinge.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean_nonzero"``, ``"mean"``, ``"sum"`` or ``"none"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates, as in
      :func:`batch_hard_triplet_loss`.
    axis_name: device axis for global-batch mining.
    block_size: anchor rows per block, as in :func:`batch_hard_triplet_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above).

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5], [4.0]]), jnp.array([0, 0, 1, 1])
    >>> [round(v, 4) for v in ml.batch_all_triplet_loss(x, y, reduction="none").tolist()]
    [0.0, 0.7, 3.4, 0.0]
    >>> round(float(ml.batch_all_triplet_loss(x, y, reduction="mean")), 4)  # 4.1 / 8
    0.5125

  References:
    Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
    Re-Identification. 2017. https://arxiv.org/abs/1703.07737
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin, similarity=True)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)

  if soft:
    def row(d, pos, neg):
      gap, mask = mining.triplet_cube(d, pos, neg)
      return _sum_terms(_pipeline.triplet_term(gap, margin, soft), mask)
    rows = _soft_rows(batch, metric, row, margin, facenet=False)
  else:
    return batch.finish(_window_loss_terms(batch, metric, block_size, _anchor_slots(batch),
                                           margin, False, reduction), reduction)
  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction)


def semi_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, *, margin=0.2,
                           metric: str = "euclidean", definition: str = "facenet",
                           soft: bool = False, where: jax.Array | None = None,
                           reduction: str = "mean", block_size: int | None = None,
                           ref_embeddings: jax.Array | None = None,
                           ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                           axis_name: str | None = None) -> jax.Array:
  r"""Semi-hard triplet loss under the FaceNet or the TensorFlow Addons definition.

  * ``"facenet"`` (Schroff et al. 2015): every triplet with
    :math:`D_{ij} < D_{ik} < D_{ij} + m`; ``"mean"`` averages over them.
  * ``"tfa"``: for every positive pair :math:`(i, j)`, the negative
    :math:`k^*(i,j) = \arg\min_{k \in N(i),\, D_{ik} > D_{ij}} D_{ik}`, or the
    farthest negative if none is farther than :math:`D_{ij}`;
    :math:`\ell_{ij} = [m + D_{ij} - D_{ik^*}]_+`, ``"mean"`` over positive pairs
    (zeros included) — TFA's ``triplet_semihard_loss``, but 0 instead of its NaN
    when there is no pair.

  Both are computed per positive pair without the cube: where every anchor of
  a block of rows has at most 32 positives (P×K batches) by one masked pass
  over the row per positive, O(batch² · K) time; otherwise from each row's
  sorted negative distances (a binary search per positive pair and, for
  "facenet", prefix sums over the window), O(batch² log batch); chosen at run
  time, same values. "tfa" with few positives mines its pairs outside the
  gradient and differentiates two recomputed distances per pair (O(batch · K ·
  dim) backward, as batch-hard); "facenet" of a batch against itself reduced to
  a scalar over blocks takes the one-pass gradient of batch-all
  (:func:`metric_learning.mining.symmetric_window_sums`). Streamed over blocks
  of anchor rows, O(block · batch) memory. "facenet" with ``soft=True``
  (softplus does not decompose into counts) sums over each positive's row with
  few positives, O(batch² · K),
  and the triplet cube anchor by anchor otherwise, O(batch³).

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0` (in the "facenet" selection even with ``soft=True``).
    metric: ``"euclidean"``, ``"sqeuclidean"`` (FaceNet's), ``"cosine"``, or
      ``"dot"`` (the similarity, used as the distance :math:`-x^\top y`).
    definition: ``"facenet"`` or ``"tfa"``.
    soft: softplus instead of the hinge.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates, as in
      :func:`batch_hard_triplet_loss`.
    axis_name: device axis for global-batch mining.
    block_size: anchor rows per block, as in :func:`batch_hard_triplet_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above).

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5], [4.0]]), jnp.array([0, 0, 1, 1])
    >>> ml.semi_hard_triplet_loss(x, y, margin=1.0, reduction="none").tolist()
    [0.5, 0.0, 0.0, 0.5]
    >>> ml.semi_hard_triplet_loss(x, y, margin=1.0, definition="tfa",
    ...                           reduction="none").tolist()  # 2: farthest-negative fallback
    [0.5, 0.0, 2.0, 0.5]

  References:
    Schroff, Kalenichenko, Philbin. FaceNet. CVPR 2015.
    https://arxiv.org/abs/1503.03832
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin, similarity=True)
  _validation.choice(definition, "definition", mining.SEMI_HARD_DEFINITIONS)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)

  if definition == "facenet" and soft:
    def facenet_row(d, pos, neg):
      gap, mask = mining.facenet_cube(jax.lax.stop_gradient(d), pos, neg, margin)
      gap, _ = mining.triplet_cube(d, pos, neg)
      return _sum_terms(_pipeline.triplet_term(gap, margin, soft), mask)
    rows = _soft_rows(batch, metric, facenet_row, margin, facenet=True)
  else:
    slots = _anchor_slots(batch)
    if definition == "facenet":
      return batch.finish(_window_loss_terms(batch, metric, block_size, slots, margin, True,
                                             reduction), reduction)

    def rows(anchors, masks, *known):
      d = _kernels.pairwise(anchors, batch.candidates, metric)
      return _tfa_terms(d, masks.positive, masks.negative, margin, soft, known or None)

    def streamed():
      return _pipeline.per_anchor(batch, block_size, rows, extra=slots, reduction=reduction)

    if slots:
      terms = _tfa_pair_terms(batch, metric, block_size, slots, streamed, margin=margin,
                              soft=soft, reduction=reduction)
      return batch.finish(terms, reduction)
    return batch.finish(streamed(), reduction)
  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction)


def quadruplet_loss(embeddings: jax.Array, labels: jax.Array, *, margin=0.2, margin2=0.1,
                    metric: str = "euclidean", soft: bool = False, where: jax.Array | None = None,
                    reduction: str = "mean", block_size: int | None = None,
                    ref_embeddings: jax.Array | None = None,
                    ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                    axis_name: str | None = None) -> jax.Array:
  r"""Batch-hard quadruplet loss (Chen et al. 2017).

  .. math::
    \ell_i = [m_1 + d^+_i - d^-_i]_+ + [m_2 + d^+_i - d^{--}_i]_+, \qquad
    d^{--}_i = \min_{\substack{k, l \in N(i)\\ y_k \ne y_l}} D_{kl}

  :math:`d^+_i, d^-_i` as in batch-hard; the second term pushes the anchor's
  positive distance below the distance between the closest pair of samples of
  two *other* classes (absent when no such pair exists). ``"mean"`` is over
  valid anchors. With ``soft=True`` both hinges become softplus without
  margins, :math:`\mathrm{softplus}(d^+_i - d^-_i) + \mathrm{softplus}(d^+_i - d^{--}_i)`,
  as in batch-hard's soft margin. With a memory bank, bank rows are candidates
  (positives, negatives and members of the negative pair), never anchors.

  :math:`d^{--}_i` depends only on the anchor's label: it is the closest pair of
  two classes over the whole batch, unless one of those two classes is the
  anchor's, and then the closest pair without that class. Three minima over
  all pairs, found by streaming over blocks of rows (O(block · batch) memory),
  serve every anchor; the selection and the pair search carry no gradient,
  which flows only through the selected rows (O(batch · dim)).

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m_1 \ge 0`.
    margin2: :math:`m_2 \ge 0` (the paper uses :math:`m_2 < m_1`).
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``, or ``"dot"`` (the
      similarity, used as the distance :math:`-x^\top y`).
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: device axis for global-batch mining.
    soft: softplus instead of both hinges (margins ignored).
    block_size: rows per block of the mining and the pair search, as in
      :func:`batch_hard_triplet_loss` (None: automatic, dense up to 512 rows,
      blocks of 256 above; an int ``>= batch`` forces the dense path).
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`batch_hard_triplet_loss`.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [3.0], [3.5], [6.0]])
    >>> y = jnp.array([0, 0, 1, 1, 2])
    >>> ml.quadruplet_loss(x, y, margin=1.0, margin2=0.5, reduction="none").tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0]
    >>> ml.quadruplet_loss(x, y, margin=2.0, margin2=2.0, reduction="none").tolist()
    [0.5, 1.5, 0.5, 0.0, 0.0]

  References:
    Chen, Chen, Zhang, Huang. Beyond triplet loss: a deep quadruplet network
    for person re-identification. CVPR 2017. https://arxiv.org/abs/1704.01719
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin,
                          margin2=margin2, similarity=True)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  pi, ni, valid = _select(batch, metric, block_size)
  first, dp = _triplet_terms(batch, pi, ni, valid, margin=margin, metric=metric, soft=soft)
  k, l, found = _closest_other_pairs(batch, metric,
                                     _pipeline.block_rows(block_size, batch.anchors.shape[0]))
  xk = _sharding.take_rows(batch.candidates, k)
  xl = _sharding.take_rows(batch.candidates, l)
  dnn = _kernels.paired(xk, xl, metric)
  second = jnp.where(valid & found, _pipeline.triplet_term(dp - dnn, margin2, soft), 0)
  values = first.values + second
  terms = reductions.Terms(values, first.counts,
                           (valid & (values > 0)).astype(values.dtype))
  return batch.finish(terms, reduction)


def _closest_other_pairs(batch: _pipeline.Batch, metric: str, block_size: int | None):
  r"""Per anchor, the closest pair :math:`(k, l)` of real candidates with
  :math:`y_k \ne y_l` and neither label the anchor's: ``(k, l, found)``, [A].

  Ties go to the first pair in row-major order (row k, then column l). The
  closest pair overall, of classes :math:`c_1 \ne c_2`, serves every anchor of
  another class; anchors of class :math:`c_1` (:math:`c_2`) get the closest pair
  without :math:`c_1` (:math:`c_2`). Rows of candidates are streamed in blocks;
  no gradient flows here.
  """
  x = jax.lax.stop_gradient(batch.candidates)
  labels, real = batch.candidate_labels, batch.candidate_where

  def closest(*exclusions):
    """Per exclusion (a tuple of labels): the first closest pair whose labels
    differ and are not excluded. One distance block serves them all."""
    def rows(a, a_labels, a_real):
      d = _kernels.pairwise(a, x, metric)
      other = (a_labels[:, None] != labels[None, :]) & a_real[:, None] & real[None, :]
      out = []
      for excluded in exclusions:
        allowed = other
        for c in excluded:
          allowed = allowed & (a_labels[:, None] != c) & (labels[None, :] != c)
        out.append(mining.masked_argmin(d, allowed))
      return out

    out = []
    for l, value, found in _pipeline.map_row_blocks(rows, (x, labels, real), block_size):
      k, _, any_pair = mining.masked_argmin(value[None], found[None])
      k = jnp.maximum(k[0], 0)
      out.append((k, jnp.maximum(l[k], 0), any_pair[0]))
    return out

  (k, l, found), = closest(())
  c1, c2 = labels[k], labels[l]
  (k1, l1, found1), (k2, l2, found2) = closest((c1,), (c2,))
  y = batch.labels
  pick = lambda a, b, c: jnp.where(y == c1, a, jnp.where(y == c2, b, c))
  found = found & pick(found1, found2, True) & batch.where
  return pick(k1, k2, k), pick(l1, l2, l), found
