r"""Contrastive / self-supervised losses on temperature-scaled cosine similarities.

NT-Xent (Chen et al. 2020), supervised contrastive (Khosla et al. 2020) and the
pairwise sigmoid loss (Zhai et al. 2023), with labels: a positive is a row with
the anchor's label (two augmented views of one image share a label), a negative
any row with another label. Notation as in :mod:`metric_learning.masks`; every
loss uses the cosine similarity
:math:`s_{ij} = \hat x_i^\top \hat x_j`, :math:`\hat x = x / \|x\|_2` (a zero
vector stays zero), computed with one ``HIGHEST``-precision matmul.

Like the other in-batch losses they take ``where`` (padding), ``axis_name``
(global batch under ``pmap`` / ``shard_map``), a memory bank (``ref_*``, rows
that are candidates but not anchors and receive no gradient) and the four
reductions of :mod:`metric_learning.reductions`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning import masks as masks_lib
from metric_learning import reductions
from metric_learning.losses import _pipeline

_HIGHEST = jax.lax.Precision.HIGHEST


def _scalar(value, name: str, dtype, *, positive: bool = False) -> jax.Array:
  """A scalar (Python number or 0-d array, possibly traced) in ``dtype``."""
  array = jnp.asarray(value)
  if array.ndim != 0:
    raise ValueError(f"{name} must be a scalar; got shape {array.shape}.")
  if not (jnp.issubdtype(array.dtype, jnp.floating)
          or jnp.issubdtype(array.dtype, jnp.integer)):
    raise TypeError(f"{name} must be a real number; got dtype {array.dtype}.")
  if positive:
    _validation.positive(value, name)
  return array.astype(dtype)


def _similarities(anchors: jax.Array, normalized_candidates: jax.Array) -> jax.Array:
  """``[A, C]`` cosine similarities of anchors and (L2-normalised) candidates."""
  return jnp.matmul(distances_lib.l2_normalize(anchors), normalized_candidates.T,
                    precision=_HIGHEST)


def ntxent_loss(embeddings: jax.Array, labels: jax.Array, *, temperature=0.1,
                where: jax.Array | None = None, reduction: str = "mean",
                block_size: int | None = None, ref_embeddings: jax.Array | None = None,
                ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                axis_name: str | None = None) -> jax.Array:
  r"""NT-Xent / InfoNCE (Chen et al. 2020) with labels: one term per positive pair.

  With :math:`z_{ij} = s_{ij} / \tau` (cosine similarity over temperature), each
  positive pair :math:`j \in P(i)` is a softmax classification of :math:`j`
  against the anchor's negatives:

  .. math::
    \ell_{ij} = -\log \frac{e^{z_{ij}}}{e^{z_{ij}} + \sum_{k \in N(i)} e^{z_{ik}}}
              = \mathrm{softplus}\Big(\log \sum_{k \in N(i)} e^{z_{ik}} - z_{ij}\Big)

  The other positives of :math:`i` are not in the denominator (contrast
  :func:`supcon_loss`); with two views per label (SimCLR) both definitions
  coincide. Pairs whose anchor has no negative contribute nothing.

  Reductions: ``"mean"`` averages over positive pairs — the loss of SimCLR, of
  ``optax.losses.ntxent`` and of pytorch-metric-learning's ``NTXentLoss``
  (``MeanReducer`` over positive pairs); on a batch without a positive pair it
  is 0 where optax returns NaN. ``"none"`` gives each anchor's sum over its
  positive pairs, ``"sum"`` their total, ``"mean_nonzero"`` the mean over the
  pairs with :math:`\ell_{ij} > 0`.

  Args:
    embeddings: ``[batch, dim]`` floating array (L2-normalised internally).
    labels: ``[batch]`` integer labels; rows with one label are positives.
    temperature: :math:`\tau > 0`, a float or a scalar array (learnable). The
      default 0.1 is the best value in Chen et al. (2020), Table 5; optax and
      pytorch-metric-learning default to 0.07.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), ``[refs, dim]``, ``[refs]``, ``[refs]``: positives and negatives but
      never anchors; no gradient flows into them.
    axis_name: inside ``pmap`` / ``shard_map``, the mapped axis over which the
      candidates (and the reduction) are global.
    block_size: anchor rows per block. None (the default) is automatic: dense
      ``[batch, candidates]`` logits up to 512 rows, blocks of rows above
      (O(block · candidates) memory; see ``_pipeline.per_anchor``: 64 rows
      differentiated as they are computed for a scalar reduction, else 256
      recomputed in the backward pass). An int ``>= batch`` forces the dense
      logits. Same values and gradients.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> from metric_learning.losses import contrastive
    >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> round(float(contrastive.ntxent_loss(x, y, temperature=1.0)), 4)  # log(1 + 2 / e)
    0.5514

  References:
    Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive
    Learning of Visual Representations. ICML 2020.
    https://arxiv.org/abs/2002.05709

    van den Oord, Li, Vinyals. Representation Learning with Contrastive
    Predictive Coding. 2018. https://arxiv.org/abs/1807.03748
  """
  _pipeline.check_options(reduction=reduction)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  temperature = _scalar(temperature, "temperature", batch.anchors.dtype, positive=True)
  candidates = distances_lib.l2_normalize(batch.candidates)

  def rows(anchors, masks):
    z = _similarities(anchors, candidates) / temperature
    lse, found = _pipeline.log_sum_exp(z, masks.negative)
    pairs = masks.positive & found[:, None]
    return _pipeline.terms(jax.nn.softplus(lse[:, None] - z), pairs, axis=-1)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction)


def supcon_loss(embeddings: jax.Array, labels: jax.Array, *, temperature=0.1,
                where: jax.Array | None = None, reduction: str = "mean",
                block_size: int | None = None, ref_embeddings: jax.Array | None = None,
                ref_labels: jax.Array | None = None, ref_where: jax.Array | None = None,
                axis_name: str | None = None) -> jax.Array:
  r"""Supervised contrastive loss (Khosla et al. 2020), the :math:`L^{sup}_{out}` form.

  With :math:`z_{ij} = s_{ij} / \tau` and :math:`A(i) = P(i) \cup N(i)` (every
  real candidate but the anchor itself),

  .. math::
    \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
             \log \frac{e^{z_{ip}}}{\sum_{a \in A(i)} e^{z_{ia}}}
           = \log \sum_{a \in A(i)} e^{z_{ia}} - \frac{1}{|P(i)|} \sum_{p \in P(i)} z_{ip}

  for every valid anchor (at least one positive and one negative); other
  anchors contribute nothing.

  Reductions: ``"mean"`` averages over valid anchors, as the paper does.
  pytorch-metric-learning's ``SupConLoss`` uses ``AvgNonZeroReducer``, which is
  ``"mean_nonzero"`` here; since :math:`\ell_i > \log |P(i)| \ge 0` at a valid
  anchor the two agree unless a term underflows to 0. ``"none"`` gives
  :math:`\ell_i` per anchor (0 at invalid anchors).

  Args:
    embeddings: ``[batch, dim]`` floating array (L2-normalised internally).
    labels: ``[batch]`` integer labels.
    temperature: :math:`\tau > 0`, a float or a scalar array (learnable); the
      default 0.1 is the paper's and pytorch-metric-learning's.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), ``[refs, dim]``, ``[refs]``, ``[refs]``: in :math:`P(i)` and
      :math:`A(i)` but never anchors; no gradient flows into them.
    axis_name: inside ``pmap`` / ``shard_map``, the mapped axis over which the
      candidates (and the reduction) are global.
    block_size: anchor rows per block. None (the default) is automatic: dense
      ``[batch, candidates]`` logits up to 512 rows, blocks of rows above
      (O(block · candidates) memory; see ``_pipeline.per_anchor``: 64 rows
      differentiated as they are computed for a scalar reduction, else 256
      recomputed in the backward pass). An int ``>= batch`` forces the dense
      logits. Same values and gradients.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses import contrastive
    >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> round(float(contrastive.supcon_loss(x, y, temperature=1.0)), 4)  # log(1 + 2 / e)
    0.5514

  References:
    Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan.
    Supervised Contrastive Learning. NeurIPS 2020.
    https://arxiv.org/abs/2004.11362
  """
  _pipeline.check_options(reduction=reduction)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  temperature = _scalar(temperature, "temperature", batch.anchors.dtype, positive=True)
  candidates = distances_lib.l2_normalize(batch.candidates)

  def rows(anchors, masks):
    z = _similarities(anchors, candidates) / temperature
    lse, _ = _pipeline.log_sum_exp(z, masks.positive | masks.negative)
    n_pos = jnp.sum(masks.positive, axis=-1)
    mean_pos = reductions.safe_divide(jnp.sum(jnp.where(masks.positive, z, 0), axis=-1),
                                      n_pos.astype(z.dtype))
    return _pipeline.terms(lse - mean_pos, masks.valid_anchor)

  return batch.finish(_pipeline.per_anchor(batch, block_size, rows, reduction=reduction),
                      reduction)


def _sigmoid_block(anchors, labels, where, self_index, candidates, candidate_labels,
                   candidate_where, first, temperature, bias):
  """Per-anchor (sum of terms, number of terms) over one block of candidates.

  ``first`` is the block's first candidate column. Returns 0-filled sums, so that
  blocks simply add up.
  """
  masks = masks_lib.pair_masks(labels, where, candidate_labels, candidate_where,
                               self_index - first)
  z = temperature * jnp.matmul(anchors, candidates.T, precision=_HIGHEST) + bias
  # -log sigmoid(+z) for positives, -log sigmoid(-z) for negatives.
  value = jax.nn.softplus(jnp.where(masks.positive, -z, z))
  used = masks.positive | masks.negative
  value = jnp.where(used, value, 0)
  return jnp.sum(value, -1), jnp.sum(used & (value > 0), -1).astype(value.dtype)


def sigmoid_loss(embeddings: jax.Array, labels: jax.Array, *, temperature, bias,
                 where: jax.Array | None = None, reduction: str = "mean",
                 block_size: int | None = None,
                 ref_embeddings: jax.Array | None = None,
                 ref_labels: jax.Array | None = None,
                 ref_where: jax.Array | None = None,
                 axis_name: str | None = None) -> jax.Array:
  r"""Pairwise sigmoid loss (SigLIP, Zhai et al. 2023) over labelled in-batch pairs.

  Every anchor/candidate pair is an independent binary classification: with
  :math:`y_{ij} = +1` for :math:`j \in P(i)` and :math:`-1` for :math:`j \in N(i)`,
  logits :math:`z_{ij} = t\, s_{ij} + b` on L2-normalised embeddings, and
  :math:`-\log\sigma(x) = \mathrm{softplus}(-x)`,

  .. math::
    \ell_i = \sum_{j \in P(i) \cup N(i)} \mathrm{softplus}(-y_{ij} z_{ij}), \qquad
    L = \frac{1}{|B|} \sum_i \ell_i

  The self-pair :math:`(i, i)` is excluded, as from :math:`P(i)`: here one set
  of embeddings is compared with itself, so the paper's diagonal (image
  :math:`i`, text :math:`i`) corresponds to two views under one label, not to a
  row with itself. ``"mean"`` is the paper's normalisation — the sum over all
  pairs divided by the number :math:`|B|` of real (non-padding) anchors, global
  under ``axis_name``; ``"sum"`` is :math:`\sum_i \ell_i`; ``"none"`` gives
  :math:`\ell_i`; ``"mean_nonzero"`` the mean over pairs with a non-zero term
  (every pair unless its term underflows).

  ``temperature`` (:math:`t`, a multiplier; the paper learns
  :math:`t = e^{t'}` from :math:`t = 10`) and ``bias`` (:math:`b`, initialised
  at :math:`-10` in the paper) are arrays so they can be learned: their
  gradients are returned like the embeddings'. With ``block_size`` the
  candidates are processed in blocks of that many columns under a rematerialised
  ``lax.scan``: neither the forward nor the backward pass holds more than
  ``[anchors, block_size]`` logits at once, and values and gradients equal the
  dense path's up to summation order.

  Args:
    embeddings: ``[batch, dim]`` floating array (L2-normalised internally).
    labels: ``[batch]`` integer labels.
    temperature: scalar array (or float), the logit scale :math:`t`.
    bias: scalar array (or float), the logit bias :math:`b`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    block_size: candidate columns per block. None (the default) is automatic:
      dense ``[anchors, candidates]`` logits up to 512 candidates, blocks of 256
      columns above. An int ``>= candidates`` forces the dense logits.
    ref_embeddings, ref_labels, ref_where: optional extra candidates (memory
      bank), ``[refs, dim]``, ``[refs]``, ``[refs]``: pairs with every anchor
      but never anchors themselves; no gradient flows into them.
    axis_name: inside ``pmap`` / ``shard_map``, the mapped axis over which the
      candidates (and the reduction) are global.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``, in the embeddings' dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses import contrastive
    >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> t, b = jnp.array(10.0), jnp.array(-5.0)
    >>> # per anchor: softplus(-(10 - 5)) + 2 softplus(0 - 5)
    >>> [round(v, 4) for v in contrastive.sigmoid_loss(
    ...     x, y, temperature=t, bias=b, reduction="none").tolist()]
    [0.0201, 0.0201, 0.0201, 0.0201]

  References:
    Zhai, Mustafa, Kolesnikov, Beyer. Sigmoid Loss for Language Image
    Pre-Training. ICCV 2023. https://arxiv.org/abs/2303.15343
  """
  _pipeline.check_options(reduction=reduction)
  _validation.block_size(block_size)
  batch = _pipeline.prepare(embeddings, labels, where, ref_embeddings, ref_labels,
                            ref_where, axis_name)
  dtype = batch.anchors.dtype
  t = _scalar(temperature, "temperature", dtype)
  b = _scalar(bias, "bias", dtype)
  anchors = distances_lib.l2_normalize(batch.anchors)
  candidates = distances_lib.l2_normalize(batch.candidates)
  fixed = (anchors, batch.labels, batch.where, batch.self_index)
  num = candidates.shape[0]
  block_size = _pipeline.block_rows(block_size, num)   # here: candidate columns
  if block_size is None:
    values, nonzero = _sigmoid_block(*fixed, candidates, batch.candidate_labels,
                                     batch.candidate_where, 0, t, b)
  else:
    blocks = -(-num // block_size)
    pad = blocks * block_size - num
    # Padding columns are not real candidates: they form no pair.
    cols = (jnp.pad(candidates, ((0, pad), (0, 0))),
            jnp.pad(batch.candidate_labels, (0, pad)),
            jnp.pad(batch.candidate_where, (0, pad)))
    cols = tuple(c.reshape((blocks, block_size) + c.shape[1:]) for c in cols)
    firsts = jnp.arange(blocks) * block_size
    # Rematerialised: the backward pass recomputes each block's logits instead
    # of storing all of them, so memory stays O(anchors * block_size).
    block = jax.checkpoint(functools.partial(_sigmoid_block, *fixed))
    head = jax.tree.map(lambda c: c[0], cols + (firsts,))
    rest = jax.tree.map(lambda c: c[1:], cols + (firsts,))

    def step(carry, columns):
      v, n = block(*columns, t, b)
      return (carry[0] + v, carry[1] + n), None

    # The first block starts the sums, so that they have the type (including,
    # under shard_map, the device variance) of every later block's.
    (values, nonzero), _ = jax.lax.scan(step, block(*head, t, b), rest)
  terms = reductions.Terms(values, batch.where.astype(dtype), nonzero)
  return batch.finish(terms, reduction)
