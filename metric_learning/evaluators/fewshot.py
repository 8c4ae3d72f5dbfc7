r"""Few-shot classification: N-way K-shot episodes with prototypes.

Each episode draws ``ways`` classes among those with at least
``shots + queries`` samples, then ``shots`` support and ``queries`` query
samples of each (without replacement). A class prototype is the mean support
embedding; each query is assigned the nearest prototype (Snell, Swersky,
Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017,
https://arxiv.org/abs/1703.05175). Reported per shot count: the mean episode
accuracy and the half-width of its 95 % interval,
:math:`1.96\,\sigma / \sqrt{\text{episodes}}` (:math:`\sigma` the population
standard deviation of the episode accuracies).

Episodes are a function of ``(labels, ways, shots, queries, episodes, seed)``
(:func:`fewshot_episodes`); all of them are evaluated at once with array ops.

Example:
  >>> import numpy as np
  >>> from metric_learning import evaluators
  >>> from metric_learning.data import Dataset
  >>> y = np.repeat(np.arange(4), 5).astype(np.int32)
  >>> x = (10.0 * y[:, None] + np.arange(20)[:, None] % 5).astype(np.float32)
  >>> ev = evaluators.create("fewshot", split="unseen", ways=3, shots=(1, 2), queries=3,
  ...                        episodes=50)
  >>> ev.run({"unseen": x}, {"unseen": Dataset(x, y)})
  {'3way_1shot_accuracy': 1.0, '3way_1shot_ci95': 0.0,
   '3way_2shot_accuracy': 1.0, '3way_2shot_ci95': 0.0}
"""

from __future__ import annotations

import numpy as np

from metric_learning.evaluators import base


def fewshot_episodes(labels, *, ways: int, shots: int, queries: int, episodes: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Sample indices of ``episodes`` N-way K-shot episodes.

  Args:
    labels: ``[n]`` integer labels.
    ways: classes per episode.
    shots: support samples per class.
    queries: query samples per class.
    episodes: number of episodes.
    seed: the episodes are a function of the arguments and this seed.

  Returns:
    ``(support [episodes, ways, shots], query [episodes, ways, queries])``
    sample indices; ``[e, w]`` rows of both hold the same class, distinct samples.

  Example:
    >>> import numpy as np
    >>> from metric_learning.evaluators import fewshot
    >>> y = np.array([0, 0, 1, 1, 2, 2, 3])
    >>> s, q = fewshot.fewshot_episodes(y, ways=2, shots=1, queries=1, episodes=3)
    >>> s.shape, q.shape, bool(np.all(y[s[..., 0]] == y[q[..., 0]]))
    ((3, 2, 1), (3, 2, 1), True)
  """
  y = np.asarray(labels)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array; got shape {y.shape}, "
                     f"dtype {y.dtype}.")
  for name, value in (("ways", ways), ("shots", shots), ("queries", queries),
                      ("episodes", episodes)):
    base.positive_int("fewshot", name, value)
  per_class = shots + queries
  order = np.argsort(y, kind="stable")
  classes, start, count = np.unique(y[order], return_index=True, return_counts=True)
  eligible = np.flatnonzero(count >= per_class)
  if len(eligible) < ways:
    raise ValueError(f"{ways}-way {shots}-shot episodes with {queries} queries need "
                     f"{ways} classes with at least {per_class} samples; only "
                     f"{len(eligible)} of {len(classes)} classes have that many.")
  rng = np.random.default_rng([seed, ways, shots, queries])
  # Random keys, argsorted: a uniformly random subset, without replacement.
  chosen = eligible[np.argsort(rng.random((episodes, len(eligible))), axis=1)[:, :ways]]
  sizes = count[chosen]                                           # [E, W]
  keys = rng.random((episodes, ways, int(count[eligible].max())))
  keys = np.where(np.arange(keys.shape[-1]) < sizes[..., None], keys, np.inf)
  # The per_class smallest keys, in key order: a partition (linear time for big
  # classes), then a sort of the few kept.
  picks = np.argpartition(keys, per_class - 1, axis=-1)[..., :per_class]
  picks = np.take_along_axis(
      picks, np.argsort(np.take_along_axis(keys, picks, axis=-1), axis=-1), axis=-1)
  index = order[start[chosen][..., None] + picks]   # [E, W, shots + queries]
  return index[..., :shots], index[..., shots:]


def _distances_to(queries: np.ndarray, prototypes: np.ndarray, metric: str) -> np.ndarray:
  """``[E, Q, W]`` distances of each episode's queries to its prototypes (float64)."""
  if metric == "dot":         # the similarity, as the distance -x.y
    return -np.einsum("eqd,ewd->eqw", queries, prototypes)
  if metric == "cosine":
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
    return 1.0 - np.einsum("eqd,ewd->eqw", unit(queries), unit(prototypes))
  # One way at a time: the difference form is exact and memory stays O(E·Q·dim).
  sq = np.stack([np.sum((queries - prototypes[:, w, None, :]) ** 2, axis=-1)
                 for w in range(prototypes.shape[1])], axis=-1)
  return sq if metric == "sqeuclidean" else np.sqrt(sq)


def episode_accuracies(embeddings, support, query, *, metric: str = "euclidean"
                       ) -> np.ndarray:
  """Nearest-prototype accuracy of each episode.

  Args:
    embeddings: ``[n, dim]``.
    support: ``[episodes, ways, shots]`` sample indices.
    query: ``[episodes, ways, queries]`` sample indices; way ``w``'s queries have
      the class of prototype ``w``.
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as
      -x·y); equal distances go to the lower way.

  Returns:
    ``[episodes]`` accuracies.
  """
  x = np.asarray(embeddings, np.float64)
  prototypes = x[support].mean(axis=2)                           # [E, W, dim]
  e, w, q = query.shape
  d = _distances_to(x[query].reshape(e, w * q, -1), prototypes, metric)
  truth = np.repeat(np.arange(w), q)[None, :]
  return np.mean(np.argmin(d, axis=-1) == truth, axis=-1)


class FewShotEvaluator(base.Evaluator):
  """N-way K-shot prototype accuracy on ``split`` (typically unseen classes).

  Result keys, per shot count K: ``{ways}way_{K}shot_accuracy`` and
  ``{ways}way_{K}shot_ci95``.
  """

  name = "fewshot"

  def __init__(self, *, split: str, ways: int = 5, shots=(1, 5), queries: int = 15,
               episodes: int = 600, seed: int = 0, metric: str = "euclidean"):
    """Builds the evaluator.

    Args:
      split: the split whose classes form the episodes.
      ways: classes per episode.
      shots: support samples per class, an int or a sequence of ints.
      queries: query samples per class.
      episodes: episodes per shot count.
      seed: the episodes are a function of the labels and this seed.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    """
    self.split = base.split_name(self.name, "split", split)
    self.ways = base.positive_int(self.name, "ways", ways)
    self.shots = base.positive_ints(self.name, "shots", shots)
    self.queries = base.positive_int(self.name, "queries", queries)
    self.episodes = base.positive_int(self.name, "episodes", episodes)
    self.seed = base.nonnegative_int(self.name, "seed", seed)
    self.metric = base.check_metric(self.name, metric)
    self.splits = (self.split,)

  def evaluate(self, inputs):
    x, data = inputs[self.split]
    out = {}
    for shots in self.shots:
      try:
        support, query = fewshot_episodes(data.labels, ways=self.ways, shots=shots,
                                          queries=self.queries, episodes=self.episodes,
                                          seed=self.seed)
      except ValueError as e:
        raise ValueError(f"{self.name}: split {self.split!r}: {e}") from None
      acc = episode_accuracies(x, support, query, metric=self.metric)
      key = f"{self.ways}way_{shots}shot"
      out[f"{key}_accuracy"] = float(acc.mean())
      out[f"{key}_ci95"] = float(1.96 * acc.std() / np.sqrt(len(acc)))
    return out
