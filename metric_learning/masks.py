r"""Label masks between anchors and candidates, padding-aware.

Notation (README.md, "Definitions"): for anchor :math:`i` and candidate :math:`j`,

* :math:`P(i)` — positives: same label, :math:`j \ne i`, both rows real;
* :math:`N(i)` — negatives: different label, both rows real;
* a *valid anchor* is a real row with :math:`|P(i)| \ge 1` and :math:`|N(i)| \ge 1`.

Labels may take any integer values. ``where`` marks real rows; padding rows
(``where=False``) are never anchors, positives or negatives.

The public functions cover the usual square case (candidates = the batch).
:class:`PairMasks` is the general form used by the losses, where candidates may
be the batch plus a memory bank, or the batch gathered over devices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metric_learning import _validation


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairMasks:
  """Anchor × candidate masks.

  Attributes:
    positive: ``[anchors, candidates]`` bool, :math:`j \\in P(i)`.
    negative: ``[anchors, candidates]`` bool, :math:`j \\in N(i)`.
    anchor_where: ``[anchors]`` bool, real anchor rows.
  """
  positive: jax.Array
  negative: jax.Array
  anchor_where: jax.Array

  @property
  def has_positive(self) -> jax.Array:
    return jnp.any(self.positive, axis=-1)

  @property
  def has_negative(self) -> jax.Array:
    return jnp.any(self.negative, axis=-1)

  @property
  def valid_anchor(self) -> jax.Array:
    return self.has_positive & self.has_negative


def pair_masks(labels: jax.Array, where: jax.Array,
               candidate_labels: jax.Array, candidate_where: jax.Array,
               self_index: jax.Array) -> PairMasks:
  """General masks; ``self_index[i]`` is anchor i's own candidate column (or -1)."""
  same = labels[:, None] == candidate_labels[None, :]
  real = where[:, None] & candidate_where[None, :]
  columns = jnp.arange(candidate_labels.shape[0])
  not_self = columns[None, :] != self_index[:, None]
  return PairMasks(positive=same & real & not_self, negative=~same & real,
                   anchor_where=where)


def square_masks(labels: jax.Array, where: jax.Array | None = None) -> PairMasks:
  """Validated masks for the batch against itself."""
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array [batch]; got shape {labels.shape}.")
  labels = _validation.int_vector(labels, labels.shape[0], "labels", "labels")
  where = _validation.bool_vector(where, labels.shape[0], "where", "labels")
  return pair_masks(labels, where, labels, where, jnp.arange(labels.shape[0]))


def positive_mask(labels: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  r"""``[batch, batch]`` bool: :math:`M_{ij} = [y_i = y_j] \wedge i \ne j`, real rows.

  Args:
    labels: ``[batch]`` integer labels (any values).
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    ``[batch, batch]`` bool array; the diagonal is never a positive.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.positive_mask(jnp.array([7, 7, 3, 7])).astype(int).tolist()
    [[0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]]
  """
  return square_masks(labels, where).positive


def negative_mask(labels: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  r"""``[batch, batch]`` bool: :math:`M_{ij} = [y_i \ne y_j]`, real rows only.

  Args:
    labels: ``[batch]`` integer labels (any values).
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    ``[batch, batch]`` bool array.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.negative_mask(jnp.array([7, 7, 3, 7]),
    ...                  where=jnp.array([True, True, True, False])).astype(int).tolist()
    [[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
  """
  return square_masks(labels, where).negative


def valid_anchor_mask(labels: jax.Array, *,
                      where: jax.Array | None = None) -> jax.Array:
  r"""``[batch]`` bool: real rows with at least one positive and one negative.

  Args:
    labels: ``[batch]`` integer labels (any values).
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    ``[batch]`` bool array.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.valid_anchor_mask(jnp.array([7, 7, 3, 5])).tolist()
    [True, True, False, False]
  """
  return square_masks(labels, where).valid_anchor


def triplet_mask(labels: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  r"""``[batch, batch, batch]`` bool: :math:`M_{ijk} = [j \in P(i)] \wedge [k \in N(i)]`.

  Dense, O(batch³) memory: meant for inspection and small batches. The losses
  never build it; they stream over anchors.

  Args:
    labels: ``[batch]`` integer labels (any values).
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    ``[batch, batch, batch]`` bool array.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> int(ml.triplet_mask(jnp.array([0, 0, 1, 1])).sum())  # 4 anchors x 1 pos x 2 neg
    8
  """
  masks = square_masks(labels, where)
  return masks.positive[:, :, None] & masks.negative[:, None, :]
