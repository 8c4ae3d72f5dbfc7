r"""Pair verification: ROC AUC, TAR@FAR, EER, best accuracy and the LFW 10-fold protocol.

The evaluator draws a balanced, deterministic set of genuine (same label) and
impostor pairs from one split (:func:`verification_pairs`), scores each pair by
minus its distance and hands the scores to :func:`verification_report`, which
also accepts pairs given explicitly (e.g. read from LFW's ``pairs.txt``).

LFW protocol (Huang et al. Labeled Faces in the Wild. 2007,
http://vis-www.cs.umass.edu/lfw/): the pairs are split into folds; for each fold
the accuracy-maximising threshold is chosen on the other folds and applied to it.
The candidate thresholds are the midpoints between consecutive distinct training
scores plus :math:`\pm\infty`; a pair is predicted genuine when its score is
above the threshold, and among equally accurate thresholds the smallest wins.
Reported: the mean and the (population) standard deviation of the fold accuracies.

Example:
  >>> import numpy as np
  >>> from metric_learning.evaluators import verification
  >>> scores = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.1])
  >>> same = np.array([True, True, False, True, False, False])
  >>> m = verification.verification_report(scores, same, np.array([0, 1, 2, 0, 1, 2]))
  >>> round(m["roc_auc"], 4), m["best_accuracy"], round(m["lfw_accuracy"], 4)
  (0.7778, 0.8333333333333334, 0.3333)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from metric_learning import _kernels
from metric_learning import metrics
from metric_learning.evaluators import base


def verification_pairs(labels, *, num_pairs: int, folds: int = 10, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A deterministic, balanced set of genuine and impostor pairs, split into folds.

  ``num_pairs // 2`` genuine pairs: a first sample drawn uniformly among those
  whose class has another sample, a second uniformly among the other samples of
  its class. ``num_pairs - num_pairs // 2`` impostor pairs: a first sample drawn
  uniformly, a second uniformly among the samples of the other classes. Pairs
  are drawn with replacement. The k-th genuine and k-th impostor pair go to fold
  ``k % folds``, so every fold is balanced.

  Args:
    labels: ``[n]`` integer labels; at least two classes, one with two samples.
    num_pairs: total number of pairs, at least ``2 * folds``.
    folds: number of folds.
    seed: the pairs are a function of ``(labels, num_pairs, folds, seed)``.

  Returns:
    ``(first, second, same, fold)``, each ``[num_pairs]``: sample indices, True
    for genuine pairs, fold ids in ``[0, folds)``.

  Example:
    >>> import numpy as np
    >>> from metric_learning.evaluators import verification
    >>> a, b, same, fold = verification.verification_pairs(
    ...     np.array([0, 0, 1, 1, 2]), num_pairs=4, folds=2)
    >>> same.tolist(), fold.tolist()
    ([True, True, False, False], [0, 1, 0, 1])
  """
  y = np.asarray(labels)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array; got shape {y.shape}, "
                     f"dtype {y.dtype}.")
  num_pairs = base.positive_int("verification", "num_pairs", num_pairs)
  folds = base.positive_int("verification", "folds", folds)
  if num_pairs < 2 * folds:
    raise ValueError(f"num_pairs must be at least 2 * folds = {2 * folds} so every fold "
                     f"holds a genuine and an impostor pair; got {num_pairs}.")
  order = np.argsort(y, kind="stable")
  classes, start, count = np.unique(y[order], return_index=True, return_counts=True)
  if len(classes) < 2 or count.max() < 2:
    raise ValueError("labels must have at least two classes and a class with two "
                     f"samples to form genuine and impostor pairs; got {len(classes)} "
                     f"classes of at most {count.max()} samples.")
  cls = np.searchsorted(classes, y)          # class index of each sample
  rank = np.empty(len(y), np.int64)          # position of each sample within its class
  rank[order] = np.arange(len(y)) - start[cls[order]]
  rng = np.random.default_rng(seed)
  num_genuine = num_pairs // 2
  num_impostor = num_pairs - num_genuine

  first = rng.choice(np.flatnonzero(count[cls] >= 2), size=num_genuine)
  c = cls[first]
  shift = rng.integers(1, count[c])          # another member of the same class
  second = order[start[c] + (rank[first] + shift) % count[c]]

  first_i = rng.integers(0, len(y), size=num_impostor)
  c = cls[first_i]
  r = rng.integers(0, len(y) - count[c])     # a position outside the class's block
  second_i = order[np.where(r >= start[c], r + count[c], r)]

  return (np.concatenate([first, first_i]), np.concatenate([second, second_i]),
          np.r_[np.ones(num_genuine, bool), np.zeros(num_impostor, bool)],
          np.r_[np.arange(num_genuine) % folds, np.arange(num_impostor) % folds])


def best_threshold(scores, same) -> float:
  """The accuracy-maximising threshold (predict genuine when score > threshold).

  Candidates: midpoints between consecutive distinct scores, and ±inf; ties go
  to the smallest.

  Example:
    >>> from metric_learning.evaluators import verification
    >>> verification.best_threshold([0.9, 0.5, 0.1], [True, True, False])
    0.3
  """
  s = np.asarray(scores, np.float64)
  t = np.asarray(same, bool)
  distinct = np.unique(s)
  thresholds = np.r_[-np.inf, (distinct[:-1] + distinct[1:]) / 2, np.inf]
  genuine, impostor = np.sort(s[t]), np.sort(s[~t])
  accepted = len(genuine) - np.searchsorted(genuine, thresholds, side="right")
  rejected = np.searchsorted(impostor, thresholds, side="right")
  return float(thresholds[np.argmax(accepted + rejected)])


def lfw_fold_accuracies(scores, same, fold) -> np.ndarray:
  """Accuracy of each fold at the threshold chosen on the other folds.

  Args:
    scores: ``[pairs]`` similarity scores (higher = more similar).
    same: ``[pairs]`` bool, True for genuine pairs.
    fold: ``[pairs]`` fold id of each pair (at least two distinct ids).

  Returns:
    ``[folds]`` accuracies, in the order of the sorted fold ids.

  Example:
    >>> from metric_learning.evaluators import verification
    >>> verification.lfw_fold_accuracies([3, 0, 2, 1], [True, False, True, False],
    ...                                  [0, 0, 1, 1]).tolist()
    [1.0, 1.0]
  """
  s = np.asarray(scores, np.float64)
  t = np.asarray(same, bool)
  f = np.asarray(fold)
  ids = np.unique(f)
  if len(ids) < 2:
    raise ValueError(f"fold must hold at least two distinct fold ids; got {ids.tolist()}.")
  out = []
  for i in ids:
    held_out = f == i
    threshold = best_threshold(s[~held_out], t[~held_out])
    out.append(np.mean((s[held_out] > threshold) == t[held_out]))
  return np.asarray(out)


def roc_auc(fpr, tpr) -> float:
  """Area under a ROC curve given as increasing ``fpr`` / ``tpr`` points (trapezoids)."""
  fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def verification_report(scores, same, fold, *, far_targets=(1e-3, 1e-2, 1e-1)
                        ) -> dict[str, float]:
  """All verification metrics of scored pairs.

  Args:
    scores: ``[pairs]`` similarity scores (higher = more similar), finite.
    same: ``[pairs]`` bool, True for genuine pairs (both kinds present).
    fold: ``[pairs]`` fold id of each pair, for the LFW protocol.
    far_targets: FAR values of TAR@FAR.

  Returns:
    ``roc_auc``, ``tar_at_far_{far:g}``, ``eer``, ``best_accuracy``,
    ``best_threshold`` (over all pairs), ``lfw_accuracy``, ``lfw_accuracy_std``
    and ``num_pairs``.
  """
  s = np.asarray(scores, np.float64).reshape(-1)
  t = np.asarray(same, bool).reshape(-1)
  f = np.asarray(fold).reshape(-1)
  if not s.shape == t.shape == f.shape:
    raise ValueError(f"scores, same and fold must have the same length; got {s.shape}, "
                     f"{t.shape} and {f.shape}.")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores must be finite.")
  m = metrics.verification_metrics(s, t, far_targets=far_targets)
  out = {"roc_auc": roc_auc(m.pop("roc_fpr"), m.pop("roc_tpr"))}
  out.update(m)
  accuracies = lfw_fold_accuracies(s, t, f)
  out.update(lfw_accuracy=float(accuracies.mean()), lfw_accuracy_std=float(accuracies.std()),
             num_pairs=int(len(s)))
  return out


class VerificationEvaluator(base.Evaluator):
  """Verification metrics of sampled pairs of ``split``; keys of :func:`verification_report`."""

  name = "verification"

  def __init__(self, *, split: str, num_pairs: int = 6000, folds: int = 10, seed: int = 0,
               metric: str = "euclidean", pairs: str = "sampled"):
    """Builds the evaluator.

    Args:
      split: the split the pairs are drawn from.
      pairs: ``"sampled"`` draws ``num_pairs`` pairs with :func:`verification_pairs`;
        ``"protocol"`` uses the split's own fixed pairs and folds (its ``pairs``
        attribute, e.g. LFW's ``pairs.txt`` read by
        :func:`metric_learning.data.protocols.lfw`), ignoring ``num_pairs``,
        ``folds`` and ``seed``.
      num_pairs: genuine + impostor pairs (half each), at least ``2 * folds``.
      folds: folds of the LFW protocol.
      seed: the pairs are a function of the split's labels and this seed.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as
        -x·y); score = -distance (for ``"dot"``, the similarity).
    """
    self.split = base.split_name(self.name, "split", split)
    self.num_pairs = base.positive_int(self.name, "num_pairs", num_pairs)
    self.folds = base.positive_int(self.name, "folds", folds)
    if self.folds < 2 or self.num_pairs < 2 * self.folds:
      raise ValueError(f"{self.name}: folds must be >= 2 and num_pairs >= 2 * folds; got "
                       f"folds={folds}, num_pairs={num_pairs}.")
    self.seed = base.nonnegative_int(self.name, "seed", seed)
    self.metric = base.check_metric(self.name, metric)
    if pairs not in ("sampled", "protocol"):
      raise ValueError(f"{self.name}: pairs must be 'sampled' or 'protocol'; got {pairs!r}.")
    self.pairs = pairs
    self.splits = (self.split,)

  def evaluate(self, inputs):
    x, data = inputs[self.split]
    if self.pairs == "protocol":
      fixed = getattr(data, "pairs", None)
      if fixed is None:
        raise ValueError(f"{self.name}: pairs='protocol' but split {self.split!r} has no "
                         "fixed pairs (only protocols such as LFW's pairs.txt carry them); "
                         "use pairs='sampled'.")
      first, second, same, fold = fixed.first, fixed.second, fixed.same, fixed.fold
    else:
      first, second, same, fold = self._sampled(data)
    # Minus the distance form (for "dot", -(-x.y) = the similarity itself).
    scores = -np.asarray(_kernels.paired(
        jnp.asarray(x[first]), jnp.asarray(x[second]), self.metric), np.float64)
    return verification_report(scores, same, fold)

  def _sampled(self, data):
    try:
      first, second, same, fold = verification_pairs(
          data.labels, num_pairs=self.num_pairs, folds=self.folds, seed=self.seed)
    except ValueError as e:
      raise ValueError(f"{self.name}: split {self.split!r}: {e}") from None
    return first, second, same, fold
