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
  >>> ev = evaluators.create("knn", query="test", gallery="test", k=1)
  >>> ev.splits
  ('test',)
  >>> ev.run({"test": x}, data)
  {'accuracy_at_1': 1.0, 'num_queries': 4}
"""

from __future__ import annotations

from metric_learning import _extras

_extras.require_extra("experiments", "metric_learning.evaluators")

import inspect
from typing import Any

from metric_learning import _validation
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

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.name: cls for cls in (RetrievalEvaluator, ClusteringEvaluator, KnnEvaluator,
                              VerificationEvaluator, ReidEvaluator, FewShotEvaluator)}


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
    ValueError: evals: 'knn' has no argument 'foo'; its arguments are: query, gallery, k, metric.
  """
  if name not in EVALUATORS:
    raise ValueError(_validation.unknown_name(name, EVALUATORS, field="evals", kind="evaluator"))
  cls = EVALUATORS[name]
  params = [p for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]
  known = [p.name for p in params]
  for key in kwargs:
    if key not in known:
      raise ValueError(f"evals: {name!r} has no argument {key!r}; its arguments are: "
                       f"{', '.join(known)}.")
  missing = [p.name for p in params if p.default is inspect.Parameter.empty
             and p.name not in kwargs]
  if missing:
    raise ValueError(f"evals: {name!r} needs argument(s) {', '.join(map(repr, missing))}; "
                     f"its arguments are: {', '.join(known)}.")
  return cls(**kwargs)


__all__ = ("EVALUATORS", "ClusteringEvaluator", "Evaluator", "FewShotEvaluator",
           "KnnEvaluator", "ReidEvaluator", "RetrievalEvaluator", "VerificationEvaluator",
           "create", "embed_dataset", "fewshot_episodes", "verification_pairs",
           "verification_report")
