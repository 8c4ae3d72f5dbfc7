"""Evaluators chosen by name from a config (big_vision style).

Each evaluator names the dataset splits it needs embedded (``splits``) and turns
their embeddings into a flat dict of numbers (``run``); the trainer embeds each
split once (:func:`embed_dataset`, padding-aware) and prefixes the keys with the
evaluator's name. ``EVALUATORS`` is the one registry; :func:`create` builds an
evaluator from config keywords and fails fast on unknown names or arguments.

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> x = np.array([[0.0], [0.1], [5.0], [5.1]], np.float32)
  >>> data = {"test": Dataset(x, np.array([0, 0, 1, 1], np.int32))}
  >>> ev = evaluators.create("knn", query="test", gallery="test", ks=1)
  >>> ev.splits
  ('test',)
  >>> ev.run({"test": x}, data)
  {'accuracy_at_1': 1.0, 'num_queries': 4}
"""

from __future__ import annotations

from metric_learning import _extras

_extras.require_extra("experiments", "metric_learning.evaluators")

from typing import Any

from metric_learning import registry
from metric_learning.evaluators.base import Evaluator
from metric_learning.evaluators.base import embed_dataset
from metric_learning.evaluators.clustering import ClusteringEvaluator
from metric_learning.evaluators.fewshot import FewShotEvaluator
from metric_learning.evaluators.fewshot import fewshot_episodes
from metric_learning.evaluators.knn import KnnEvaluator
from metric_learning.evaluators.reid import ReidEvaluator
from metric_learning.evaluators.retrieval import RetrievalEvaluator
from metric_learning.evaluators.verification import VerificationEvaluator
from metric_learning.evaluators.verification import verification_pairs
from metric_learning.evaluators.verification import verification_report

EVALUATORS = registry.Registry("evaluator", field="evals", signature=registry.class_init)
for _cls in (RetrievalEvaluator, ClusteringEvaluator, KnnEvaluator, VerificationEvaluator,
             ReidEvaluator, FewShotEvaluator):
  EVALUATORS.register(_cls.name, _cls)


def arguments(name: str) -> dict[str, Any]:
  """The arguments of evaluator ``name`` with their defaults
  (:data:`metric_learning.registry.REQUIRED` for those it needs)."""
  return EVALUATORS.arguments(name)


def create(name: str, **kwargs: Any) -> Evaluator:
  """The evaluator registered as ``name``, built from keyword arguments.

  Args:
    name: a key of ``EVALUATORS``.
    **kwargs: the evaluator's (keyword-only) arguments.

  Returns:
    An :class:`Evaluator`.

  Raises:
    ValueError: for an unknown name (listing the known ones), an argument the
      evaluator does not have, or a required one left out (naming both).

  Example:
    >>> from metric_learning import evaluators
    >>> evaluators.create("retrieval", split="unseen", ks=(1, 4)).splits
    ('unseen',)
    >>> evaluators.create("knn", query="test", gallery="train", foo=1)
    Traceback (most recent call last):
    ...
    ValueError: evals.foo is not an argument of evaluator 'knn'; its arguments are ['gallery', 'ks', 'metric', 'query'].
  """
  EVALUATORS.check_settings(name, kwargs, field="evals")
  cls = EVALUATORS[name]
  return cls(**kwargs)


__all__ = ("EVALUATORS", "arguments", "ClusteringEvaluator", "Evaluator", "FewShotEvaluator",
           "KnnEvaluator", "ReidEvaluator", "RetrievalEvaluator", "VerificationEvaluator",
           "create", "embed_dataset", "fewshot_episodes", "verification_pairs",
           "verification_report")
