"""Evaluators against brute-force loops, scikit-learn and hand-made toy sets."""

import collections
import importlib
import inspect
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from metric_learning import evaluators
from metric_learning import metrics
from metric_learning.data import Dataset

PATTERNS = ("random", "class_missing", "singletons", "ties")
MODULES = ("retrieval", "clustering", "knn", "verification", "reid", "fewshot")


def _data(pattern, seed, n=14):
  """``(x [n, dim] float32, labels [n] int32)`` of one label / geometry pattern.

  random: gaussian points, 4 classes. class_missing: labels with gaps
  (0, 2, 5), class 5 dropped from galleries. singletons: four one-sample
  classes. ties: points on a 3x3 integer grid, so many distances are equal.
  """
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 3))
  if pattern == "random":
    y = rng.integers(0, 4, n)
  elif pattern == "class_missing":
    y = rng.choice([0, 2, 5], n)
  elif pattern == "singletons":
    y = np.r_[rng.integers(0, 3, n - 4), [10, 11, 12, 13]]
  else:
    x = rng.integers(0, 3, (n, 2)).astype(np.float64)
    y = rng.integers(0, 3, n)
  return x.astype(np.float32), y.astype(np.int32)


def _gallery(pattern, seed):
  x, y = _data(pattern, seed + 100, n=12)
  if pattern == "class_missing":   # queries of class 5 have no match in the gallery
    x, y = x[y != 5], y[y != 5]
  return x, y


def _metrics_for(pattern):
  # Integer-grid ties are exact in float32 only for the (sq)euclidean distance.
  return ("euclidean", "sqeuclidean") if pattern == "ties" else ("euclidean", "cosine")


def _cases():
  return [(p, s, m) for p in PATTERNS for s in (0, 1) for m in _metrics_for(p)]


def _ranked(q, gallery, metric, skip=()):
  """Gallery indices sorted by (distance, index), leaving out ``skip``."""
  d = [(ref.distance(q, g, metric), j) for j, g in enumerate(gallery) if j not in skip]
  return [j for _, j in sorted(d)]


def _assert_dicts_close(got, want, atol=1e-6):
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)


# ----------------------------------------------------------------------------- retrieval


def _brute_retrieval(qx, qy, gx, gy, metric, ks, loo):
  sums = collections.defaultdict(float)
  count = 0
  for i in range(len(qx)):
    order = _ranked(qx[i], gx, metric, skip={i} if loo else ())
    rel = [bool(gy[j] == qy[i]) for j in order]
    r = sum(rel)
    if r == 0:
      continue
    count += 1
    hits = 0
    for rank, is_rel in enumerate(rel, start=1):
      if is_rel:
        hits += 1
        sums["mean_average_precision"] += hits / rank / r
        if rank <= r:
          sums["map_at_r"] += hits / rank / r
          sums["r_precision"] += 1 / r
        if hits == 1:
          sums["mrr"] += 1 / rank
    sums["precision_at_1"] += rel[0]
    for k in ks:
      sums[f"recall_at_{k}"] += any(rel[:k])
  out = {k: v / count for k, v in sums.items()}
  for k in ks:
    out.setdefault(f"recall_at_{k}", 0.0)
  out.update(num_queries=count, mrr=out.get("mrr", 0.0))
  return out


@pytest.mark.parametrize("pattern,seed,metric", _cases())
@pytest.mark.parametrize("with_gallery", [False, True])
def test_retrieval_matches_brute_force(pattern, seed, metric, with_gallery):
  x, y = _data(pattern, seed)
  ks = (1, 2, 4, 50)                       # 50 exceeds every gallery: not reported
  embeddings, datasets = {"q": x}, {"q": Dataset(x, y)}
  gx, gy = x, y
  if with_gallery:
    gx, gy = _gallery(pattern, seed)
    embeddings["g"], datasets["g"] = gx, Dataset(gx, gy)
  ev = evaluators.create("retrieval", split="q", gallery="g" if with_gallery else None,
                         metric=metric, ks=ks)
  assert ev.splits == (("q", "g") if with_gallery else ("q",))
  got = ev.run(embeddings, datasets)
  want = _brute_retrieval(x, y, gx, gy, metric, (1, 2, 4), loo=not with_gallery)
  _assert_dicts_close(got, want)


def test_retrieval_gallery_equal_to_split_is_leave_one_out():
  x, y = _data("random", 3)
  data = {"a": Dataset(x, y)}
  loo = evaluators.create("retrieval", split="a").run({"a": x}, data)
  same = evaluators.create("retrieval", split="a", gallery="a").run({"a": x}, data)
  assert loo == same


# ---------------------------------------------------------------------------- clustering


def _entropy(counts, n):
  return -sum(c / n * math.log(c / n) for c in counts if c)


def _brute_nmi_ami(a, b):
  """Arithmetic-mean NMI and AMI (scikit-learn's defaults), with explicit loops."""
  n = len(a)
  ua, ub = sorted(set(a)), sorted(set(b))
  table = [[sum(1 for s, t in zip(a, b) if s == i and t == j) for j in ub] for i in ua]
  rows = [sum(r) for r in table]
  cols = [sum(table[i][j] for i in range(len(ua))) for j in range(len(ub))]
  mi = sum(nij / n * math.log(n * nij / (rows[i] * cols[j]))
           for i, r in enumerate(table) for j, nij in enumerate(r) if nij)
  ha, hb = _entropy(rows, n), _entropy(cols, n)
  lf = lambda v: math.lgamma(v + 1)   # log factorial
  emi = 0.0
  for ai in rows:
    for bj in cols:
      for nij in range(max(1, ai + bj - n), min(ai, bj) + 1):
        log_p = (lf(ai) + lf(bj) + lf(n - ai) + lf(n - bj) - lf(n) - lf(nij) - lf(ai - nij)
                 - lf(bj - nij) - lf(n - ai - bj + nij))
        emi += nij / n * math.log(n * nij / (ai * bj)) * math.exp(log_p)
  mean_h = (ha + hb) / 2
  nmi = 1.0 if mean_h == 0 else mi / mean_h
  ami = 1.0 if mean_h == emi else (mi - emi) / (mean_h - emi)
  return nmi, ami


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("seed", [0, 1])
def test_clustering_matches_brute_force_scores_of_kmeans(pattern, seed):
  from sklearn import cluster  # pylint: disable=import-outside-toplevel
  x, y = _data(pattern, seed, n=20)
  got = evaluators.create("clustering", split="s", seed=seed).run(
      {"s": x}, {"s": Dataset(x, y)})
  k = len(set(y.tolist()))
  pred = cluster.KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
      x.astype(np.float64))
  nmi, ami = _brute_nmi_ami(y.tolist(), pred.tolist())
  _assert_dicts_close(got, {"nmi": nmi, "ami": ami}, atol=1e-9)


def test_clustering_of_separated_blobs_is_perfect():
  rng = np.random.default_rng(0)
  y = np.repeat([4, 9, 2], 6).astype(np.int32)
  x = (10.0 * y[:, None] + 0.1 * rng.standard_normal((18, 2))).astype(np.float32)
  got = evaluators.create("clustering", split="s").run({"s": x}, {"s": Dataset(x, y)})
  assert got == {"nmi": 1.0, "ami": 1.0}


# ----------------------------------------------------------------------------------- knn


def _brute_knn(qx, qy, gx, gy, k, metric, loo):
  correct = 0
  for i in range(len(qx)):
    order = _ranked(qx[i], gx, metric, skip={i} if loo else ())[:k]
    votes, first_seen = {}, {}
    for rank, j in enumerate(order):
      votes[gy[j]] = votes.get(gy[j], 0) + 1
      first_seen.setdefault(gy[j], rank)
    best = max(votes.values())
    prediction = min((first_seen[c], c) for c, v in votes.items() if v == best)[1]
    correct += prediction == qy[i]
  return correct / len(qx)


@pytest.mark.parametrize("pattern,seed,metric", _cases())
@pytest.mark.parametrize("with_gallery", [False, True])
def test_knn_matches_brute_force(pattern, seed, metric, with_gallery):
  x, y = _data(pattern, seed)
  gx, gy = _gallery(pattern, seed) if with_gallery else (x, y)
  ev = evaluators.create("knn", query="q", gallery="g" if with_gallery else "q",
                         ks=(1, 2, 3, 4, 5, 8), metric=metric)
  data = {"q": Dataset(x, y), "g": Dataset(gx, gy)}
  got = ev.run({"q": x, "g": gx}, data)
  want = {f"accuracy_at_{k}": _brute_knn(x, y, gx, gy, k, metric, loo=not with_gallery)
          for k in (1, 2, 3, 4, 5, 8)}
  want["num_queries"] = len(x)
  _assert_dicts_close(got, want, atol=0)


def test_knn_vote_ties_go_to_the_nearest_label():
  # Query 0: neighbours at 1 (label 7), 2 (label 3), 3 (label 3), 4 (label 7):
  # k=4 ties 2-2, and label 7 is the nearest of the tied labels.
  g = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
  gy = np.array([7, 3, 3, 7], np.int32)
  q = np.array([[0.0]], np.float32)
  data = {"q": Dataset(q, np.array([7], np.int32)), "g": Dataset(g, gy)}
  got = evaluators.create("knn", query="q", gallery="g", ks=(1, 2, 3, 4)).run(
      {"q": q, "g": g}, data)
  assert got == {"accuracy_at_1": 1.0, "accuracy_at_2": 1.0, "accuracy_at_3": 0.0,
                 "accuracy_at_4": 1.0, "num_queries": 1}


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_knn_matches_sklearn_without_vote_ties(k, metric):
  from sklearn import neighbors  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(k)
  gx = rng.standard_normal((40, 3)).astype(np.float32)
  gy = (gx[:, 0] + 0.5 * rng.standard_normal(40) > 0).astype(np.int32)   # 2 classes, odd k
  qx = rng.standard_normal((25, 3)).astype(np.float32)
  qy = (qx[:, 0] > 0).astype(np.int32)
  got = evaluators.create("knn", query="test", gallery="train", ks=k, metric=metric).run(
      {"test": qx, "train": gx}, {"test": Dataset(qx, qy), "train": Dataset(gx, gy)})
  knn = neighbors.KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(gx, gy)
  assert got[f"accuracy_at_{k}"] == pytest.approx(knn.score(qx, qy), abs=1e-12)


def test_knn_rejects_k_larger_than_the_gallery():
  x, y = _data("random", 0, n=5)
  ev = evaluators.create("knn", query="s", gallery="s", ks=5)   # leave-one-out: 4 left
  with pytest.raises(ValueError, match=r"knn: k must be in \[1, 4\]"):
    ev.run({"s": x}, {"s": Dataset(x, y)})


# -------------------------------------------------------------------------- verification


def _brute_lfw(scores, same, fold):
  accuracies = []
  for held_out in sorted(set(fold)):
    train = [(s, t) for s, t, f in zip(scores, same, fold) if f != held_out]
    test = [(s, t) for s, t, f in zip(scores, same, fold) if f == held_out]
    values = sorted({s for s, _ in train})
    candidates = [-math.inf] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [math.inf]
    best, best_correct = None, -1
    for threshold in candidates:               # ascending: ties keep the smallest
      correct = sum((s > threshold) == t for s, t in train)
      if correct > best_correct:
        best, best_correct = threshold, correct
    accuracies.append(sum((s > best) == t for s, t in test) / len(test))
  return statistics.fmean(accuracies), statistics.pstdev(accuracies)


def _brute_verification(scores, same, fold):
  genuine = [s for s, t in zip(scores, same) if t]
  impostor = [s for s, t in zip(scores, same) if not t]
  auc = sum(1.0 if g > i else 0.5 if g == i else 0.0 for g in genuine for i in impostor)
  out = {"roc_auc": auc / (len(genuine) * len(impostor))}
  best = 0.0
  tar = {far: 0.0 for far in (1e-3, 1e-2, 1e-1)}
  for threshold in sorted(set(scores)) + [math.inf]:   # accept score >= threshold
    tpr = sum(g >= threshold for g in genuine) / len(genuine)
    fpr = sum(i >= threshold for i in impostor) / len(impostor)
    best = max(best, (tpr * len(genuine) + (1 - fpr) * len(impostor)) / len(scores))
    for far in tar:
      if fpr <= far:
        tar[far] = max(tar[far], tpr)
  out["best_accuracy"] = best
  out.update({f"tar_at_far_{far:g}": v for far, v in tar.items()})
  out["lfw_accuracy"], out["lfw_accuracy_std"] = _brute_lfw(scores, same, fold)
  out["num_pairs"] = len(scores)
  return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rounded", [False, True])
def test_verification_report_matches_brute_force_and_sklearn(seed, rounded):
  from sklearn import metrics as sk_metrics  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  same = rng.random(60) < 0.5
  scores = rng.standard_normal(60) + same
  if rounded:                                   # many tied scores
    scores = np.round(scores, 1)
  fold = rng.integers(0, 5, 60)
  got = evaluators.verification_report(scores, same, fold)
  want = _brute_verification(scores.tolist(), same.tolist(), fold.tolist())
  assert got["roc_auc"] == pytest.approx(
      sk_metrics.roc_auc_score(same, scores), abs=1e-12)
  _assert_dicts_close({k: got[k] for k in want}, want, atol=1e-12)
  assert 0.0 <= got["eer"] <= 1.0
  assert set(got) == set(want) | {"eer", "best_threshold"}


def test_verification_pairs_are_balanced_valid_and_deterministic():
  y = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 9], np.int32)      # 2 and 9: singletons
  first, second, same, fold = evaluators.verification_pairs(y, num_pairs=400, folds=10,
                                                            seed=3)
  assert same.sum() == 200 and (~same).sum() == 200
  for a, b, s in zip(first, second, same):
    assert a != b
    assert (y[a] == y[b]) == s
  for f in range(10):
    assert same[fold == f].sum() == 20 and (~same[fold == f]).sum() == 20
  # Every sample of a class with a partner appears in a genuine pair; singletons never do.
  assert set(first[same]) | set(second[same]) == {0, 1, 2, 3, 4, 6, 7, 8, 9}
  again = evaluators.verification_pairs(y, num_pairs=400, folds=10, seed=3)
  other = evaluators.verification_pairs(y, num_pairs=400, folds=10, seed=4)
  assert all(np.array_equal(a, b) for a, b in zip(again, (first, second, same, fold)))
  assert not np.array_equal(other[0], first)


def test_verification_pairs_need_genuine_and_impostor_pairs():
  with pytest.raises(ValueError, match="at least two classes"):
    evaluators.verification_pairs(np.array([0, 1, 2]), num_pairs=20, folds=10)
  with pytest.raises(ValueError, match=r"num_pairs must be at least 2 \* folds = 20"):
    evaluators.verification_pairs(np.array([0, 0, 1]), num_pairs=10, folds=10)


@pytest.mark.parametrize("pattern,seed,metric", _cases())
def test_verification_evaluator_matches_brute_force(pattern, seed, metric):
  x, y = _data(pattern, seed, n=20)
  ev = evaluators.create("verification", split="s", num_pairs=60, folds=5, seed=seed,
                         metric=metric)
  got = ev.run({"s": x}, {"s": Dataset(x, y)})
  first, second, same, fold = evaluators.verification_pairs(y, num_pairs=60, folds=5,
                                                            seed=seed)
  scores = [-ref.distance(x[a], x[b], metric) for a, b in zip(first, second)]
  want = _brute_verification(scores, same.tolist(), fold.tolist())
  _assert_dicts_close({k: got[k] for k in want}, want)


def test_verification_of_separated_classes_is_perfect():
  y = np.repeat(np.arange(4), 5).astype(np.int32)
  x = (10.0 * y[:, None] + 0.01 * np.arange(20)[:, None]).astype(np.float32)
  got = evaluators.create("verification", split="s", num_pairs=100).run(
      {"s": x}, {"s": Dataset(x, y)})
  for k in ("roc_auc", "best_accuracy", "lfw_accuracy", "tar_at_far_0.001"):
    assert got[k] == 1.0, k
  assert got["eer"] == 0.0 and got["lfw_accuracy_std"] == 0.0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_verification_with_protocol_pairs_scores_exactly_those_pairs(metric):
  """pairs='protocol' uses the split's fixed pairs and folds (LFW's pairs.txt)."""
  from metric_learning.data.files import ImageFiles
  from metric_learning.data.files import VerificationPairs
  rng = np.random.default_rng(0)
  x = rng.standard_normal((9, 3)).astype(np.float32)
  y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4], np.int32)
  first = np.array([0, 2, 4, 6, 0, 1, 3, 5, 7, 8])
  second = np.array([1, 3, 5, 7, 2, 8, 6, 0, 4, 1])
  same, fold = y[first] == y[second], np.arange(10) % 5
  files = ImageFiles(np.array([f"/x/{i}.jpg" for i in range(9)]), y,
                     pairs=VerificationPairs(first, second, same, fold))
  got = evaluators.create("verification", split="t", pairs="protocol", metric=metric,
                          num_pairs=4, folds=2).run({"t": x}, {"t": files})
  scores = [-ref.distance(x[a], x[b], metric) for a, b in zip(first, second)]
  want = _brute_verification(scores, same.tolist(), fold.tolist())
  _assert_dicts_close({k: got[k] for k in want}, want)
  with pytest.raises(ValueError, match="has no fixed pairs"):
    evaluators.create("verification", split="t", pairs="protocol").run(
        {"t": x}, {"t": Dataset(x, y)})
  with pytest.raises(ValueError, match="pairs must be 'sampled' or 'protocol'"):
    evaluators.create("verification", split="t", pairs="lfw")


# ---------------------------------------------------------------------------------- reid


def _brute_reid(qx, qy, qc, gx, gy, gc, metric, ranks, distances=None):
  """CMC, AP and INP (R over the rank of the last match) by explicit loops."""
  cmc = collections.defaultdict(float)
  ap, inp, count = 0.0, 0.0, 0
  for i in range(len(qx)):
    skip = {j for j in range(len(gx)) if gy[j] == -1 or (gy[j] == qy[i] and gc[j] == qc[i])}
    if distances is None:
      ranked = _ranked(qx[i], gx, metric, skip)
    else:
      ranked = [j for j in np.argsort(distances[i], kind="stable") if j not in skip]
    rel = [gy[j] == qy[i] for j in ranked]
    r = sum(rel)
    if r == 0:
      continue
    count += 1
    hits = 0
    for rank, is_rel in enumerate(rel, start=1):
      if is_rel:
        hits += 1
        ap += hits / rank / r
        last = rank
    inp += r / last
    for k in ranks:
      cmc[k] += any(rel[:k])
  out = {f"cmc_rank_{k}": cmc[k] / count for k in ranks}
  out.update(mean_average_precision=ap / count, minp=inp / count, num_queries=count)
  return out


def _reid_case(pattern, seed):
  rng = np.random.default_rng(seed + 7)
  qx, qy = _data(pattern, seed, n=10)
  gx, gy = _gallery(pattern, seed)
  gy = np.where(rng.random(len(gy)) < 0.15, -1, gy).astype(np.int32)   # junk
  qc, gc = rng.integers(0, 3, len(qy)), rng.integers(0, 3, len(gy))
  return qx, qy, qc, gx, gy, gc


@pytest.mark.parametrize("pattern,seed,metric", _cases())
def test_reid_matches_brute_force(pattern, seed, metric):
  qx, qy, qc, gx, gy, gc = _reid_case(pattern, seed)
  ev = evaluators.create("reid", query="query", gallery="gallery", metric=metric,
                         ks=(1, 3, 5, 99))
  got = ev.run({"query": qx, "gallery": gx},
               {"query": Dataset(qx, qy, qc), "gallery": Dataset(gx, gy, gc)})
  _assert_dicts_close(got, _brute_reid(qx, qy, qc, gx, gy, gc, metric, (1, 3, 5)))


@pytest.mark.parametrize("pattern,seed,metric", [("random", 0, "euclidean"),
                                                 ("singletons", 1, "cosine"),
                                                 ("class_missing", 2, "sqeuclidean")])
def test_reid_rerank_ranks_by_the_reranked_distance(pattern, seed, metric):
  qx, qy, qc, gx, gy, gc = _reid_case(pattern, seed)
  ev = evaluators.create("reid", query="query", gallery="gallery", metric=metric,
                         ks=(1, 3), rerank=True, k1=5, k2=2, lambda_value=0.4)
  got = ev.run({"query": qx, "gallery": gx},
               {"query": Dataset(qx, qy, qc), "gallery": Dataset(gx, gy, gc)})
  d = lambda a, b: np.asarray(metrics._ranking_distances(a, b, metric), np.float64)
  reranked = ref.k_reciprocal_rerank(d(qx, gx), d(qx, qx), d(gx, gx), 5, 2, 0.4)
  _assert_dicts_close(got, _brute_reid(qx, qy, qc, gx, gy, gc, metric, (1, 3),
                                       distances=reranked))
  plain = evaluators.create("reid", query="query", gallery="gallery", metric=metric, ks=(1, 3))
  assert plain.run({"query": qx, "gallery": gx},
                   {"query": Dataset(qx, qy, qc), "gallery": Dataset(gx, gy, gc)}) != got


def test_reid_needs_cameras():
  x, y = _data("random", 0)
  ev = evaluators.create("reid", query="q", gallery="g")
  with pytest.raises(ValueError, match="reid: split 'q' has no cameras"):
    ev.run({"q": x, "g": x}, {"q": Dataset(x, y), "g": Dataset(x, y, np.zeros(len(y)))})


# ------------------------------------------------------------------------------- fewshot


def _fewshot_data(seed, classes=8, per_class=(6, 12), dim=4, noise=1.0):
  rng = np.random.default_rng(seed)
  sizes = rng.integers(per_class[0], per_class[1] + 1, classes)
  y = np.repeat(np.arange(classes) * 3, sizes).astype(np.int32)   # labels with gaps
  perm = rng.permutation(len(y))
  y = y[perm]
  x = rng.standard_normal((classes * 3, dim))[y] + noise * rng.standard_normal((len(y), dim))
  return x.astype(np.float32), y


def _brute_fewshot(x, support, query, metric):
  accuracies = []
  for e in range(support.shape[0]):
    ways = support.shape[1]
    prototypes = [np.mean([np.asarray(x[i], np.float64) for i in support[e, w]], axis=0)
                  for w in range(ways)]
    correct = total = 0
    for w in range(ways):
      for i in query[e, w]:
        d = [ref.distance(x[i], p, metric) for p in prototypes]
        correct += d.index(min(d)) == w
        total += 1
    accuracies.append(correct / total)
  mean = sum(accuracies) / len(accuracies)
  std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / len(accuracies))
  return mean, 1.96 * std / math.sqrt(len(accuracies))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_fewshot_matches_brute_force_over_the_same_episodes(seed, metric):
  x, y = _fewshot_data(seed)
  ev = evaluators.create("fewshot", split="unseen", ways=3, shots=(1, 2, 5), queries=4,
                         episodes=40, seed=seed, metric=metric)
  got = ev.run({"unseen": x}, {"unseen": Dataset(x, y)})
  want = {}
  for shots in (1, 2, 5):
    support, query = evaluators.fewshot_episodes(y, ways=3, shots=shots, queries=4,
                                                 episodes=40, seed=seed)
    want[f"3way_{shots}shot_accuracy"], want[f"3way_{shots}shot_ci95"] = _brute_fewshot(
        x, support, query, metric)
  _assert_dicts_close(got, want, atol=1e-12)


@pytest.mark.parametrize("shots", [1, 3])
def test_fewshot_episodes_are_valid_and_deterministic(shots):
  x, y = _fewshot_data(5, classes=10, per_class=(2, 10))
  queries = 4
  counts = collections.Counter(y.tolist())
  eligible = {c for c, n in counts.items() if n >= shots + queries}
  support, query = evaluators.fewshot_episodes(y, ways=4, shots=shots, queries=queries,
                                               episodes=200, seed=1)
  assert support.shape == (200, 4, shots) and query.shape == (200, 4, queries)
  drawn = set()
  for e in range(200):
    classes = []
    for w in range(4):
      row = list(support[e, w]) + list(query[e, w])
      assert len(set(row)) == len(row)                       # without replacement
      assert len({int(y[i]) for i in row}) == 1              # one class per way
      classes.append(int(y[row[0]]))
    assert len(set(classes)) == 4                            # distinct classes
    drawn |= set(classes)
  assert drawn == eligible          # small classes never drawn, every eligible one is
  again = evaluators.fewshot_episodes(y, ways=4, shots=shots, queries=queries,
                                      episodes=200, seed=1)
  other = evaluators.fewshot_episodes(y, ways=4, shots=shots, queries=queries,
                                      episodes=200, seed=2)
  assert np.array_equal(again[0], support) and np.array_equal(again[1], query)
  assert not np.array_equal(other[0], support)


def test_fewshot_on_separable_classes_is_exact():
  y = np.repeat(np.arange(7), 20).astype(np.int32)
  x = (100.0 * np.eye(7)[y] + np.random.default_rng(0).random((140, 7))).astype(np.float32)
  got = evaluators.create("fewshot", split="s").run({"s": x}, {"s": Dataset(x, y)})
  assert got == {"5way_1shot_accuracy": 1.0, "5way_1shot_ci95": 0.0,
                 "5way_5shot_accuracy": 1.0, "5way_5shot_ci95": 0.0}


def test_fewshot_interval_shrinks_with_more_episodes():
  x, y = _fewshot_data(0, classes=10, per_class=(25, 30), noise=2.0)
  data = {"s": Dataset(x, y)}
  ci = [evaluators.create("fewshot", split="s", shots=1, episodes=e).run(
      {"s": x}, data)["5way_1shot_ci95"] for e in (50, 600)]
  assert 0 < ci[1] < ci[0] / 2


def test_fewshot_fails_clearly_without_enough_classes():
  y = np.repeat(np.arange(6), [30, 30, 30, 30, 19, 5]).astype(np.int32)
  x = np.zeros((len(y), 2), np.float32)
  ev = evaluators.create("fewshot", split="unseen", shots=(1, 5), queries=15)
  # 1 shot: 5 classes have 16 samples; 5 shots: only 4 have 20.
  with pytest.raises(ValueError, match=r"fewshot: split 'unseen': 5-way 5-shot episodes "
                                       r"with 15 queries need 5 classes with at least 20 "
                                       r"samples; only 4 of 6"):
    ev.run({"unseen": x}, {"unseen": Dataset(x, y)})


def test_fewshot_600_episodes_are_fast():
  x, y = _fewshot_data(0, classes=20, per_class=(30, 40), dim=64)
  ev = evaluators.create("fewshot", split="s")   # 5-way, 1 and 5 shots, 600 episodes
  ev.run({"s": x}, {"s": Dataset(x, y)})
  start = time.perf_counter()
  ev.run({"s": x}, {"s": Dataset(x, y)})
  assert time.perf_counter() - start < 2.0       # about 0.1 s; generous on a shared CPU


# ------------------------------------------------------------------------- embed_dataset


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 10, 16])
def test_embed_dataset_compiles_once_and_matches_unbatched(batch_size):
  traces = []
  w = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)

  @jax.jit
  def embed(x):
    traces.append(x.shape)
    return jnp.tanh(x @ w) + x[:, :3]

  inputs = np.random.default_rng(1).standard_normal((10, 5)).astype(np.float32)
  got = evaluators.embed_dataset(embed, inputs, batch_size)
  assert traces == [(batch_size, 5)]             # one shape, one compile
  want = np.tanh(inputs.astype(np.float64) @ np.asarray(w, np.float64)) + inputs[:, :3]
  assert got.shape == (10, 3)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_embed_dataset_rejects_bad_batch_sizes_and_empty_inputs():
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
      evaluators.embed_dataset(lambda x: x, np.zeros((3, 1)), bad)
  with pytest.raises(ValueError, match="inputs must have at least one row"):
    evaluators.embed_dataset(lambda x: x, np.zeros((0, 1)), 2)


# ------------------------------------------------------------------ registry and results


def _small_run(name):
  """Runs every evaluator on a small set with a seen / unseen / train split."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(6), 20).astype(np.int32)
  x = (rng.standard_normal((6, 4))[y] + 0.5 * rng.standard_normal((120, 4))).astype(np.float32)
  cams = rng.integers(0, 2, 120)
  data = {"train": Dataset(x, y, cams), "test": Dataset(x[::2], y[::2], cams[::2])}
  kwargs = {"retrieval": dict(split="test", gallery="train"),
            "clustering": dict(split="test"),
            "knn": dict(query="test", gallery="train"),
            "verification": dict(split="test", num_pairs=200),
            "reid": dict(query="test", gallery="train"),
            "fewshot": dict(split="train", episodes=20)}[name]
  ev = evaluators.create(name, **kwargs)
  return ev, {s: np.asarray(data[s].inputs) for s in ev.splits}, data


def test_every_module_evaluator_is_registered():
  for module_name in MODULES:
    module = importlib.import_module(f"metric_learning.evaluators.{module_name}")
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, evaluators.Evaluator) and c.__module__ == module.__name__]
    assert len(classes) == 1, module_name
    assert classes[0].name == module_name
    assert evaluators.EVALUATORS[module_name] is classes[0]
  assert sorted(evaluators.EVALUATORS) == sorted(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_results_are_flat_json_numbers(name):
  ev, embeddings, data = _small_run(name)
  result = ev.run(embeddings, data)
  assert result and all(type(v) in (float, int) for v in result.values())
  assert not any(k.startswith(name) for k in result)    # the trainer adds the prefix
  json.dumps(result)


@pytest.mark.parametrize("name", MODULES)
def test_non_finite_embeddings_give_nan_and_a_warning(name):
  ev, embeddings, data = _small_run(name)
  good = ev.run(embeddings, data)
  split = ev.splits[0]
  embeddings[split] = embeddings[split].copy()
  embeddings[split][3, 1] = np.nan
  with pytest.warns(UserWarning, match=f"{name}: embeddings of split\\(s\\) '{split}'"):
    bad = ev.run(embeddings, data)
  assert sorted(bad) == sorted(good)
  for k, v in bad.items():
    assert v == good[k] if k.startswith("num_") else math.isnan(v), k


def test_unknown_evaluator_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown evaluator 'nope'; the evaluator names are "
                                       "clustering, fewshot, knn, reid, retrieval, verification"):
    evaluators.create("nope")
  with pytest.raises(ValueError, match="unknown evaluator 'retreival'; did you mean 'retrieval'"):
    evaluators.create("retreival")


def test_bad_argument_names_the_field_and_the_evaluator():
  with pytest.raises(ValueError, match=r"evals.foo is not an argument of evaluator 'knn'; its "
                                       r"arguments are \['gallery', 'ks', 'metric', 'query'\]"):
    evaluators.create("knn", query="a", gallery="b", foo=1)
  with pytest.raises(ValueError, match="evals.split is required by evaluator 'retrieval'"):
    evaluators.create("retrieval", ks=(1,))


@pytest.mark.parametrize("name,kwargs,field", [
    ("retrieval", dict(split="a", metric="manhattan"), "metric"),
    ("retrieval", dict(split="a", ks=(1, 0)), "ks"),
    ("knn", dict(query="a", gallery="b", ks=()), "ks"),
    ("knn", dict(query="", gallery="b"), "query"),
    ("clustering", dict(split="a", seed=-1), "seed"),
    ("verification", dict(split="a", num_pairs=10, folds=10), "folds"),
    ("reid", dict(ks="1"), "ks"),
    ("reid", dict(rerank="yes"), "rerank"),
    ("reid", dict(rerank=True, metric="dot"), "rerank"),
    ("reid", dict(k1=0), "k1"),
    ("reid", dict(lambda_value=2), "lambda_value"),
    ("fewshot", dict(split="a", ways=0), "ways"),
    ("fewshot", dict(split="a", shots=(1, 2.5)), "shots"),
])
def test_bad_argument_values_name_the_argument(name, kwargs, field):
  with pytest.raises(ValueError, match=f"{name}: {field} must"):
    evaluators.create(name, **kwargs)


def test_missing_split_names_it_and_the_available_ones():
  x, y = _data("random", 0)
  ev = evaluators.create("knn", query="test", gallery="train")
  with pytest.raises(ValueError, match="knn: split 'train' is missing from embeddings; "
                                       "available: 'test', 'valid'"):
    ev.run({"test": x, "valid": x}, {"test": Dataset(x, y), "train": Dataset(x, y)})
  with pytest.raises(ValueError, match=r"must have shape \[14, dim\]; got \(13, 3\)"):
    ev.run({"test": x[1:], "train": x}, {"test": Dataset(x, y), "train": Dataset(x, y)})


def test_repr_shows_the_arguments():
  ev = evaluators.create("fewshot", split="unseen", shots=1)
  assert repr(ev) == ("FewShotEvaluator(split='unseen', ways=5, shots=(1,), queries=15, "
                      "episodes=600, seed=0, metric='euclidean')")


def test_dot_on_unit_vectors_ranks_exactly_like_cosine():
  """"dot" is a similarity ranked as the distance -x.y: on unit vectors every
  evaluator, the retrieval metrics and the index agree with cosine."""
  import metric_learning as ml
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 4)).astype(np.float32)
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  y = np.repeat(np.arange(6), 10).astype(np.int32)
  data = {"s": Dataset(u, y)}
  for name, kw in [("retrieval", dict(split="s")),
                   ("knn", dict(query="s", gallery="s", ks=(1, 5))),
                   ("verification", dict(split="s", num_pairs=200)),
                   ("fewshot", dict(split="s", ways=3, shots=(1,), queries=5, episodes=20))]:
    dot = evaluators.create(name, metric="dot", **kw).run({"s": u}, data)
    cos = evaluators.create(name, metric="cosine", **kw).run({"s": u}, data)
    for key in dot:
      if "threshold" not in key:      # thresholds are on different score scales
        assert dot[key] == pytest.approx(cos[key], abs=1e-5), (name, key)
  a = ml.index.EmbeddingIndex.create(u, y, metric="dot").search(u[:10], k=3)[0]
  b = ml.index.EmbeddingIndex.create(u, y, metric="cosine").search(u[:10], k=3)[0]
  np.testing.assert_array_equal(a, b)
