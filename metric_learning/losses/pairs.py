r"""Pair- and similarity-based relatives of the triplet loss.

Contrastive (Hadsell et al. 2006), lifted structure (Oh Song et al. 2016),
multi-similarity (Wang et al. 2019), margin (Wu et al. 2017) and N-pair
(Sohn 2016). Notation as in :mod:`metric_learning.masks`; every loss here is
O(batch²) in time and memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _validation
from metric_learning import mining
from metric_learning import reductions
from metric_learning.losses import _pipeline

_HIGHEST = jax.lax.Precision.HIGHEST


def contrastive_loss(embeddings: jax.Array, labels: jax.Array, *, margin=1.0,
                     metric: str = "euclidean", where: jax.Array | None = None,
                     reduction: str = "mean",
                     ref_embeddings: jax.Array | None = None,
                     ref_labels: jax.Array | None = None,
                     ref_where: jax.Array | None = None,
                     axis_name: str | None = None) -> jax.Array:
  r"""Contrastive loss (Hadsell, Chopra, LeCun 2006) over all pairs in the batch.

  .. math::
    \ell_{ij} = \tfrac12 D_{ij}^2 \;(j \in P(i)), \qquad
    \ell_{ik} = \tfrac12 [m - D_{ik}]_+^2 \;(k \in N(i))

  ``"mean"`` averages over all (ordered) pairs, ``"none"`` gives each anchor's
  sum over its pairs.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), as in :func:`metric_learning.batch_hard_triplet_loss`.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5]]), jnp.array([0, 0, 1])
    >>> ml.contrastive_loss(x, y, margin=1.0, reduction="none").tolist()
    [0.5, 0.625, 0.125]

  References:
    Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an Invariant
    Mapping. CVPR 2006. https://doi.org/10.1109/CVPR.2006.100
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  d, masks = batch.distances(metric), batch.masks()
  pos = _pipeline.terms(0.5 * d * d, masks.positive, axis=-1)
  neg = _pipeline.terms(0.5 * jax.nn.relu(margin - d) ** 2, masks.negative, axis=-1)
  return batch.finish(jax.tree.map(jnp.add, pos, neg), reduction)


def lifted_structure_loss(embeddings: jax.Array, labels: jax.Array, *, margin=1.0,
                          metric: str = "euclidean", where: jax.Array | None = None,
                          reduction: str = "mean",
                          axis_name: str | None = None) -> jax.Array:
  r"""Lifted structured loss (Oh Song, Xiang, Jegelka, Savarese 2016).

  .. math::
    J_{ij} = \log\Big(\sum_{k \in N(i)} e^{m - D_{ik}} + \sum_{l \in N(j)} e^{m - D_{jl}}\Big)
             + D_{ij}, \qquad
    L = \frac{1}{2|\hat P|} \sum_{(i,j) \in \hat P} [J_{ij}]_+^2

  over positive pairs :math:`\hat P`. Computed with stable masked
  log-sum-exps. ``"mean"`` is the paper's :math:`L`; ``"none"`` gives
  :math:`\frac12 \sum_{j \in P(i)} [J_{ij}]_+^2` per anchor (each unordered pair
  appears from both ends).

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: :math:`m \ge 0`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.

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
  batch = _pipeline.prepare(embeddings, labels, where, axis_name=axis_name)
  d, masks = batch.distances(metric), batch.masks()
  lse, found = _pipeline.log_sum_exp(margin - d, masks.negative)
  # j has i's label, so N(j) = N(i) and "found" is shared by both ends; j's own
  # log-sum-exp comes from whichever device holds row j.
  j_ij = jnp.logaddexp(lse[:, None], batch.gather(lse)[None, :]) + d
  pairs = masks.positive & found[:, None]
  t = _pipeline.terms(0.5 * jax.nn.relu(j_ij) ** 2, pairs, axis=-1)
  return batch.finish(t, reduction)


def multi_similarity_loss(embeddings: jax.Array, labels: jax.Array, *, alpha=2.0,
                          beta=50.0, base=0.5, epsilon=0.1,
                          where: jax.Array | None = None, reduction: str = "mean",
                          ref_embeddings: jax.Array | None = None,
                          ref_labels: jax.Array | None = None,
                          ref_where: jax.Array | None = None,
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
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank, as in the XBM paper).

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
  s, masks = 1.0 - batch.distances("cosine"), batch.masks()
  s_const = jax.lax.stop_gradient(s)
  _, min_pos, _ = mining.masked_argmin(s_const, masks.positive)
  _, max_neg, _ = mining.masked_argmax(s_const, masks.negative)
  keep_pos = masks.positive & (s_const - epsilon < max_neg[:, None])
  keep_neg = masks.negative & (s_const + epsilon > min_pos[:, None])
  pos = _pipeline.log1p_sum_exp(-alpha * (s - base), keep_pos) / alpha
  neg = _pipeline.log1p_sum_exp(beta * (s - base), keep_neg) / beta
  used = jnp.any(keep_pos, -1) & jnp.any(keep_neg, -1)
  t = _pipeline.terms(pos + neg, used)
  t = reductions.Terms(t.values, masks.valid_anchor.astype(t.values.dtype), t.nonzero)
  return batch.finish(t, reduction)


def margin_loss(embeddings: jax.Array, labels: jax.Array, *, beta=1.2, margin=0.2,
                metric: str = "euclidean", key: jax.Array | None = None,
                where: jax.Array | None = None,
                reduction: str = "mean_nonzero",
                axis_name: str | None = None) -> jax.Array:
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

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    beta: boundary :math:`\beta`, scalar or ``[batch]``.
    margin: :math:`\alpha \ge 0`.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    key: optional PRNG key for distance-weighted negative sampling.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean_nonzero"``, ``"mean"`` (over pairs), ``"sum"`` or ``"none"``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.5], [1.0]]), jnp.array([0, 0, 1])
    >>> [round(v, 4) for v in ml.margin_loss(x, y, beta=1.2, margin=0.2, reduction="none").tolist()]
    [0.9, 1.4, 1.3]

  References:
    Wu, Manmatha, Smola, Krähenbühl. Sampling Matters in Deep Embedding
    Learning. ICCV 2017. https://arxiv.org/abs/1706.07567
  """
  _pipeline.check_options(metric=metric, reduction=reduction, margin=margin)
  if key is not None and axis_name is not None:
    raise ValueError("margin_loss: key (distance-weighted sampling) cannot be combined "
                     "with axis_name; sample on one device or use all negatives.")
  batch = _pipeline.prepare(embeddings, labels, where, axis_name=axis_name)
  d, masks = batch.distances(metric), batch.masks()
  beta = jnp.asarray(beta, d.dtype)
  if beta.ndim not in (0, 1) or (beta.ndim == 1 and beta.shape != batch.labels.shape):
    raise ValueError(f"beta must be a scalar or have shape {batch.labels.shape}; "
                     f"got shape {beta.shape}.")
  beta = beta[:, None] if beta.ndim else beta
  negatives = masks.negative
  if key is not None:
    sel = mining.distance_weighted(key, jax.lax.stop_gradient(d), batch.labels,
                                   dim=batch.anchors.shape[1], where=batch.where)
    columns = jnp.arange(d.shape[1])[None, :]
    negatives = (columns == sel.negative_index[:, None]) & sel.valid[:, None]
  pos = _pipeline.terms(jax.nn.relu(margin + d - beta), masks.positive, axis=-1)
  neg = _pipeline.terms(jax.nn.relu(margin - d + beta), negatives, axis=-1)
  return batch.finish(jax.tree.map(jnp.add, pos, neg), reduction)


def npair_loss(embeddings: jax.Array, labels: jax.Array, *,
               where: jax.Array | None = None, reduction: str = "mean",
               axis_name: str | None = None) -> jax.Array:
  r"""Multi-class N-pair loss (Sohn 2016), generalised to any labels.

  With inner products :math:`s_{ij} = x_i^\top x_j`, for every positive pair

  .. math::
    \ell_{ij} = \log\Big(1 + \sum_{k \in N(i)} e^{s_{ik} - s_{ij}}\Big)
              = \mathrm{softplus}\Big(\log\sum_{k \in N(i)} e^{s_{ik}} - s_{ij}\Big)

  (the right-hand form makes it O(batch²)). On Sohn's N-pair batches (one
  positive per anchor) ``"mean"`` — over positive pairs of valid anchors — is
  the paper's loss; add its L2 penalty on the embeddings yourself if wanted.

  Args:
    embeddings: ``[batch, dim]`` floating array (not normalised: inner products).
    labels: ``[batch]`` integer labels.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(ml.npair_loss(x, jnp.array([0, 0, 1, 1]))), 4)  # log(1 + 2 / e)
    0.5514

  References:
    Sohn. Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective. NeurIPS 2016. https://papers.nips.cc/paper/6200
  """
  _pipeline.check_options(reduction=reduction)
  batch = _pipeline.prepare(embeddings, labels, where, axis_name=axis_name)
  s = jnp.matmul(batch.anchors, batch.candidates.T, precision=_HIGHEST)
  masks = batch.masks()
  lse, found = _pipeline.log_sum_exp(s, masks.negative)
  pairs = masks.positive & found[:, None]
  t = _pipeline.terms(jax.nn.softplus(lse[:, None] - s), pairs, axis=-1)
  return batch.finish(t, reduction)



