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
  >>> ev = evaluators.create("knn", query="test", gallery="test", ks=(1, 3))
  >>> ev.run({"test": x}, {"test": data})
  {'accuracy_at_1': 0.8, 'accuracy_at_3': 0.4, 'num_queries': 5}
"""

from __future__ import annotations

import numpy as np

from metric_learning import index as index_lib
from metric_learning.evaluators import base


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray, *, k: int,
                       metric: str = "euclidean", exclude_self: bool = False,
                       chunk_size: int = 1024) -> np.ndarray:
  """Indices of the ``k`` nearest gallery rows of each query, nearest first.

  The exact search of :class:`metric_learning.index.EmbeddingIndex` (one k-NN
  for the index, the evaluators and the tools).

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
  g = np.asarray(gallery, np.float32)
  index = index_lib.EmbeddingIndex.create(g, np.zeros(len(g), np.int32), metric=metric)
  return index.search(queries, k=k, exclude_self=exclude_self, chunk_size=chunk_size)[0]


# The vote of the k-NN classifier: the index's (one rule for both).
majority_vote = index_lib.majority_vote


class KnnEvaluator(base.Evaluator):
  """k-NN classification accuracy of ``query`` against the labelled ``gallery``.

  Result keys: ``accuracy_at_{k}`` for each k and ``num_queries``.
  """

  name = "knn"

  def __init__(self, *, query: str, gallery: str, ks=(1, 5), metric: str = "euclidean"):
    """Builds the evaluator.

    Args:
      query: split whose samples are classified.
      gallery: labelled split they are compared with (e.g. ``"train"``); the same
        as ``query`` means leave-one-out.
      ks: the neighbourhood sizes k, an int or a sequence of ints.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    """
    self.query = base.split_name(self.name, "query", query)
    self.gallery = base.split_name(self.name, "gallery", gallery)
    self.ks = base.positive_ints(self.name, "ks", ks)
    self.metric = base.check_metric(self.name, metric)
    self.splits = tuple(dict.fromkeys((self.query, self.gallery)))

  def evaluate(self, inputs):
    qx, qd = inputs[self.query]
    gx, gd = inputs[self.gallery]
    loo = self.query == self.gallery
    try:
      idx = nearest_neighbours(qx, gx, k=max(self.ks), metric=self.metric, exclude_self=loo)
    except ValueError as e:
      raise ValueError(f"{self.name}: {e}") from None
    neighbour_labels = np.asarray(gd.labels)[idx]
    truth = np.asarray(qd.labels)
    out = {f"accuracy_at_{k}": float(np.mean(majority_vote(neighbour_labels[:, :k]) == truth))
           for k in self.ks}
    out["num_queries"] = int(len(truth))
    return out
