r"""Pair and triplet miners that return fixed-shape masks.

The per-anchor miners (:mod:`metric_learning.mining.anchors`) pick one candidate per anchor;
these select *sets*: every positive pair, negative pair or triplet that passes
a test, as boolean masks over ``[anchors, batch]`` pairs or
``[anchors, batch, batch]`` triplets. The shapes never depend on the data, so
the miners jit without recompiling; ``jnp.argwhere(mask)`` (outside ``jit``)
lists the selected indices when a list is wanted.

They reproduce pytorch-metric-learning's ``PairMarginMiner``,
``TripletMarginMiner`` and ``MultiSimilarityMiner``. Padding rows
(``where=False``) are never selected. With ``axis_name`` (inside ``pmap`` /
``shard_map``) the input is ``[local anchors, global batch]`` and columns refer
to the global batch, as for every miner of :mod:`metric_learning.mining`.

Distances (smaller = closer) and similarities (larger = closer) are not
interchangeable: :func:`pair_margin` and :func:`triplet_margin` take
distances — to mine on a similarity such as ``"dot"``, pass its negation (and
negated margins for :func:`pair_margin`) — while :func:`multi_similarity_pairs`
takes similarities.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metric_learning import _validation
from metric_learning.mining import blocks

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MinedPairs:
  """Selected pairs; both fields are ``[anchors, batch]`` bool masks.

  ``positive[i, j]``: the positive pair (i, j) is selected; ``negative[i, k]``
  likewise for negative pairs.
  """
  positive: jax.Array
  negative: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MinedTriplets:
  """Selected triplets: ``mask[i, j, k]`` for anchor i, positive j, negative k."""
  mask: jax.Array

  @property
  def num_triplets(self) -> jax.Array:
    """``[anchors]`` int: how many triplets each anchor has."""
    return jnp.sum(self.mask, axis=(1, 2))


def pair_margin(distances: jax.Array, labels: jax.Array, *, pos_margin=0.2,
                neg_margin=0.8, where: jax.Array | None = None,
                axis_name: str | None = None) -> MinedPairs:
  r"""Pairs that violate a margin (pytorch-metric-learning's ``PairMarginMiner``).

  .. math::
    \text{positive: } j \in P(i),\ D_{ij} > m_+ \qquad
    \text{negative: } k \in N(i),\ D_{ik} < m_-

  Defaults :math:`m_+ = 0.2, m_- = 0.8` are pytorch-metric-learning's.

  Args:
    distances: ``[batch, batch]`` distances (smaller = closer).
    labels: ``[batch]`` integer labels.
    pos_margin: :math:`m_+`.
    neg_margin: :math:`m_-`.
    where: optional ``[batch]`` bool; False marks padding rows.
    axis_name: inside ``pmap`` / ``shard_map``, mine over the global batch.

  Returns:
    :class:`MinedPairs` with ``[batch, batch]`` masks.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [0.5], [1.0], [3.0]])
    >>> pairs = ml.mining.pair_margin(ml.pairwise_distances(x), jnp.array([0, 0, 1, 1]),
    ...                                 pos_margin=0.4, neg_margin=1.0)
    >>> pairs.positive.astype(int).tolist()
    [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    >>> pairs.negative.astype(int).tolist()
    [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]

  References:
    Musgrave, Belongie, Lim. PyTorch Metric Learning. 2020.
    https://arxiv.org/abs/2008.09164
  """
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  return MinedPairs(positive=masks.positive & (distances > pos_margin),
                    negative=masks.negative & (distances < neg_margin))


def triplet_margin(distances: jax.Array, labels: jax.Array, *, margin=0.2,
                   type: str = "all", where: jax.Array | None = None,  # pylint: disable=redefined-builtin
                   axis_name: str | None = None) -> MinedTriplets:
  r"""Triplets by their margin (pytorch-metric-learning's ``TripletMarginMiner``).

  With :math:`g_{ijk} = D_{ik} - D_{ij}` for :math:`j \in P(i), k \in N(i)`:

  * ``"all"``: :math:`g \le m` (the triplet violates the margin);
  * ``"hard"``: :math:`g \le 0` (the negative is at least as close as the positive);
  * ``"semihard"``: :math:`0 < g \le m`;
  * ``"easy"``: :math:`g > m` (the triplets ``"all"`` leaves out).

  Defaults :math:`m = 0.2`, ``"all"`` are pytorch-metric-learning's.

  Args:
    distances: ``[batch, batch]`` distances (smaller = closer).
    labels: ``[batch]`` integer labels.
    margin: :math:`m`.
    type: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
    where: optional ``[batch]`` bool; False marks padding rows.
    axis_name: inside ``pmap`` / ``shard_map``, mine over the global batch.

  Returns:
    :class:`MinedTriplets` with a ``[batch, batch, batch]`` mask (dense:
    meant for moderate batches).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
    >>> d, y = ml.pairwise_distances(x), jnp.array([0, 0, 1, 1])
    >>> ml.mining.triplet_margin(d, y, margin=0.2).num_triplets.tolist()
    [0, 1, 2, 0]
    >>> ml.mining.triplet_margin(d, y, margin=0.2, type="easy").num_triplets.tolist()
    [2, 1, 0, 2]

  References:
    Musgrave, Belongie, Lim. PyTorch Metric Learning. 2020.
    https://arxiv.org/abs/2008.09164
  """
  _validation.choice(type, "type", TRIPLET_TYPES)
  distances, masks = blocks.square_batch(distances, labels, where, axis_name)
  gap = distances[:, None, :] - distances[:, :, None]             # [i, j, k]: D_ik - D_ij
  exists = masks.positive[:, :, None] & masks.negative[:, None, :]
  if type == "easy":
    keep = gap > margin
  else:
    keep = gap <= margin
    if type == "hard":
      keep &= gap <= 0
    elif type == "semihard":
      keep &= gap > 0
  return MinedTriplets(mask=exists & keep)


def multi_similarity_pairs(similarities: jax.Array, labels: jax.Array, *, epsilon=0.1,
                           where: jax.Array | None = None,
                           axis_name: str | None = None) -> MinedPairs:
  r"""Multi-similarity pair mining (Wang et al. 2019).

  On similarities :math:`S` (larger = closer), anchor :math:`i` keeps

  .. math::
    \tilde P_i = \{j \in P(i) : S_{ij} - \epsilon < \max_{k \in N(i)} S_{ik}\},
    \qquad
    \tilde N_i = \{k \in N(i) : S_{ik} + \epsilon > \min_{j \in P(i)} S_{ij}\}

  An anchor without negatives keeps no positive and one without positives
  keeps no negative. Default :math:`\epsilon = 0.1` is the paper's and
  pytorch-metric-learning's (``MultiSimilarityMiner``, which this matches).

  Args:
    similarities: ``[batch, batch]`` similarities, e.g. cosine
      (``1 - pairwise_distances(x, metric="cosine")``) or
      ``pairwise_distances(x, metric="dot")``.
    labels: ``[batch]`` integer labels.
    epsilon: :math:`\epsilon`.
    where: optional ``[batch]`` bool; False marks padding rows.
    axis_name: inside ``pmap`` / ``shard_map``, mine over the global batch.

  Returns:
    :class:`MinedPairs` with ``[batch, batch]`` masks.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> s = ml.pairwise_distances(x, metric="dot")
    >>> pairs = ml.mining.multi_similarity_pairs(s, jnp.array([0, 0, 1, 1]))
    >>> pairs.positive.astype(int).tolist()
    [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    >>> pairs.negative.astype(int).tolist()
    [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]

  References:
    Wang, Han, Huang, Dong, Scott. Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning. CVPR 2019.
    https://arxiv.org/abs/1904.06627
  """
  _validation.nonnegative(epsilon, "epsilon")
  similarities, masks = blocks.square_batch(similarities, labels, where, axis_name)
  return multi_similarity_selection(similarities, masks.positive, masks.negative,
                                    epsilon=epsilon)


def multi_similarity_selection(similarities: jax.Array, positive: jax.Array,
                               negative: jax.Array, *, epsilon=0.1) -> MinedPairs:
  r"""The multi-similarity mining rule on ``[anchors, candidates]`` blocks.

  The rule of :func:`multi_similarity_pairs` without its input checks, for any
  rows (a block of anchors, a memory bank's columns): ``positive`` and
  ``negative`` are the candidate masks of each row. A row without negatives
  keeps no positives, and a row without positives keeps no negatives.
  :func:`metric_learning.multi_similarity_loss` mines with it.
  """
  _, min_pos, has_pos = blocks.masked_argmin(similarities, positive)
  _, max_neg, has_neg = blocks.masked_argmax(similarities, negative)
  keep_pos = positive & has_neg[:, None] & (similarities - epsilon < max_neg[:, None])
  keep_neg = negative & has_pos[:, None] & (similarities + epsilon > min_pos[:, None])
  return MinedPairs(positive=keep_pos, negative=keep_neg)
