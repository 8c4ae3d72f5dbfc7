r"""Pair- and similarity-based relatives of the triplet loss.

Contrastive (Hadsell et al. 2006), lifted structure (Oh Song et al. 2016),
multi-similarity (Wang et al. 2019), margin (Wu et al. 2017) and N-pair
(Sohn 2016). Notation as in :mod:`metric_learning.masks`; every loss here is
O(batch²) in time and streams over blocks of anchor rows (``block_size``), so
memory is O(block · batch): lifted structure in two passes (each row's negative
log-sum-exp, then the pair terms), N-pair over the rows of its compacted
(anchor, positive) matrix. Only margin loss with ``key`` (distance-weighted
sampling) holds the ``[batch, batch]`` distance matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _kernels
from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import mining
from metric_learning import reductions
from metric_learning.losses import _pipeline

_HIGHEST = jax.lax.Precision.HIGHEST


def contrastive_loss(embeddings: jax.Array, labels: jax.Array, *, margin=1.0,
                     metric: str = "euclidean", pos_margin=0.0, squared: bool = True,
                     reduce_separately: bool = False, pairs=None,
                     where: jax.Array | None = None,
                     reduction: str = "mean", block_size: int | None = None,
                     ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None,
                     ref_where: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
  r"""Contrastive loss (Hadsell, Chopra, LeCun 2006) over all pairs in the batch.

  .. math::
    \ell_{ij} = c\,[D_{ij} - m^+]_+^{p} \;(j \in P(i)), \qquad
    \ell_{ik} = c\,[m - D_{ik}]_+^{p} \;(k \in N(i))

  with :math:`(c, p) = (\tfrac12, 2)` by default (``squared=True``, the paper's
  form; with :math:`m^+ = 0` the positive term is :math:`\tfrac12 D_{ij}^2`) or
  :math:`(1, 1)` with ``squared=False``. ``"mean"`` averages over all (ordered)
  pairs, ``"none"`` gives each anchor's sum over its pairs. With
  ``reduce_separately=True`` the positive-pair and negative-pair terms are
  reduced on their own and the two results added (``"none"`` still returns each
  anchor's sum of both).

  pytorch-metric-learning's ``ContrastiveLoss(pos_margin=0, neg_margin=1)`` is
  this loss on L2-normalised embeddings with ``squared=False``,
  ``reduce_separately=True``, ``reduction="mean_nonzero"``, ``pos_margin`` its
  ``pos_margin`` and ``margin`` its ``neg_margin`` (the ``"pml_contrastive"``
  preset). The defaults here differ from it: the paper's squared, halved terms,
  one mean over all pairs, no normalisation.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: negative margin :math:`m \ge 0` (PML's ``neg_margin``).
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: device axis for global-batch pairs, as in
      :func:`metric_learning.batch_hard_triplet_loss`.
    pos_margin: positive margin :math:`m^+ \ge 0` (PML's ``pos_margin``).
    squared: the paper's :math:`\tfrac12 [\cdot]_+^2` (True) or the plain hinge.
    reduce_separately: reduce positive and negative pairs separately and add.
    pairs: optional :class:`metric_learning.mining.MinedPairs` (``[batch,
      batch]`` masks from any pair miner, e.g. :func:`metric_learning.mining.
      pair_margin`): only the selected pairs count, reduced as without a miner
      (pytorch-metric-learning's ``indices_tuple``). Memory-bank columns are
      not mined and stay in.
    block_size: anchor rows per block. None (the default) is automatic: one
      dense ``[batch, candidates]`` matrix up to 512 rows, blocks of rows
      above (O(block · candidates) memory; see ``_pipeline.per_anchor``: 64
      rows differentiated as they are computed for a scalar reduction, else
      256 recomputed in the backward pass). An int ``>= batch`` forces the
      dense matrix. Same values and gradients.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5]]), jnp.array([0, 0, 1])
    >>> ml.contrastive_loss(x, y, margin=1.0, reduction="none").tolist()
    [0.5, 0.625, 0.125]
    >>> ml.contrastive_loss(x, y, margin=1.0, squared=False, reduce_separately=True,
    ...                     reduction="none").tolist()  # [D - 0]_+ and [1 - D]_+
    [1.0, 1.5, 0.5]

  References:
    Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an Invariant
    Mapping. CVPR 2006. https://doi.org/10.1109/CVPR.2006.100
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin,
                          pos_margin=pos_margin)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  shape = (lambda h: 0.5 * h * h) if squared else (lambda h: h)

  def rows(anchors, masks):
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    pos = _pipeline.terms(shape(jax.nn.relu(d - pos_margin)), masks.positive, axis=-1)
    neg = _pipeline.terms(shape(jax.nn.relu(margin - d)), masks.negative, axis=-1)
    return pos, neg

  if reduce_separately:
    pos, neg = _pipeline.per_anchor(batch, block_size, rows, pairs)
    return batch.finish(pos, reduction) + batch.finish(neg, reduction)

  def both(anchors, masks):
    return jax.tree.map(jnp.add, *rows(anchors, masks))
  return batch.finish(_pipeline.per_anchor(batch, block_size, both, pairs, reduction=reduction),
                      reduction)


def lifted_structure_loss(embeddings: jax.Array, labels: jax.Array, *, margin=1.0,
                          metric: str = "euclidean", where: jax.Array | None = None,
                          reduction: str = "mean", block_size: int | None = None,
                          ref_embeddings: jax.Array | None = None,
                          ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                          axis_name: str | None = None) -> jax.Array:
  r"""Lifted structured loss (Oh Song, Xiang, Jegelka, Savarese 2016).

  .. math::
    J_{ij} = \log\Big(\sum_{k \in N(i)} e^{m - D_{ik}} + \sum_{l \in N(j)} e^{m - D_{jl}}\Big)
             + D_{ij}, \qquad
    L = \frac{1}{2|\hat P|} \sum_{(i,j) \in \hat P} [J_{ij}]_+^2

  over positive pairs :math:`\hat P`. Computed with stable masked
  log-sum-exps. ``"mean"`` is the paper's :math:`L`; ``"none"`` gives
  :math:`\frac12 \sum_{j \in P(i)} [J_{ij}]_+^2` per anchor (each unordered pair
  appears from both ends). With a memory bank, bank rows are candidates (as
  :math:`j`, :math:`k` or :math:`l`) but never anchors :math:`i`.

  Two streamed passes over blocks of rows: the first gives every candidate's
  negative log-sum-exp (a ``[candidates]`` vector), the second the pair terms,
  with that vector broadcast over the columns.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`contrastive_loss` (None:
      automatic, dense up to 512 rows, blocks of 256 above; an int ``>= batch``
      forces the dense path). Same values and gradients.
    axis_name: device axis for global-batch pairs.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [3.0]]), jnp.array([0, 0, 1])
    >>> round(float(ml.lifted_structure_loss(x, y, margin=1.0)), 4)
    0.0491

  References:
    Oh Song, Xiang, Jegelka, Savarese. Deep Metric Learning via Lifted
    Structured Feature Embedding. CVPR 2016. https://arxiv.org/abs/1511.06452
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)

  def negative_lse(rows, masks):
    d = _kernels.pairwise(rows, batch.candidates, metric)
    return _pipeline.log_sum_exp(margin - d, masks.negative)

  # Pass 1. j has i's label, so N(j) = N(i) and "found" is shared by both ends;
  # j's own log-sum-exp comes from whichever device holds row j, or, for a bank
  # row, from the bank row's distances to every candidate.
  lse, found = _pipeline.per_anchor(batch, block_size, negative_lse)
  lse_j = batch.gather(lse)
  if batch.num_refs:
    lse_ref = _pipeline.per_reference(batch, block_size,
                                      lambda r, m: negative_lse(r, m)[0])
    lse_j = jnp.concatenate([lse_j, lse_ref])

  def rows(anchors, masks, lse_i, found_i):      # pass 2
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    j_ij = jnp.logaddexp(lse_i[:, None], lse_j[None, :]) + d
    pairs = masks.positive & found_i[:, None]
    return _pipeline.terms(0.5 * jax.nn.relu(j_ij) ** 2, pairs, axis=-1)

  t = _pipeline.per_anchor(batch, block_size, rows, extra=(lse, found), reduction=reduction)
  return batch.finish(t, reduction)


def multi_similarity_loss(embeddings: jax.Array, labels: jax.Array, *, alpha=2.0, beta=50.0,
                          base=0.5, epsilon=0.1, pairs=None,
                          where: jax.Array | None = None,
                          reduction: str = "mean", block_size: int | None = None,
                          ref_embeddings: jax.Array | None = None,
                          ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                          axis_name: str | None = None) -> jax.Array:
  r"""Multi-similarity loss with its pair mining (Wang et al. 2019).

  On cosine similarities :math:`S_{ij}`, anchor :math:`i` keeps the positives
  with :math:`S_{ij} - \epsilon < \max_{k \in N(i)} S_{ik}` and the negatives with
  :math:`S_{ik} + \epsilon > \min_{j \in P(i)} S_{ij}`, then

  .. math::
    \ell_i = \frac{1}{\alpha}
             \log\Big(1 + \sum_{j \in \tilde P_i} e^{-\alpha (S_{ij} - \lambda)}\Big)
           + \frac{1}{\beta} \log\Big(1 + \sum_{k \in \tilde N_i} e^{\beta (S_{ik} - \lambda)}\Big)

  An anchor whose kept positives or negatives are empty contributes 0, as in
  the authors' code. ``"mean"`` is over valid anchors.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer labels.
    alpha: positive scale :math:`\alpha > 0`.
    beta: negative scale :math:`\beta > 0`.
    base: similarity offset :math:`\lambda`.
    epsilon: mining margin :math:`\epsilon \ge 0`.
    pairs: optional :class:`metric_learning.mining.MinedPairs` from any pair
      miner: the loss on exactly those pairs, without its own mining
      (``epsilon`` unused), as pytorch-metric-learning's MultiSimilarityLoss
      with an ``indices_tuple``. ``mining.multi_similarity_pairs`` gives the
      built-in selection.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank, as in the XBM paper).
    axis_name: device axis for global-batch pairs.
    block_size: anchor rows per block, as in :func:`contrastive_loss` (None:
      automatic, dense up to 512 rows, blocks of 256 above).

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> [round(v, 4) for v in ml.multi_similarity_loss(x, y, reduction="none").tolist()]
    [0.0, 0.6787, 0.6787, 0.0]

  References:
    Wang, Han, Huang, Dong, Scott. Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning. CVPR 2019.
    https://arxiv.org/abs/1904.06627
  """
  _pipeline.check_options(reduction=reduction, epsilon=epsilon)
  _validation.positive(alpha, "alpha")
  _validation.positive(beta, "beta")
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)

  def rows(anchors, masks):
    s = 1.0 - _kernels.pairwise(anchors, batch.candidates, "cosine")
    s_const = jax.lax.stop_gradient(s)
    if pairs is None:
      kept = mining.multi_similarity_selection(s_const, masks.positive, masks.negative,
                                               epsilon=epsilon)
      keep_pos, keep_neg = kept.positive, kept.negative
    else:                     # the miner's selection is already in the masks
      keep_pos, keep_neg = masks.positive, masks.negative
    pos = _pipeline.log1p_sum_exp(-alpha * (s - base), keep_pos) / alpha
    neg = _pipeline.log1p_sum_exp(beta * (s - base), keep_neg) / beta
    used = jnp.any(keep_pos, -1) & jnp.any(keep_neg, -1)
    t = _pipeline.terms(pos + neg, used)
    return reductions.Terms(t.values, masks.valid_anchor.astype(t.values.dtype), t.nonzero)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, pairs, reduction=reduction),
                      reduction)


MARGIN_WEIGHTINGS = ("pairs", "triplets")
NPAIR_DEFINITIONS = ("sohn", "all_pairs")


def margin_loss(embeddings: jax.Array, labels: jax.Array, *, beta=1.2, margin=0.2,
                metric: str = "euclidean", key: jax.Array | None = None, weighting: str = "pairs",
                where: jax.Array | None = None, reduction: str = "mean_nonzero",
                block_size: int | None = None,
                ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None,
                ref_where: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
  r"""Margin-based loss (Wu, Manmatha, Smola, Krähenbühl 2017).

  .. math::
    \ell_{ij} = [\alpha + y_{ij} (D_{ij} - \beta_i)]_+, \qquad
    y_{ij} = +1 \;(j \in P(i)),\; -1 \;(j \in N(i))

  over all positive pairs and all negative pairs, or — with ``key`` — over all
  positive pairs and one negative per anchor drawn by distance-weighted
  sampling (:func:`metric_learning.mining.distance_weighted`; embeddings should
  then be L2-normalised). ``beta`` may be a learnable scalar or a per-anchor
  ``[batch]`` array (e.g. class-specific :math:`\beta` gathered by label); its
  gradient is returned like any other input's. The default ``"mean_nonzero"``
  normalises by the number of active pairs, as in the paper.

  ``weighting="triplets"`` sums over every triplet :math:`(i, j, k)` instead,
  :math:`\ell_{ij} + \ell_{ik}`: each positive pair is then weighted by its
  anchor's number of negatives :math:`|N(i)|`, each negative pair by
  :math:`|P(i)|`; ``"mean_nonzero"`` divides by the active pair terms of all
  triplets and ``"mean"`` by the number of triplets. This is
  pytorch-metric-learning's ``MarginLoss`` (all triplets, ``DivisorReducer``;
  on L2-normalised embeddings, ``nu=0``: the ``"pml_margin"`` preset).

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    beta: boundary :math:`\beta`, scalar or ``[batch]``.
    margin: :math:`\alpha \ge 0`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    key: optional PRNG key for distance-weighted negative sampling (keyword
      only; not with ``axis_name`` or a memory bank).
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean_nonzero"``, ``"mean"`` (over pairs), ``"sum"`` or ``"none"``.
    block_size: anchor rows per block, as in :func:`contrastive_loss` (None:
      automatic, dense up to 512 rows, blocks of 256 above; an int ``>= batch``
      forces the dense path). With ``key`` the sampling
      sees the whole ``[batch, batch]`` distance matrix: always dense. Same values and gradients.
    axis_name: device axis for global-batch pairs.
    weighting: ``"pairs"`` (the paper) or ``"triplets"`` (pytorch-metric-learning).
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.5], [1.0]]), jnp.array([0, 0, 1])
    >>> [round(v, 4) for v in ml.margin_loss(x, y, beta=1.2, margin=0.2, reduction="none").tolist()]
    [0.9, 1.4, 1.3]
    >>> [round(v, 4) for v in ml.margin_loss(x, y, weighting="triplets",
    ...                                      reduction="none").tolist()]
    [0.9, 1.4, 0.0]

  References:
    Wu, Manmatha, Smola, Krähenbühl. Sampling Matters in Deep Embedding
    Learning. ICCV 2017. https://arxiv.org/abs/1706.07567
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin)
  _validation.choice(weighting, "weighting", MARGIN_WEIGHTINGS)
  if key is not None and (axis_name is not None or ref_embeddings is not None):
    raise ValueError("margin_loss: key (distance-weighted sampling) cannot be combined "
                     "with axis_name or ref_embeddings; sample on one device without a "
                     "memory bank, or use all negatives.")
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  dtype = batch.anchors.dtype
  beta = jnp.asarray(beta, dtype)
  size = 0 if batch.empty else batch.labels.shape[0]
  if beta.ndim not in (0, 1) or (beta.ndim == 1 and beta.shape != (size,)):
    raise ValueError(f"beta must be a scalar or have shape {(size,)}; "
                     f"got shape {beta.shape}.")
  if beta.ndim and batch.empty:
    beta = jnp.zeros(batch.labels.shape, dtype)
  beta = jnp.broadcast_to(beta, batch.labels.shape)       # one boundary per anchor
  extra = (beta,)
  if key is not None:
    # Distance-weighted sampling draws from the whole [anchors, candidates] matrix.
    block_size = batch.anchors.shape[0]
    d = jax.lax.stop_gradient(batch.distances(metric))
    sel = mining.distance_weighted(d, batch.labels, key=key, dim=batch.anchors.shape[1],
                                   where=batch.where)
    columns = jnp.arange(d.shape[1])[None, :]
    extra += ((columns == sel.negative_index[:, None]) & sel.valid[:, None],)

  def rows(anchors, masks, beta, *sampled):
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    beta = beta[:, None]
    negatives = sampled[0] if sampled else masks.negative
    pos = _pipeline.terms(jax.nn.relu(margin + d - beta), masks.positive, axis=-1)
    neg = _pipeline.terms(jax.nn.relu(margin - d + beta), negatives, axis=-1)
    if weighting == "pairs":
      return jax.tree.map(jnp.add, pos, neg)
    num_pos = jnp.sum(masks.positive, -1).astype(d.dtype)
    num_neg = jnp.sum(negatives, -1).astype(d.dtype)
    return reductions.Terms(num_neg * pos.values + num_pos * neg.values, num_pos * num_neg,
                            num_neg * pos.nonzero + num_pos * neg.nonzero)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, extra=extra,
                                             reduction=reduction), reduction)


def _second_occurrences(batch: _pipeline.Batch):
  """Sohn's roles, by order of the candidates (batch rows, then the bank).

  Returns ``(first [A], second [C], pairs [A])``: whether each anchor is the
  first real row of its label, whether each candidate is the second real row of
  its label, and whether an anchor is a first row whose label has a second.
  Under ``axis_name`` the order is the global one. A stable sort by label puts
  each label's rows in row order: a row's rank is the number of real rows of
  its label before it (O(C log C), no [C, C] comparison).
  """
  labels, real = batch.candidate_labels, batch.candidate_where
  order = jnp.argsort(labels, stable=True)
  ordered = labels[order]
  counts = jnp.concatenate([jnp.zeros((1,), jnp.int32),
                            jnp.cumsum(real[order].astype(jnp.int32))])
  position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
  start = jnp.searchsorted(ordered, labels, side="left")
  stop = jnp.searchsorted(ordered, labels, side="right")
  rank = counts[position] - counts[start]          # real rows of the label before it
  size = counts[stop] - counts[start]              # real rows of the label
  first = batch.where & (jnp.take(rank, batch.self_index) == 0)
  return first, real & (rank == 1), first & (jnp.take(size, batch.self_index) >= 2)


def npair_loss(embeddings: jax.Array, labels: jax.Array, *, definition: str = "sohn",
               l2_penalty=0.0, where: jax.Array | None = None, reduction: str = "mean",
               block_size: int | None = None,
               ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None,
               ref_where: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
  r"""Multi-class N-pair loss (Sohn 2016).

  With inner products :math:`s_{ij} = x_i^\top x_j` and a batch of pairs
  :math:`\{(x_n, x_n^+)\}_{n=1}^N` of N different classes, Sohn's eq. 3:

  .. math::
    \ell_n = \log\Big(1 + \sum_{m \ne n} e^{s(x_n, x_m^+) - s(x_n, x_n^+)}\Big)
            = \mathrm{softplus}\Big(\log\sum_{m \ne n} e^{s(x_n, x_m^+)}
              - s(x_n, x_n^+)\Big)

  — a softmax cross-entropy of each anchor over the N positives, whose
  negatives are the *other pairs' positives*. ``definition="sohn"`` (the
  default) reads the roles from the row order: the first real row of each
  label is its anchor :math:`x_n`, the second its positive :math:`x_n^+`; later
  rows of a label and labels with a single row take no part. This holds for
  both usual layouts (``[x_1, x_1^+, x_2, x_2^+, ...]`` and
  ``[x_1, ..., x_N, x_1^+, ..., x_N^+]``) and is pytorch-metric-learning's
  ``NPairsLoss``, whose default ``DotProductSimilarity`` L2-normalises the
  embeddings (the ``"pml_npair"`` preset). ``"mean"`` is over the anchors. The
  paper also penalises the embeddings' norms: ``l2_penalty=λ`` adds
  :math:`\lambda \cdot \mathrm{mean}_i \|x_i\|^2` over the real rows of the
  batch (not the bank), to every reduction (to each row's term with
  ``"none"``). PML's ``NPairsLoss`` adds it only when given
  ``embedding_regularizer=LpRegularizer(power=2)`` (weight
  ``embedding_reg_weight``), on the raw rows, so the default is 0; the
  ``"pml_npair"`` preset applies ``l2_penalty`` to the raw rows too.

  ``definition="all_pairs"`` is a generalisation to any labels that does not
  depend on the row order: every positive pair :math:`(i, j)` is a term, with
  every row of another label as a negative,
  :math:`\ell_{ij} = \log(1 + \sum_{k \in N(i)} e^{s_{ik} - s_{ij}})`, ``"mean"``
  over positive pairs. On N-pair batches it is *not* Sohn's loss (each row is an
  anchor, and both rows of every other pair are negatives).

  With a memory bank the roles are read from the batch followed by the bank,
  and bank rows are candidates, never anchors.

  Args:
    embeddings: ``[batch, dim]`` floating array (not normalised: inner products).
    labels: ``[batch]`` integer labels.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: device axis for the global batch (roles in global row order).
    definition: ``"sohn"`` or ``"all_pairs"``.
    block_size: anchor rows per block (Sohn: rows of anchors that
      have a partner), as in :func:`contrastive_loss` (None:
      automatic, dense up to 512 rows, blocks of 256 above; an int ``>= batch``
      forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    l2_penalty: :math:`\lambda \ge 0`, the weight of the mean squared norm.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"`` (non-zero only at the
    anchors, unless ``l2_penalty`` > 0).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> round(float(ml.npair_loss(x, y)), 4)  # log(1 + 1 / e)
    0.3133
    >>> round(float(ml.npair_loss(x, y, definition="all_pairs")), 4)  # log(1 + 2 / e)
    0.5514

  References:
    Sohn. Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective. NeurIPS 2016. https://papers.nips.cc/paper/6200
  """
  _pipeline.check_options(reduction=reduction, l2_penalty=l2_penalty)
  _validation.choice(definition, "definition", NPAIR_DEFINITIONS)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  loss = _npair(batch, definition, reduction, block_size)
  if _is_zero(l2_penalty):
    return loss
  return _add_penalty(loss, _l2_penalty(batch, l2_penalty))


def _is_zero(value) -> bool:
  return isinstance(value, (int, float)) and value == 0


def _add_penalty(loss: jax.Array, penalty: jax.Array) -> jax.Array:
  return (loss + penalty.astype(loss.dtype)).astype(loss.dtype)


def _l2_penalty(batch: _pipeline.Batch, l2_penalty) -> jax.Array:
  """``l2_penalty * mean ||x_i||^2`` over the batch's real rows (not the bank)."""
  # Padding rows were zeroed in prepare. Under axis_name the mean is global:
  # every device reports it and differentiates only its own rows' share.
  own = jnp.sum(batch.anchors * batch.anchors)
  total, count = own, jnp.sum(batch.where)
  if batch.axis_name is not None:
    total, count = jax.lax.psum((own, count), batch.axis_name)
  count = jnp.maximum(count, 1)
  share = l2_penalty * own / count
  return share + jax.lax.stop_gradient(l2_penalty * total / count - share)


def _npair_raw_l2_penalty(embeddings: jax.Array, labels: jax.Array,
                          kwargs: dict) -> tuple[jax.Array | None, dict]:
  """For a caller that normalises the rows before :func:`npair_loss` (the
  ``"pml_npair"`` preset): Sohn's penalty on the *raw* rows, and the keyword
  arguments with ``l2_penalty`` removed, for the loss on the normalised rows.

  The penalty is ``None`` when ``l2_penalty`` is absent or a literal 0.
  """
  l2_penalty = kwargs.get("l2_penalty", 0.0)
  if _is_zero(l2_penalty):
    return None, kwargs
  _pipeline.check_options(l2_penalty=l2_penalty)
  batch = _pipeline.prepare(embeddings, labels, kwargs.get("where"),
                            axis_name=kwargs.get("axis_name"))
  return _l2_penalty(batch, l2_penalty), {**kwargs, "l2_penalty": 0.0}


def _npair(batch: _pipeline.Batch, definition: str, reduction: str, block_size) -> jax.Array:
  if definition == "all_pairs":
    def rows(anchors, masks):
      s = jnp.matmul(anchors, batch.candidates.T, precision=_HIGHEST)
      lse, found = _pipeline.log_sum_exp(s, masks.negative)
      pairs = masks.positive & found[:, None]
      return _pipeline.terms(jax.nn.softplus(lse[:, None] - s), pairs, axis=-1)

    return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction)
  return batch.finish(_sohn_terms(batch, block_size), reduction)


def _sohn_terms(batch: _pipeline.Batch, block_size) -> reductions.Terms:
  """Sohn's terms on the compacted pairs: only anchors that have a partner
  (rows) against only second rows (columns).

  Shapes are static, so the compacted matrix has room for every case: at most
  half the candidates are second rows, and without a bank or other devices at
  most half the anchors have a partner. That is a quarter of the
  [batch, candidates] matrix (an N-pair batch fills it exactly), streamed over
  blocks of its rows like :func:`_pipeline.per_anchor`.
  """
  _, second, partner = _second_occurrences(batch)
  size, cands = batch.anchors.shape[0], batch.candidates.shape[0]
  local = batch.num_refs == 0 and batch.axis_name is None
  rows_cap = (size + 1) // 2 if local else size
  cols_cap = max(1, cands // 2)
  rows, = jnp.nonzero(partner, size=rows_cap, fill_value=0)
  cols, = jnp.nonzero(second, size=cols_cap, fill_value=0)
  row_ok = jnp.arange(rows_cap) < jnp.sum(partner)
  col_ok = jnp.arange(cols_cap) < jnp.sum(second)
  a = _sharding.take_rows(batch.anchors, jax.lax.stop_gradient(rows))
  c = _sharding.take_rows(batch.candidates, jax.lax.stop_gradient(cols))
  col_labels = batch.candidate_labels[cols]

  def block(a, labels, ok):
    s = jnp.matmul(a, c.T, precision=_HIGHEST)
    same = labels[:, None] == col_labels[None, :]
    lse, found = _pipeline.log_sum_exp(s, ~same & col_ok[None, :])
    positive = same & col_ok[None, :]                  # exactly one: the partner
    s_pos = jnp.sum(jnp.where(positive, s, 0), axis=-1)
    valid = ok & found
    return jnp.where(valid, jax.nn.softplus(lse - s_pos), 0), valid

  rows_per_block = _pipeline.block_rows(block_size, size)
  if rows_per_block is not None and rows_per_block >= rows_cap:
    rows_per_block = None
  values, valid = _pipeline.map_row_blocks(block, (a, batch.labels[rows], row_ok),
                                           rows_per_block)
  # Back to anchor order (the "none" reduction returns a term per anchor).
  scatter = lambda v: jnp.zeros((size,), v.dtype).at[rows].add(jnp.where(row_ok, v, 0))
  return _pipeline.terms(scatter(values), scatter(valid.astype(values.dtype)) > 0)
