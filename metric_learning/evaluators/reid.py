"""Person / vehicle re-identification: CMC rank-k, mAP and mINP (Market-1501 protocol).

Wraps :func:`metric_learning.metrics.reid_metrics`: for each query, gallery
samples of the same identity seen by the same camera, and junk samples
(identity -1), are removed from its ranking. Both splits need ``cameras``.
``rerank=True`` ranks by the k-reciprocal re-ranked distance (Zhong et al.
2017; :mod:`metric_learning.reranking`).

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> q = Dataset(np.zeros((1, 1), np.float32), np.array([7], np.int32), np.array([1]))
  >>> g = Dataset(np.array([[0.0], [0.1], [0.5]], np.float32), np.array([7, 3, 7], np.int32),
  ...             np.array([1, 2, 2]))
  >>> ev = evaluators.create("reid", query="query", gallery="gallery", ks=(1, 2))
  >>> ev.run({"query": q.inputs, "gallery": g.inputs}, {"query": q, "gallery": g})
  {'cmc_rank_1': 0.0, 'cmc_rank_2': 1.0, 'mean_average_precision': 0.5, 'minp': 0.5, 'num_queries': 1}
"""

from __future__ import annotations

import numpy as np

from metric_learning import metrics
from metric_learning.evaluators import base


class ReidEvaluator(base.Evaluator):
  """CMC, mAP and mINP of ``query`` against ``gallery``, junk and same-camera excluded.

  Result keys: ``cmc_rank_{k}`` (k no larger than the gallery),
  ``mean_average_precision``, ``minp``, ``num_queries`` (queries with at least one valid
  match; the others are left out of the averages).
  """

  name = "reid"

  def __init__(self, *, query: str = "query", gallery: str = "gallery",
               metric: str = "euclidean", ks=(1, 5, 10), rerank: bool = False,
               k1: int = 20, k2: int = 6, lambda_value: float = 0.3):
    """Builds the evaluator.

    Args:
      query: the query split.
      gallery: the gallery split.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
      ks: the k of CMC rank-k, an int or a sequence of ints.
      rerank: rank by the k-reciprocal re-ranked distance (not with ``metric="dot"``).
      k1, k2, lambda_value: the re-ranking's settings (the paper's 20, 6, 0.3).
    """
    self.query = base.split_name(self.name, "query", query)
    self.gallery = base.split_name(self.name, "gallery", gallery)
    self.metric = base.check_metric(self.name, metric)
    self.ks = base.positive_ints(self.name, "ks", ks)
    self.rerank = base.boolean(self.name, "rerank", rerank)
    if self.rerank and self.metric == "dot":
      raise ValueError(f"{self.name}: rerank must rank a distance (metric 'euclidean', "
                       "'sqeuclidean' or 'cosine'), not metric='dot'.")
    self.k1 = base.positive_int(self.name, "k1", k1)
    self.k2 = base.positive_int(self.name, "k2", k2)
    self.lambda_value = base.unit_interval(self.name, "lambda_value", lambda_value)
    self.splits = tuple(dict.fromkeys((self.query, self.gallery)))

  def evaluate(self, inputs):
    qx, q = inputs[self.query]
    gx, g = inputs[self.gallery]
    for split, data in ((self.query, q), (self.gallery, g)):
      if data.cameras is None:
        raise ValueError(f"{self.name}: split {split!r} has no cameras; the re-ID "
                         "protocol needs a camera id per sample.")
    m = metrics.reid_metrics(qx, np.asarray(q.labels, np.int32),
                             np.asarray(q.cameras, np.int32), gx,
                             np.asarray(g.labels, np.int32), np.asarray(g.cameras, np.int32),
                             metric=self.metric, ks=self.ks, rerank=self.rerank,
                             k1=self.k1, k2=self.k2, lambda_value=self.lambda_value)
    return m
