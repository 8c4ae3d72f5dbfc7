"""Clustering quality: NMI and AMI of k-means clusters against the labels.

Wraps :func:`metric_learning.metrics.clustering_metrics` (k-means with k = the
number of classes; needs scikit-learn). Embeddings that are not all finite (a
diverged model) give NaN values and a warning instead of an exception (see
:meth:`metric_learning.evaluators.base.Evaluator.run`), so a run still logs its
other metrics.

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], np.float32)
  >>> data = Dataset(x, np.array([3, 3, 8, 8], np.int32))
  >>> evaluators.create("clustering", split="test").run({"test": x}, {"test": data})
  {'nmi': 1.0, 'ami': 1.0}
"""

from __future__ import annotations

from metric_learning import metrics
from metric_learning.evaluators import base


class ClusteringEvaluator(base.Evaluator):
  """NMI and AMI of k-means on ``split``. Result keys: ``nmi``, ``ami``."""

  name = "clustering"

  def __init__(self, *, split: str, seed: int = 0):
    """Builds the evaluator.

    Args:
      split: the split to cluster.
      seed: k-means initialisation seed.
    """
    self.split = base.split_name(self.name, "split", split)
    self.seed = base.nonnegative_int(self.name, "seed", seed)
    self.splits = (self.split,)

  def evaluate(self, inputs):
    x, data = inputs[self.split]
    return metrics.clustering_metrics(x, data.labels, seed=self.seed)
