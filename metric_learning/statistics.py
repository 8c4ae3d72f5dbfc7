"""Mining statistics for training logs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning import mining
from metric_learning import reductions


def triplet_statistics(embeddings: jax.Array, labels: jax.Array, *, margin=0.2,
                       metric: str = "euclidean",
                       where: jax.Array | None = None) -> dict[str, jax.Array]:
  r"""What mining sees in a batch, as float32 scalars for a training log.

  :func:`metric_learning.mining.statistics` on the batch's distances (no
  gradient), plus ``embedding_norm_mean`` over real rows. Costs one
  ``[batch, batch]`` distance matrix and a streamed pass over triplets.

  Args:
    embeddings: ``[batch, dim]`` floating array.
    labels: ``[batch]`` integer labels.
    margin: the margin that defines an active anchor / triplet.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    where: optional ``[batch]`` bool; False marks padding rows.

  Returns:
    A dict of scalars (see :func:`metric_learning.mining.statistics`).

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> x, y = jnp.array([[0.0], [1.0], [1.5], [4.0]]), jnp.array([0, 0, 1, 1])
    >>> s = ml.triplet_statistics(x, y)
    >>> sorted(s)[:3], float(s["embedding_norm_mean"])
    (['active_anchor_fraction', 'active_triplet_fraction', 'embedding_norm_mean'], 1.625)
  """
  x = jax.lax.stop_gradient(_validation.float_matrix(embeddings, "embeddings"))
  where = _validation.bool_vector(where, x.shape[0], "where")
  stats = mining.statistics(distances_lib.pairwise_distances(x, metric=metric),
                            labels, margin=margin, where=where)
  x32 = x.astype(jnp.float32)
  norms = jnp.sqrt(jnp.sum(x32 * x32, axis=-1))
  stats["embedding_norm_mean"] = reductions.masked_mean(norms, where)
  return stats
