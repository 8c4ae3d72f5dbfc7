r"""Pair-based losses that weigh every positive and negative pair of the batch.

Circle loss (Sun et al. 2020), tuplet margin loss (Yu & Tao 2019), angular loss
(Wang et al. 2017), the generalised lifted structure loss (Hermans et al.
2017), FastAP (Cakir et al. 2019) and NCA (Goldberger et al. 2005). Notation as
in :mod:`metric_learning.masks`: :math:`P(i)` positives, :math:`N(i)`
negatives, :math:`\hat x = x / \|x\|_2` (a zero vector stays zero) and
:math:`s_{ij} = \hat x_i^\top \hat x_j` the cosine similarity.

Like the other in-batch losses they take ``where`` (padding), ``axis_name``
(global batch under ``pmap`` / ``shard_map``), a memory bank (``ref_*``: rows
that are candidates but not anchors and receive no gradient) and the four
reductions of :mod:`metric_learning.reductions`, and ``block_size``: every one
streams over blocks of anchor rows, O(block · batch) memory (the default is
automatic: dense up to 512 rows, blocks of 256 above). Time is O(batch² · dim)
(FastAP: O(batch² · bins); angular: O(batch · dim + positive pairs · batch),
from label-sorted tiles of candidates that hold positives). Default hyper-parameters are the
papers' where the papers give them, else pytorch-metric-learning's; each
docstring says which.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp

from metric_learning import _kernels
from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning import reductions
from metric_learning.losses import _pipeline

_HIGHEST = jax.lax.Precision.HIGHEST
# pytorch-metric-learning's defaults, given there in degrees.
_TUPLET_MARGIN = math.radians(5.73)
_ANGULAR_ALPHA = math.radians(40.0)


def _prepare(embeddings, labels, where, ref_embeddings, ref_labels, ref_where,
             axis_name) -> tuple[_pipeline.Batch, jnp.dtype]:
  """:func:`_pipeline.prepare`, and the dtype to return."""
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  return batch, jnp.dtype(batch.out_dtype)


def _cosine(batch: _pipeline.Batch, anchors: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``[b, C]`` cosine distances ``1 - s`` and similarities ``s`` of ``anchors``.

  Built from the library's cosine distance, whose rounding noise around 0 is set
  to exactly 0: duplicates get ``s = 1`` and gradient 0.
  """
  d = _kernels.pairwise(anchors, batch.candidates, "cosine")
  return d, 1.0 - d


def _angle(value, name: str, *, upper: float) -> None:
  """Rejects concrete angles outside ``[0, upper)`` (radians)."""
  if isinstance(value, jax.core.Tracer):
    return
  v = float(value)
  if not 0.0 <= v < upper:
    raise ValueError(f"{name} must be an angle in radians in [0, {upper:.4f}); got {v}.")


def circle_loss(embeddings: jax.Array, labels: jax.Array, *, margin=0.4, gamma=80.0,
                where: jax.Array | None = None, reduction: str = "mean_nonzero",
                block_size: int | None = None,
                ref_embeddings: jax.Array | None = None,
                ref_labels: jax.Array | None = None,
                ref_where: jax.Array | None = None,
                axis_name: str | None = None) -> jax.Array:
  r"""Circle loss (Sun et al. 2020) with pair-wise labels, on cosine similarities.

  Each similarity is re-weighted by how far it is from its optimum, with the
  weights :math:`\alpha` treated as constants (no gradient), as in the paper:

  .. math::
    \alpha^p_{ij} = [1 + m - s_{ij}]_+, \quad \alpha^n_{ik} = [s_{ik} + m]_+, \quad
    \ell_i = \mathrm{softplus}\Big(
      \log\sum_{j \in P(i)} e^{-\gamma \alpha^p_{ij} (s_{ij} - (1 - m))}
      + \log\sum_{k \in N(i)} e^{\gamma \alpha^n_{ik} (s_{ik} - m)}\Big)

  (= :math:`\log(1 + \sum_{j,k} e^{\gamma(\alpha^n_{ik}(s_{ik} - \Delta_n)
  - \alpha^p_{ij}(s_{ij} - \Delta_p))})` with :math:`\Delta_p = 1 - m`,
  :math:`\Delta_n = m`), one term per valid anchor (at least one positive and
  one negative); other anchors give 0. The default ``"mean_nonzero"`` divides
  by the number of valid anchors whose term is > 0 (pytorch-metric-learning's
  ``AvgNonZeroReducer``; a term underflows to exactly 0 once an anchor is
  separated by a wide margin); ``"mean"`` divides by the number of valid
  anchors.

  Defaults :math:`m = 0.4`, :math:`\gamma = 80` are the paper's setting for
  fine-grained image retrieval (also pytorch-metric-learning ``CircleLoss``).

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer labels.
    margin: relaxation :math:`m \ge 0`.
    gamma: scale :math:`\gamma > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean_nonzero"``, ``"mean"``, ``"sum"`` or ``"none"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import circle_loss
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(v, 3) for v in circle_loss(x, jnp.array([0, 0, 1, 1]),
    ...                                   reduction="none").tolist()]
    [6.402, 51.328, 51.328, 6.402]

  References:
    Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei. Circle Loss: A Unified
    Perspective of Pair Similarity Optimization. CVPR 2020.
    https://arxiv.org/abs/2002.10857
  """
  _pipeline.check_options(reduction=reduction, margin=margin)
  _validation.positive(gamma, "gamma")
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)

  def rows(anchors, masks):
    _, s = _cosine(batch, anchors)
    fixed = jax.lax.stop_gradient(s)
    logit_p = -gamma * jax.nn.relu(1.0 + margin - fixed) * (s - (1.0 - margin))
    logit_n = gamma * jax.nn.relu(fixed + margin) * (s - margin)
    lse_p, _ = _pipeline.log_sum_exp(logit_p, masks.positive)
    lse_n, _ = _pipeline.log_sum_exp(logit_n, masks.negative)
    valid = masks.valid_anchor
    value = jax.nn.softplus(jnp.where(valid, lse_p + lse_n, 0.0))
    return _pipeline.terms(value, valid)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction).astype(dtype)


def tuplet_margin_loss(embeddings: jax.Array, labels: jax.Array, *,
                       margin=_TUPLET_MARGIN, scale=64.0,
                       where: jax.Array | None = None, reduction: str = "mean",
                       block_size: int | None = None,
                       ref_embeddings: jax.Array | None = None,
                       ref_labels: jax.Array | None = None,
                       ref_where: jax.Array | None = None,
                       axis_name: str | None = None) -> jax.Array:
  r"""Tuplet margin loss (Yu & Tao 2019) over every positive pair of the batch.

  With :math:`\theta_{ij} = \arccos s_{ij}` and a slack margin :math:`\beta`
  that makes each positive pair look *easier*:

  .. math::
    \ell_{ij} = \log\Big(1 + \sum_{k \in N(i)}
                e^{\,s\,(\cos\theta_{ik} - \cos(\theta_{ij} - \beta))}\Big),
    \qquad j \in P(i)

  :math:`\cos(\theta - \beta)` is evaluated as
  :math:`c \cos\beta + \sqrt{d(2 - d)} \sin\beta` with :math:`c = s_{ij}`,
  :math:`d = 1 - c` — equal to it on :math:`[-1, 1]`, but without ``arccos``,
  whose derivative is infinite at :math:`c = \pm 1` (duplicates get gradient 0,
  never NaN). ``"mean"`` divides by the number of positive pairs of valid
  anchors (pytorch-metric-learning's ``MeanReducer`` over positive pairs);
  ``"none"`` gives each anchor's sum over its positive pairs. The paper's
  intra-pair variance regulariser is a separate term and is not included.

  Defaults follow pytorch-metric-learning ``TupletMarginLoss``: :math:`\beta`
  = 5.73 degrees (0.1 rad), :math:`s = 64`. The margin is in **radians**.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer labels.
    margin: slack margin :math:`\beta` in radians, in :math:`[0, \pi)`.
    scale: :math:`s > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import tuplet_margin_loss
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(v, 3) for v in tuplet_margin_loss(x, jnp.array([0, 0, 1, 1]),
    ...                                          reduction="none").tolist()]
    [0.0, 6.663, 6.663, 0.0]

  References:
    Yu, Tao. Deep Metric Learning with Tuplet Margin Loss. ICCV 2019.
    https://openaccess.thecvf.com/content_ICCV_2019/html/Yu_Deep_Metric_Learning_With_Tuplet_Margin_Loss_ICCV_2019_paper.html
  """
  _pipeline.check_options(reduction=reduction)
  _angle(margin, "margin", upper=math.pi)
  _validation.positive(scale, "scale")
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)

  def rows(anchors, masks):
    d, s = _cosine(batch, anchors)
    # sin(theta) = sqrt(1 - c^2) = sqrt(d (2 - d)): accurate near c = 1, and the
    # safe sqrt has gradient 0 (not inf) at d = 0.
    sin = distances_lib.safe_sqrt(jnp.clip(d * (2.0 - d), 0.0, None))
    shifted = s * jnp.cos(margin) + sin * jnp.sin(margin)
    lse_n, found = _pipeline.log_sum_exp(scale * s, masks.negative)
    pairs = masks.positive & found[:, None]
    gap = jnp.where(pairs, lse_n[:, None] - scale * shifted, 0.0)
    return _pipeline.terms(jax.nn.softplus(gap), pairs, axis=-1)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction).astype(dtype)


def angular_loss(embeddings: jax.Array, labels: jax.Array, *, alpha=_ANGULAR_ALPHA,
                 where: jax.Array | None = None, reduction: str = "mean",
                 block_size: int | None = None,
                 ref_embeddings: jax.Array | None = None,
                 ref_labels: jax.Array | None = None,
                 ref_where: jax.Array | None = None,
                 axis_name: str | None = None) -> jax.Array:
  r"""Angular loss (Wang et al. 2017), N-pair form, over every positive pair.

  On L2-normalised embeddings (all of them: anchors, positives, negatives),
  with :math:`t = \tan^2\alpha`,

  .. math::
    f_{ijk} = 4t\,(\hat x_i + \hat x_j)^\top \hat x_k - 2(1 + t)\,\hat x_i^\top \hat x_j,
    \qquad
    \ell_{ij} = \log\Big(1 + \sum_{k \in N(i)} e^{f_{ijk}}\Big), \quad j \in P(i)

  (the paper's eq. 9). The sum over negatives is one matmul of
  row-shifted exponentials, :math:`\sum_k e^{4t s_{ik}} e^{4t s_{jk}}`. Streamed,
  anchors and candidates are put in label order and each block of anchors
  takes that matmul only against the tiles of candidates that hold its
  positives: memory O(block · batch), time O(positive pairs · batch) on top of
  the similarities, for any labels. ``"mean"`` divides by the number of positive pairs
  of valid anchors (pytorch-metric-learning's ``MeanReducer`` over positive
  pairs); ``"none"`` gives each anchor's sum over its positive pairs.

  pytorch-metric-learning ``AngularLoss`` normalises anchors and positives but
  not the negatives; here every row is normalised, as the paper's derivation
  assumes: values agree on unit-norm inputs.

  Default :math:`\alpha` = 40 degrees follows pytorch-metric-learning (the
  paper reports results for a range of :math:`\alpha`). It is in **radians**.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer labels.
    alpha: angle :math:`\alpha` in radians, in :math:`[0, 1.2)` (below about 69
      degrees, where the shifted exponentials cannot underflow in float32).
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import angular_loss
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(v, 3) for v in angular_loss(x, jnp.array([0, 0, 1, 1]),
    ...                                    reduction="none").tolist()]
    [1.895, 1.895, 1.895, 1.895]

  References:
    Wang, Zhou, Wen, Liu, Lin. Deep Metric Learning with Angular Loss.
    ICCV 2017. https://arxiv.org/abs/1708.01682
  """
  _pipeline.check_options(reduction=reduction)
  _angle(alpha, "alpha", upper=1.2)
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)
  t = jnp.tan(alpha) ** 2
  block = _pipeline.block_rows(block_size, batch.anchors.shape[0])
  if block is None:
    rows = functools.partial(_angular_rows, batch, t=t, tile=None)
    terms = _pipeline.per_anchor(batch, block_size, rows)
  else:
    # Label-sorted anchors and candidates: the positives of a block of anchors
    # then fill few candidate tiles, and only those are computed.
    ordered, inverse = _sorted_by_label(batch)
    rows = functools.partial(_angular_rows, ordered, t=t, tile=block)
    terms = jax.tree.map(lambda v: v[inverse], _pipeline.per_anchor(ordered, block, rows))
  return batch.finish(terms, reduction).astype(dtype)


def _sorted_by_label(batch: _pipeline.Batch) -> tuple[_pipeline.Batch, jax.Array]:
  """``batch`` with anchors and candidates in (stable) label order, and the
  permutation that puts per-anchor results back in the caller's order."""
  anchor_order = jax.lax.stop_gradient(jnp.argsort(batch.labels, stable=True))
  order = jax.lax.stop_gradient(jnp.argsort(batch.candidate_labels, stable=True))
  position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
  ordered = dataclasses.replace(
      batch, anchors=_sharding.take_rows(batch.anchors, anchor_order),
      labels=batch.labels[anchor_order], where=batch.where[anchor_order],
      candidates=_sharding.take_rows(batch.candidates, order),
      candidate_labels=batch.candidate_labels[order],
      candidate_where=batch.candidate_where[order],
      self_index=position[batch.self_index[anchor_order]])
  inverse = jnp.zeros_like(anchor_order).at[anchor_order].set(
      jnp.arange(anchor_order.shape[0], dtype=anchor_order.dtype))
  return ordered, inverse


def _angular_rows(batch: _pipeline.Batch, anchors, masks, *, t, tile: int | None):
  r"""Angular terms of a block of anchors against every candidate.

  :math:`\log\sum_{k \in N(i)} e^{4t(s_{ik} + s_{jk})}` for each positive
  :math:`j` is one matmul of row-shifted exponentials,
  :math:`\sum_k e^{4t s_{ik}} e^{4t s_{jk}}`. With ``tile=None`` it is taken
  against all candidates at once (a ``[C, C]`` factor); otherwise over tiles
  of ``tile`` candidates ``j``, skipping the tiles that hold no positive of the
  block: memory O(block · C + tile · C), time proportional to the tiles that
  hold positive pairs.
  """
  _, s = _cosine(batch, anchors)                                   # [b, C]
  u = 4.0 * t * s
  # exp(u_ik + v_jk) = exp(u_ik - a_i) exp(v_jk - b_j) e^(a_i + b_j) with the row
  # maxima a, b (constants): every factor is in [e^(-8t), 1] since |s| <= 1, and
  # the largest masked term of each row is at least e^(-8t), which cannot
  # underflow for alpha < 1.2 rad; the floor below only guards beyond that.
  found = masks.has_negative
  a = jax.lax.stop_gradient(jnp.max(jnp.where(masks.negative, u, _pipeline.NEG_LOG), -1))
  a = jnp.where(found, a, 0.0)
  left = jnp.where(masks.negative, jnp.exp(jnp.where(masks.negative, u - a[:, None], 0.0)),
                   0.0)
  pairs = masks.positive & found[:, None]

  def tile_terms(cands, s_ij, pairs):
    """Terms of the anchors against candidates ``cands`` [n, D] as positives."""
    v = 4.0 * t * (1.0 - _kernels.pairwise(cands, batch.candidates, "cosine"))   # [n, C]
    b = jax.lax.stop_gradient(jnp.max(v, -1))
    right = jnp.exp(v - b[:, None])
    total = jnp.matmul(left, right.T, precision=_HIGHEST)                       # [b, n]
    total = jnp.maximum(total, jnp.finfo(total.dtype).tiny)
    lse = a[:, None] + b[None, :] + jnp.log(total)
    f = jnp.where(pairs, lse - 2.0 * (1.0 + t) * s_ij, 0.0)
    return _pipeline.terms(jax.nn.softplus(f), pairs, axis=-1)

  if tile is None:
    return tile_terms(batch.candidates, s, pairs)
  size = batch.candidates.shape[0]
  tiles = -(-size // tile)
  pad = tiles * tile - size
  cands = jnp.pad(batch.candidates, ((0, pad), (0, 0)))
  s = jnp.pad(s, ((0, 0), (0, pad)))
  pairs = jnp.pad(pairs, ((0, 0), (0, pad)))
  active = jnp.any(pairs.reshape(pairs.shape[0], tiles, tile), axis=(0, 2))     # [tiles]

  @jax.checkpoint
  def step(total, w):
    start = w * tile
    cut = lambda x, axis: jax.lax.dynamic_slice_in_dim(x, start, tile, axis)
    operands = (cut(cands, 0), cut(s, 1), cut(pairs, 1))
    zero = lambda *_: jax.tree.map(jnp.zeros_like, total)
    got = jax.lax.cond(active[w], lambda o: tile_terms(*o), zero, operands)
    return jax.tree.map(jnp.add, total, got), None

  init = reductions.Terms(*(jnp.zeros(anchors.shape[:1], s.dtype) for _ in range(3)))
  total, _ = jax.lax.scan(step, init, jnp.arange(tiles))
  return total


def generalized_lifted_structure_loss(
    embeddings: jax.Array, labels: jax.Array, *, neg_margin=1.0, pos_margin=0.0,
    metric: str = "euclidean", where: jax.Array | None = None, reduction: str = "mean",
    block_size: int | None = None, ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
    axis_name: str | None = None) -> jax.Array:
  r"""Generalised lifted structure loss (Hermans, Beyer, Leibe 2017), per anchor.

  The lifted structure loss of Oh Song et al. (2016) rewritten per anchor, with
  soft maxima over all positives and all negatives:

  .. math::
    \ell_i = \Big[\log\sum_{j \in P(i)} e^{D_{ij} - m_p}
                 + \log\sum_{k \in N(i)} e^{m_n - D_{ik}}\Big]_+

  for valid anchors (at least one positive and one negative; others give 0, as
  an empty log-sum-exp is :math:`-\infty`). ``"mean"`` divides by the number of
  valid anchors. pytorch-metric-learning ``GeneralizedLiftedStructureLoss``
  divides by all rows and reads an empty log-sum-exp as 0; on PK batches (every
  anchor valid) the two agree.

  Defaults :math:`m_n = 1`, :math:`m_p = 0` follow pytorch-metric-learning (the
  paper has one margin, :math:`m_p = 0`). The embeddings are used as given, as
  in the paper; pytorch-metric-learning L2-normalises them first — pass
  :func:`metric_learning.l2_normalize` d embeddings to reproduce it.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    neg_margin: :math:`m_n`.
    pos_margin: :math:`m_p`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import generalized_lifted_structure_loss
    >>> x, y = jnp.array([[0.0], [1.0], [1.5]]), jnp.array([0, 0, 1])
    >>> [round(v, 3) for v in generalized_lifted_structure_loss(
    ...     x, y, reduction="none").tolist()]
    [0.5, 1.5, 0.0]

  References:
    Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
    Re-Identification. 2017. https://arxiv.org/abs/1703.07737

    Oh Song, Xiang, Jegelka, Savarese. Deep Metric Learning via Lifted
    Structured Feature Embedding. CVPR 2016. https://arxiv.org/abs/1511.06452
  """
  _pipeline.check_options(metric=metric, reduction=reduction)
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)

  def rows(anchors, masks):
    d = _kernels.pairwise(anchors, batch.candidates, metric)
    lse_p, _ = _pipeline.log_sum_exp(d - pos_margin, masks.positive)
    lse_n, _ = _pipeline.log_sum_exp(neg_margin - d, masks.negative)
    valid = masks.valid_anchor
    value = jax.nn.relu(jnp.where(valid, lse_p + lse_n, 0.0))
    return _pipeline.terms(value, valid)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction).astype(dtype)


def fast_ap_loss(embeddings: jax.Array, labels: jax.Array, *, num_bins: int = 10,
                 where: jax.Array | None = None, reduction: str = "mean",
                 block_size: int | None = None,
                 ref_embeddings: jax.Array | None = None,
                 ref_labels: jax.Array | None = None,
                 ref_where: jax.Array | None = None,
                 axis_name: str | None = None) -> jax.Array:
  r"""FastAP (Cakir, He, Xia, Kulis, Sclaroff 2019): 1 - histogram-binned AP.

  Distances are squared euclidean between L2-normalised embeddings,
  :math:`D_{ij} = 2 - 2 s_{ij} \in [0, 4]`, soft-assigned to :math:`L + 1`
  bin centres :math:`z_l = l\Delta`, :math:`\Delta = 4 / L`, by triangular
  kernels :math:`\delta_{ijl} = [1 - |D_{ij} - z_l| / \Delta]_+`. Per anchor,
  :math:`h^+_{il} = \sum_{j \in P(i)} \delta_{ijl}`,
  :math:`h_{il} = h^+_{il} + \sum_{k \in N(i)} \delta_{ikl}`, their cumulative
  sums :math:`H^+, H`, and

  .. math::
    \ell_i = 1 - \frac{1}{|P(i)|} \sum_{l} \frac{h^+_{il} H^+_{il}}{H_{il}}

  (bins with :math:`h^+ H^+ = 0` contribute 0), computed as the equal
  :math:`\frac{1}{|P(i)|}\sum_l h^+_{il} H^-_{il} / H_{il}` with :math:`H^-` the
  cumulative negative histogram (the kernels of one pair sum to 1 over the bins):
  non-negative, and exactly 0 when no negative precedes a positive. One term
  per valid anchor (at least one positive and one negative; others give 0).
  ``"mean"`` divides by the number of valid anchors, like
  pytorch-metric-learning's ``FastAPLoss`` (which averages over anchors with a
  positive; an anchor without negatives has :math:`\ell = 0` there).

  Default :math:`L = 10` follows pytorch-metric-learning ``FastAPLoss``.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer labels.
    num_bins: number of histogram bins :math:`L \ge 1` (a Python int).
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import fast_ap_loss
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(v, 3) for v in fast_ap_loss(x, jnp.array([0, 0, 1, 1]),
    ...                                    reduction="none").tolist()]
    [0.0, 0.5, 0.5, 0.0]

  References:
    Cakir, He, Xia, Kulis, Sclaroff. Deep Metric Learning to Rank. CVPR 2019.
    https://arxiv.org/abs/1904.01597
  """
  _pipeline.check_options(reduction=reduction)
  if (isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral)
      or num_bins < 1):
    raise ValueError(f"num_bins must be a Python int >= 1; got {num_bins!r}.")
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)
  delta = 4.0 / num_bins
  streamed = _pipeline.block_rows(block_size, batch.anchors.shape[0]) is not None

  def rows(anchors, masks):
    d_cos, _ = _cosine(batch, anchors)
    d = 2.0 * d_cos                                     # |x̂ - ŷ|² in [0, 4]
    centres = jnp.linspace(0.0, 4.0, num_bins + 1, dtype=d.dtype)
    # A loop over the bins, each one [rows, candidates] kernel reduced at once.
    # Streamed, each bin is recomputed in the backward pass: memory does not
    # grow with the bins (the dense path keeps one residual per bin).
    def histogram(_, centre):
      pulse = jax.nn.relu(1.0 - jnp.abs(d - centre) / delta)
      return None, (jnp.sum(jnp.where(masks.positive, pulse, 0.0), axis=-1),
                    jnp.sum(jnp.where(masks.negative, pulse, 0.0), axis=-1))

    _, (h_pos, h_neg) = jax.lax.scan(jax.checkpoint(histogram) if streamed else histogram,
                                     None, centres)
    h_pos, h_neg = h_pos.T, h_neg.T                                # [rows, L+1]
    # 1 - AP = sum_l h+_l (1 - H+_l / H_l) / |P(i)| = sum_l h+_l H-_l / H_l / |P(i)|,
    # because the kernels of one pair sum to 1 over the bins. This form is >= 0
    # and exactly 0 when no negative comes before a positive, without the
    # rounding residue of 1 - (a number close to 1).
    cum_neg = jnp.cumsum(h_neg, axis=-1)
    cum_all = jnp.cumsum(h_pos, axis=-1) + cum_neg
    ok = (h_pos > 0) & (cum_all > 0)
    miss = jnp.sum(jnp.where(ok, h_pos * cum_neg / jnp.where(ok, cum_all, 1.0), 0.0), -1)
    n_pos = jnp.sum(masks.positive, axis=-1).astype(d.dtype)
    valid = masks.valid_anchor
    value = jnp.where(valid, miss / jnp.where(valid, n_pos, 1.0), 0.0)
    return _pipeline.terms(value, valid)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction).astype(dtype)


def nca_loss(embeddings: jax.Array, labels: jax.Array, *, softmax_scale=1.0,
             metric: str = "sqeuclidean", where: jax.Array | None = None,
             reduction: str = "mean", block_size: int | None = None,
             ref_embeddings: jax.Array | None = None,
             ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
             axis_name: str | None = None) -> jax.Array:
  r"""Neighbourhood components analysis loss (Goldberger et al. 2005).

  Each anchor picks a neighbour :math:`j \ne i` with probability
  :math:`p_{ij} \propto e^{-\sigma D_{ij}}`; the loss is the negative log
  probability that the neighbour shares its label:

  .. math::
    \ell_i = -\log \frac{\sum_{j \in P(i)} e^{-\sigma D_{ij}}}
                       {\sum_{j \in P(i) \cup N(i)} e^{-\sigma D_{ij}}}
           = \mathrm{softplus}\Big(\log\sum_{k \in N(i)} e^{-\sigma D_{ik}}
                                  - \log\sum_{j \in P(i)} e^{-\sigma D_{ij}}\Big)

  (the right-hand form is exact and never takes the log of an underflowed
  probability) for valid anchors (at least one positive and one negative;
  others give 0). ``"mean"`` divides by the number of valid anchors, like
  pytorch-metric-learning's ``NCALoss`` (which averages over anchors with a
  positive; without negatives :math:`\ell = 0`).

  Defaults: squared euclidean distance on the embeddings as given (the paper's
  :math:`\|Ax_i - Ax_j\|^2`), :math:`\sigma = 1` (pytorch-metric-learning
  ``softmax_scale``). pytorch-metric-learning L2-normalises the embeddings
  first — pass :func:`metric_learning.l2_normalize` d embeddings to reproduce
  it.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    softmax_scale: :math:`\sigma > 0`.
    metric: ``"sqeuclidean"``, ``"euclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: anchor rows per block, as in :func:`metric_learning.contrastive_loss`
      (None: automatic, dense up to 512 rows, blocks of 256 above; an int
      ``>= batch`` forces the dense path). Same values and gradients.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.
    axis_name: mine over the global batch inside ``pmap`` / ``shard_map``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.pair_based import nca_loss
    >>> x, y = jnp.array([[0.0], [1.0], [2.0]]), jnp.array([0, 0, 1])
    >>> [round(v, 3) for v in nca_loss(x, y, reduction="none").tolist()]  # log(1 + e^-3)
    [0.049, 0.693, 0.0]

  References:
    Goldberger, Roweis, Hinton, Salakhutdinov. Neighbourhood Components
    Analysis. NeurIPS 2004 (2005 proceedings).
    https://www.cs.toronto.edu/~hinton/absps/nca.pdf
  """
  _pipeline.check_options(metric=metric, reduction=reduction)
  _validation.positive(softmax_scale, "softmax_scale")
  batch, dtype = _prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                          ref_where, axis_name)

  def rows(anchors, masks):
    z = -softmax_scale * _kernels.pairwise(anchors, batch.candidates, metric)
    lse_p, _ = _pipeline.log_sum_exp(z, masks.positive)
    lse_n, _ = _pipeline.log_sum_exp(z, masks.negative)
    valid = masks.valid_anchor
    value = jax.nn.softplus(jnp.where(valid, lse_n - lse_p, 0.0))
    return _pipeline.terms(value, valid)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction).astype(dtype)
