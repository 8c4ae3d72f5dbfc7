r"""Safe masked reductions shared by every in-batch loss.

A loss produces, per anchor :math:`i`, the sum :math:`v_i` of its terms, the
number :math:`c_i` of terms it is defined over (1 for a valid anchor of
batch-hard; its triplets for batch-all; its positive pairs for pair losses) and
the number :math:`n_i` of terms that are non-zero. Then

* ``"none"``: :math:`v` itself (``[anchors]``, 0 at invalid anchors);
* ``"sum"``: :math:`\sum_i v_i` (= the sum of ``"none"``);
* ``"mean"``: :math:`\sum_i v_i / \sum_i c_i` — the mean over the loss's terms
  (valid anchors for per-anchor losses);
* ``"mean_nonzero"``: :math:`\sum_i v_i / \sum_i n_i` — the mean over non-zero
  terms (pytorch-metric-learning's ``AvgNonZeroReducer``, Hermans' BA≠0).

Every reduction is 0, never NaN, when nothing is valid or active.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metric_learning import _validation

REDUCTIONS = ("mean", "sum", "none", "mean_nonzero")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Terms:
  """Per-anchor loss sums and term counts, all ``[anchors]``."""
  values: jax.Array
  counts: jax.Array
  nonzero: jax.Array


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  r"""``numerator / denominator`` where ``denominator > 0``, else 0 (finite gradients).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> ml.reductions.safe_divide(jnp.array([1.0, 1.0]), jnp.array([4.0, 0.0])).tolist()
    [0.25, 0.0]
  """
  ok = denominator > 0
  return jnp.where(ok, numerator / jnp.where(ok, denominator, 1), 0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Mean of ``values`` over ``mask``; 0 when the mask is empty.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> float(ml.reductions.masked_mean(jnp.array([1.0, 3.0, 100.0]),
    ...                                 jnp.array([True, True, False])))
    2.0
  """
  mask = jnp.broadcast_to(mask, values.shape)
  total = jnp.sum(jnp.where(mask, values, 0))
  return safe_divide(total, jnp.sum(mask).astype(total.dtype))


def reduce_terms(terms: Terms, reduction: str) -> jax.Array:
  r"""Applies one of :data:`REDUCTIONS` to per-anchor :class:`Terms`.

  Args:
    terms: per-anchor ``values``, ``counts`` and ``nonzero``, each ``[anchors]``.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.

  Returns:
    A scalar, or ``[anchors]`` for ``"none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> t = ml.reductions.Terms(values=jnp.array([0.5, 0.0, 1.0, 0.0]),
    ...                         counts=jnp.array([1.0, 1.0, 1.0, 0.0]),
    ...                         nonzero=jnp.array([1.0, 0.0, 1.0, 0.0]))
    >>> [float(ml.reductions.reduce_terms(t, r)) for r in ("mean", "sum", "mean_nonzero")]
    [0.5, 1.5, 0.75]
  """
  _validation.choice(reduction, "reduction", REDUCTIONS)
  if reduction == "none":
    return terms.values
  total = jnp.sum(terms.values)
  if reduction == "sum":
    return total
  count = terms.counts if reduction == "mean" else terms.nonzero
  return safe_divide(total, jnp.sum(count).astype(total.dtype))
