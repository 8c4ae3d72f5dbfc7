"""k-nearest-neighbour classification accuracy (majority vote).

Each query takes the labels of its ``k`` nearest gallery samples (ties in
distance broken by gallery index) and predicts the most frequent one; among
equally frequent labels, the one whose first occurrence is nearest wins. When
the query split is the gallery split, every sample is classified by the others
(leave-one-out).

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> x = np.array([[0.0], [0.1], [0.3], [5.0], [5.1]], np.float32)
  >>> data = Dataset(x, np.array([0, 0, 1, 1, 1], np.int32))
  >>> ev = evaluators.create("knn", query="test", gallery="test", k=(1, 3))
  >>> ev.run({"test": x}, {"test": data})
  {'accuracy_at_1': 0.8, 'accuracy_at_3': 0.4, 'num_queries': 5}
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _kernels
from metric_learning.evaluators import base


@functools.partial(jax.jit, static_argnames=("k", "metric", "exclude_self"))
def _top_k_block(queries, offset, gallery, *, k, metric, exclude_self):
  # The distance form of every metric (for "dot", -x.y): smaller = closer.
  d = _kernels.pairwise(queries, gallery, metric)
  if exclude_self:
    rows = offset + jnp.arange(queries.shape[0])
    d = jnp.where(rows[:, None] == jnp.arange(gallery.shape[0])[None, :], jnp.inf, d)
  # top_k of -d: equal distances keep the lower gallery index first.
  return jax.lax.top_k(-d, k)[1]


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray, *, k: int,
                       metric: str = "euclidean", exclude_self: bool = False,
                       chunk_size: int = 1024) -> np.ndarray:
  """Indices of the ``k`` nearest gallery rows of each query, nearest first.

  Args:
    queries: ``[q, dim]`` embeddings.
    gallery: ``[g, dim]`` embeddings.
    k: neighbours per query, ``1 <= k <= g`` (``g - 1`` with ``exclude_self``).
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    exclude_self: queries are the gallery; query ``i`` never returns row ``i``.
    chunk_size: queries per block (memory O(chunk_size · g)); every block has
      this size (the last one padded), so one compile serves them all.

  Returns:
    ``[q, k]`` int gallery indices; equal distances are ordered by index.

  Example:
    >>> import numpy as np
    >>> from metric_learning.evaluators import knn
    >>> x = np.array([[0.0], [1.0], [3.0]], np.float32)
    >>> knn.nearest_neighbours(x, x, k=2, exclude_self=True).tolist()
    [[1, 2], [0, 2], [1, 0]]
  """
  q = np.asarray(queries, np.float32)
  g = np.asarray(gallery, np.float32)
  available = g.shape[0] - int(exclude_self)
  if not 1 <= k <= available:
    raise ValueError(f"k must be in [1, {available}] for a gallery of {g.shape[0]} rows"
                     f"{' (leave-one-out)' if exclude_self else ''}; got {k}.")
  size = min(chunk_size, q.shape[0])
  out = []
  for start in range(0, q.shape[0], size):
    block = q[start:start + size]
    pad = size - block.shape[0]
    block = np.pad(block, ((0, pad), (0, 0)))
    idx = _top_k_block(block, start, g, k=k, metric=metric, exclude_self=exclude_self)
    out.append(np.asarray(idx)[:size - pad])
  return np.concatenate(out)


def majority_vote(neighbour_labels: np.ndarray) -> np.ndarray:
  """The most frequent label of each row; ties go to the one occurring first.

  Args:
    neighbour_labels: ``[q, k]`` labels of the neighbours, nearest first.

  Returns:
    ``[q]`` predicted labels.

  Example:
    >>> import numpy as np
    >>> from metric_learning.evaluators import knn
    >>> knn.majority_vote(np.array([[3, 1, 1], [2, 5, 5], [4, 6, 4], [7, 8, 9]])).tolist()
    [1, 5, 4, 7]
  """
  y = np.asarray(neighbour_labels)
  votes = np.sum(y[:, :, None] == y[:, None, :], axis=-1)     # [q, k]: count of y[:, j]
  # argmax returns the first maximum: the nearest of the most frequent labels.
  return np.take_along_axis(y, np.argmax(votes, axis=-1)[:, None], axis=-1)[:, 0]


class KnnEvaluator(base.Evaluator):
  """k-NN classification accuracy of ``query`` against the labelled ``gallery``.

  Result keys: ``accuracy_at_{k}`` for each k and ``num_queries``.
  """

  name = "knn"

  def __init__(self, *, query: str, gallery: str, k=(1, 5), metric: str = "euclidean"):
    """Builds the evaluator.

    Args:
      query: split whose samples are classified.
      gallery: labelled split they are compared with (e.g. ``"train"``); the same
        as ``query`` means leave-one-out.
      k: an int or a sequence of ints, the neighbourhood sizes.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    """
    self.query = base.split_name(self.name, "query", query)
    self.gallery = base.split_name(self.name, "gallery", gallery)
    self.k = base.positive_ints(self.name, "k", k)
    self.metric = base.check_metric(self.name, metric)
    self.splits = tuple(dict.fromkeys((self.query, self.gallery)))

  def evaluate(self, inputs):
    qx, qd = inputs[self.query]
    gx, gd = inputs[self.gallery]
    loo = self.query == self.gallery
    try:
      idx = nearest_neighbours(qx, gx, k=max(self.k), metric=self.metric, exclude_self=loo)
    except ValueError as e:
      raise ValueError(f"{self.name}: {e}") from None
    neighbour_labels = np.asarray(gd.labels)[idx]
    truth = np.asarray(qd.labels)
    out = {f"accuracy_at_{k}": float(np.mean(majority_vote(neighbour_labels[:, :k]) == truth))
           for k in self.k}
    out["num_queries"] = int(len(truth))
    return out
