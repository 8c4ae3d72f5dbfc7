"""What the miners return: small pytree dataclasses with fixed-shape fields."""

from __future__ import annotations

import dataclasses

import jax


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
