r"""Named loss definitions reproducing papers and other libraries.

The same name — "batch-hard triplet loss" — means different losses in
different places: with or without L2 normalisation, a squared or plain
distance, a hinge or soft margin, and a mean over anchors or over active
triplets. A preset pins all of that down:

=========================  ============================================================
``hermans``                batch-hard, euclidean, no normalisation, soft margin, mean over
                           valid anchors (Hermans et al. 2017, their default).
``facenet``                L2-normalised, squared euclidean, margin 0.2, semi-hard
                           "facenet" triplets, mean over them (Schroff et al. 2015).
``pml``                    pytorch-metric-learning ``BatchHardMiner`` +
                           ``TripletMarginLoss()``: L2-normalised euclidean, margin 0.05,
                           mean over non-zero triplets (``AvgNonZeroReducer``).
``tfa``                    ``tfa.losses.TripletHardLoss()``: euclidean, margin 1.0, mean
                           over anchors.
``tfa_semihard``           ``tfa.losses.TripletSemiHardLoss()``: euclidean, margin 1.0,
                           semi-hard "tfa", mean over positive pairs.
``sentence_transformers``  ``BatchHardTripletLoss``: euclidean, margin 5, mean over anchors.
``pml_contrastive``        pytorch-metric-learning ``ContrastiveLoss()``: L2-normalised
                           euclidean, [D - 0]_+ and [1 - D]_+, positive and negative
                           pairs each averaged over their non-zero terms, then added.
``pml_margin``             pytorch-metric-learning ``MarginLoss()``: L2-normalised
                           euclidean, beta 1.2, margin 0.2, summed over all triplets,
                           divided by the active pair terms.
``pml_npair``              pytorch-metric-learning ``NPairsLoss()``: Sohn's N-pair loss
                           on L2-normalised embeddings (cosine similarities).
                           ``l2_penalty=λ`` is on the raw rows, as PML's
                           ``embedding_regularizer=LpRegularizer(power=2)``,
                           ``embedding_reg_weight=λ``.
=========================  ============================================================

On PK batches (every anchor has a positive and a negative) each preset equals
its source. Elsewhere, presets follow this library's edge handling (anchors
without a positive or negative are left out; never NaN), not the source's.
A normalising preset normalises a memory bank (``ref_embeddings``) too, so
batch and bank rows are compared on the same sphere. Penalties on the
embeddings themselves (``pml_npair``'s ``l2_penalty``) see the raw rows: a
penalty on unit vectors would be a constant with no gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import jax

from metric_learning import distances
from metric_learning.losses import pairs
from metric_learning.losses import triplet


@dataclasses.dataclass(frozen=True)
class Preset:
  """A loss with pinned defaults. Call it as ``preset(embeddings, labels, **overrides)``."""
  name: str
  loss: Callable[..., jax.Array]
  defaults: dict[str, Any]
  normalize: bool
  description: str
  # For a normalising preset: ``raw_penalty(raw_embeddings, labels, kwargs)``
  # returns (a penalty on the raw rows or None, kwargs for the loss on the
  # normalised rows), so that a penalty on the embeddings is not computed on
  # unit vectors, where it would be a constant.
  raw_penalty: Callable[..., tuple[jax.Array | None, dict]] | None = None

  def __call__(self, embeddings: jax.Array, labels: jax.Array, **overrides) -> jax.Array:
    kwargs = {**self.defaults, **overrides}
    penalty = None
    if self.normalize:
      if self.raw_penalty is not None:
        penalty, kwargs = self.raw_penalty(embeddings, labels, kwargs)
      embeddings = distances.l2_normalize(embeddings)
      if kwargs.get("ref_embeddings") is not None:
        kwargs["ref_embeddings"] = distances.l2_normalize(kwargs["ref_embeddings"])
    loss = self.loss(embeddings, labels, **kwargs)
    if penalty is None:
      return loss
    return (loss + penalty.astype(loss.dtype)).astype(loss.dtype)


_PRESETS = {
    p.name: p for p in (
        Preset("hermans", triplet.batch_hard_triplet_loss,
               dict(metric="euclidean", soft=True, reduction="mean"), False,
               "Hermans et al. 2017: batch-hard, soft margin, euclidean."),
        Preset("facenet", triplet.semi_hard_triplet_loss,
               dict(metric="sqeuclidean", margin=0.2, definition="facenet",
                    reduction="mean"), True,
               "Schroff et al. 2015: semi-hard, squared L2 on the unit sphere."),
        Preset("pml", triplet.batch_hard_triplet_loss,
               dict(metric="euclidean", margin=0.05, reduction="mean_nonzero"), True,
               "pytorch-metric-learning BatchHardMiner + TripletMarginLoss."),
        Preset("tfa", triplet.batch_hard_triplet_loss,
               dict(metric="euclidean", margin=1.0, reduction="mean"), False,
               "tfa.losses.TripletHardLoss defaults."),
        Preset("tfa_semihard", triplet.semi_hard_triplet_loss,
               dict(metric="euclidean", margin=1.0, definition="tfa",
                    reduction="mean"), False,
               "tfa.losses.TripletSemiHardLoss defaults."),
        Preset("sentence_transformers", triplet.batch_hard_triplet_loss,
               dict(metric="euclidean", margin=5.0, reduction="mean"), False,
               "sentence-transformers BatchHardTripletLoss defaults."),
        Preset("pml_contrastive", pairs.contrastive_loss,
               dict(metric="euclidean", margin=1.0, pos_margin=0.0, squared=False,
                    reduce_separately=True, reduction="mean_nonzero"), True,
               "pytorch-metric-learning ContrastiveLoss defaults."),
        Preset("pml_margin", pairs.margin_loss,
               dict(metric="euclidean", beta=1.2, margin=0.2, weighting="triplets",
                    reduction="mean_nonzero"), True,
               "pytorch-metric-learning MarginLoss defaults (all triplets)."),
        Preset("pml_npair", pairs.npair_loss,
               dict(definition="sohn", reduction="mean"), True,
               "pytorch-metric-learning NPairsLoss defaults (Sohn 2016); "
               "l2_penalty is on the raw rows.",
               raw_penalty=pairs._npair_raw_l2_penalty),  # pylint: disable=protected-access
    )
}

NAMES = tuple(_PRESETS)


def get(name: str) -> Preset:
  r"""The loss callable of a named preset.

  Args:
    name: one of :data:`NAMES`.

  Returns:
    A :class:`Preset`: ``preset(embeddings, labels, **overrides) -> scalar``.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5], [4.0]]), jnp.array([0, 0, 1, 1])
    >>> round(float(ml.presets.get("tfa")(x, y)), 4)  # (0.5 + 1.5 + 3 + 0.5) / 4
    1.375
    >>> round(float(ml.presets.get("tfa")(x, y, margin=0.2)), 4)
    0.725
  """
  if name not in _PRESETS:
    raise ValueError(f"name must be one of {', '.join(map(repr, NAMES))}; "
                     f"got {name!r}.")
  return _PRESETS[name]


