"""Retrieval: precision@1, recall@K, R-precision, MAP@R, mAP and MRR.

Wraps :func:`metric_learning.metrics.retrieval_metrics`. Without a gallery
split every sample of ``split`` queries all the others (leave-one-out); with
one, the samples of ``split`` query the gallery's.

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> x = np.array([[0.0], [0.1], [1.0], [1.2], [0.15]], np.float32)
  >>> data = Dataset(x, np.array([0, 0, 1, 1, 1], np.int32))
  >>> ev = evaluators.create("retrieval", split="test", ks=(1, 2))
  >>> m = ev.run({"test": x}, {"test": data})
  >>> m["precision_at_1"], m["recall_at_2"], m["num_queries"]
  (0.6, 0.8, 5)
"""

from __future__ import annotations

from metric_learning import metrics
from metric_learning.evaluators import base


class RetrievalEvaluator(base.Evaluator):
  """Ranking metrics of ``split`` (queries) against ``gallery`` or itself.

  Result keys: ``precision_at_1``, ``recall_at_{k}`` (k no larger than the
  gallery), ``r_precision``, ``map_at_r``, ``mean_average_precision``, ``mrr``,
  ``num_queries`` (queries with at least one relevant item; the others are left
  out of every average).
  """

  name = "retrieval"

  def __init__(self, *, split: str, gallery: str | None = None,
               metric: str = "euclidean", ks=(1, 2, 4, 8)):
    """Builds the evaluator.

    Args:
      split: the query split.
      gallery: optional gallery split; None (or ``split``) means leave-one-out
        within ``split``.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
      ks: the K of recall@K, an int or a sequence of ints.
    """
    self.split = base.split_name(self.name, "split", split)
    self.gallery = None if gallery in (None, split) else base.split_name(
        self.name, "gallery", gallery)
    self.metric = base.check_metric(self.name, metric)
    self.ks = base.positive_ints(self.name, "ks", ks)
    self.splits = (split,) if self.gallery is None else (split, self.gallery)

  def evaluate(self, inputs):
    x, data = inputs[self.split]
    if self.gallery is None:
      m = metrics.retrieval_metrics(x, data.labels, metric=self.metric, ks=self.ks)
    else:
      gx, gdata = inputs[self.gallery]
      m = metrics.retrieval_metrics(x, data.labels, gallery_embeddings=gx,
                                    gallery_labels=gdata.labels, metric=self.metric,
                                    ks=self.ks)
    return m
