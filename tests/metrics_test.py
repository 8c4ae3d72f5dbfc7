"""Retrieval / re-ID / verification metrics against brute-force loops and scikit-learn."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import reference as ref

import metric_learning as ml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["count", "sort"])
def ranking(request, monkeypatch):
  """Runs a test through both paths: counting ranks, and sorting every row."""
  if request.param == "sort":
    monkeypatch.setattr(ml.metrics, "_MAX_COUNTED_SLOTS", -1)
  return request.param


def _brute_retrieval(q, qy, g, gy, same_set, ks, metric="euclidean"):
  out = {k: [] for k in ["precision_at_1", "r_precision", "map_at_r",
                         "mean_average_precision", "mrr"] + [f"recall_at_{k}" for k in ks]}
  for i in range(len(q)):
    d = [(ref.distance(q[i], g[j], metric), j) for j in range(len(g))
         if not (same_set and j == i)]
    d.sort()
    rel = [gy[j] == qy[i] for _, j in d]
    r = sum(rel)
    if r == 0:
      continue
    prec = [sum(rel[:n + 1]) / (n + 1) for n in range(len(rel))]
    out["precision_at_1"].append(float(rel[0]))
    out["r_precision"].append(sum(rel[:r]) / r)
    out["map_at_r"].append(sum(p for p, t in zip(prec[:r], rel[:r]) if t) / r)
    out["mean_average_precision"].append(sum(p for p, t in zip(prec, rel) if t) / r)
    out["mrr"].append(1.0 / (rel.index(True) + 1))
    for k in ks:
      out[f"recall_at_{k}"].append(float(any(rel[:k])))
  return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("same_set", [True, False])
@pytest.mark.parametrize("chunk_size", [3, 256])
def test_retrieval_metrics_match_brute_force(same_set, chunk_size, ranking):
  rng = np.random.default_rng(0)
  q = rng.standard_normal((23, 4)).astype(np.float32)
  qy = rng.integers(0, 5, 23)
  qy[0] = 99                                             # a query with nothing relevant
  g = q if same_set else rng.standard_normal((17, 4)).astype(np.float32)
  gy = qy if same_set else rng.integers(0, 5, 17)
  kwargs = {} if same_set else dict(gallery_embeddings=g, gallery_labels=gy)
  got = ml.metrics.retrieval_metrics(q, qy, ks=(1, 4), chunk_size=chunk_size, **kwargs)
  want = _brute_retrieval(q, qy, g, gy, same_set, (1, 4))
  for k, v in want.items():
    assert got[k] == pytest.approx(v, abs=1e-6), k
  assert got["num_queries"] == (22 if same_set else sum(1 for y in qy if y in set(gy)))


def test_mean_average_precision_matches_sklearn():
  from sklearn.metrics import average_precision_score
  rng = np.random.default_rng(1)
  q, g = rng.standard_normal((8, 3)), rng.standard_normal((30, 3))
  qy, gy = rng.integers(0, 3, 8), rng.integers(0, 3, 30)
  got = ml.metrics.retrieval_metrics(q, qy, gallery_embeddings=g, gallery_labels=gy)
  aps = [average_precision_score(gy == qy[i], -np.linalg.norm(g - q[i], axis=1))
         for i in range(8)]
  assert got["mean_average_precision"] == pytest.approx(np.mean(aps), abs=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "dot"])   # exact in float32
@pytest.mark.parametrize("same_set", [True, False])
def test_retrieval_with_exact_ties_and_uneven_classes_matches_brute_force(
    metric, same_set, ranking):
  # Small integer points: distances are exact, so many exact ties (duplicates
  # at distance 0 included) must be broken by gallery index, as a stable sort
  # does. Class sizes 1..9 put queries in several slot buckets.
  rng = np.random.default_rng(7)
  sizes = [1, 2, 2, 3, 5, 9, 1, 4]
  qy = np.repeat(np.arange(len(sizes)), sizes)
  q = rng.integers(-2, 3, (len(qy), 3)).astype(np.float32)
  g = q if same_set else rng.integers(-2, 3, (31, 3)).astype(np.float32)
  gy = qy if same_set else rng.integers(0, 9, 31)
  kwargs = {} if same_set else dict(gallery_embeddings=g, gallery_labels=gy)
  ks = (1, 3, 10)
  got = ml.metrics.retrieval_metrics(q, qy, metric=metric, ks=ks, chunk_size=4, **kwargs)
  want = _brute_retrieval(q, qy, g, gy, same_set, ks, metric)
  for k, v in want.items():
    assert got[k] == pytest.approx(v, abs=1e-6), k


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "dot"])   # dot: negative keys
def test_counting_and_sorting_paths_agree(metric, monkeypatch):
  rng = np.random.default_rng(8)
  y = rng.integers(0, 40, 300)
  x = (rng.standard_normal((40, 8))[y] + rng.standard_normal((300, 8))).astype(np.float32)
  x[1::7] = x[::7][:len(x[1::7])]   # duplicates across labels: ties broken by index
  monkeypatch.setattr(ml.metrics, "_GALLERY_TILE", 64)     # 5 tiles, the last one padded
  counted = ml.metrics.retrieval_metrics(x, y, metric=metric, ks=(1, 10, 100), chunk_size=64)
  monkeypatch.setattr(ml.metrics, "_MAX_COUNTED_SLOTS", -1)
  assert ml.metrics.retrieval_metrics(x, y, metric=metric, ks=(1, 10, 100),
                                      chunk_size=64) == pytest.approx(counted, abs=1e-6)


def test_retrieval_matches_pytorch_metric_learning_accuracy_calculator():
  pytest.importorskip("faiss")
  torch = pytest.importorskip("torch")
  accuracy_calculator = pytest.importorskip(
      "pytorch_metric_learning.utils.accuracy_calculator")
  rng = np.random.default_rng(9)
  y = np.repeat(np.arange(60), rng.integers(2, 13, 60))
  x = rng.standard_normal((60, 16))[y] + 0.8 * rng.standard_normal((len(y), 16))
  x = x.astype(np.float32)                           # continuous: no distance ties
  keys = {"map_at_r": "mean_average_precision_at_r", "r_precision": "r_precision",
          "precision_at_1": "precision_at_1"}
  calc = accuracy_calculator.AccuracyCalculator(
      include=tuple(keys.values()), k="max_bin_count", device=torch.device("cpu"))
  theirs = calc.get_accuracy(x, y)                   # reference = query, self excluded
  ours = ml.metrics.retrieval_metrics(x, y)
  for k, v in keys.items():
    assert ours[k] == pytest.approx(theirs[v], abs=1e-6), k


@pytest.mark.slow
def test_eval_benchmark_smoke(tmp_path):
  out = tmp_path / "eval.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.eval_benchmark", "--n=300", "--classes=56",
       "--dim=8", "--reid_queries=30", "--reid_gallery=200", "--reid_ids=12",
       "--repeats=1", "--chunk_size=64", f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())["results"]
  methods = {(r["case"], r["method"]) for r in rows}
  assert {("retrieval", "ours"), ("reid", "ours"), ("reid", "ours_sort")} <= methods
  for r in rows:
    assert r["median_s"] > 0 and r["peak_rss_mb"] > 0
    assert r["max_abs_diff_vs_ours"] < 1e-6, r      # pml and the sort path agree


def test_reid_protocol_ignores_same_camera_matches_and_junk(ranking):
  rng = np.random.default_rng(2)
  q, g = rng.standard_normal((6, 3)), rng.standard_normal((20, 3))
  qid, qcam = rng.integers(1, 4, 6), rng.integers(0, 3, 6)
  gid, gcam = rng.integers(-1, 4, 20), rng.integers(0, 3, 20)
  got = ml.metrics.reid_metrics(q, qid, qcam, g, gid, gcam, ks=(1, 5))
  cmc1, cmc5, aps, inps = [], [], [], []
  for i in range(6):
    keep = [j for j in range(20)
            if gid[j] != -1 and not (gid[j] == qid[i] and gcam[j] == qcam[i])]
    keep.sort(key=lambda j: np.linalg.norm(g[j] - q[i]))
    rel = [gid[j] == qid[i] for j in keep]
    if not any(rel):
      continue
    cmc1.append(any(rel[:1]))
    cmc5.append(any(rel[:5]))
    hits = np.cumsum(rel)
    aps.append(np.mean([hits[n] / (n + 1) for n in range(len(rel)) if rel[n]]))
    inps.append(sum(rel) / (1 + max(n for n in range(len(rel)) if rel[n])))
  assert got["num_queries"] == len(aps)
  assert got["minp"] == pytest.approx(np.mean(inps), abs=1e-6)
  assert got["cmc_rank_1"] == pytest.approx(np.mean(cmc1))
  assert got["cmc_rank_5"] == pytest.approx(np.mean(cmc5))
  assert got["mean_average_precision"] == pytest.approx(np.mean(aps), abs=1e-6)


def test_verification_metrics_match_sklearn_roc():
  from sklearn.metrics import roc_auc_score
  from sklearn.metrics import roc_curve
  rng = np.random.default_rng(3)
  same = rng.random(200) < 0.4
  scores = rng.standard_normal(200) + 1.5 * same
  got = ml.metrics.verification_metrics(scores, same)
  fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
  np.testing.assert_allclose(got["roc_fpr"], fpr)
  np.testing.assert_allclose(got["roc_tpr"], tpr)
  assert np.trapezoid(got["roc_tpr"], got["roc_fpr"]) == pytest.approx(
      roc_auc_score(same, scores))
  thresholds = np.unique(scores)
  acc = max(np.mean((scores >= t) == same) for t in thresholds)
  assert got["best_accuracy"] == pytest.approx(max(acc, np.mean(~same)))
  for far in (0.01, 0.1):
    assert got[f"tar_at_far_{far:g}"] == pytest.approx(tpr[fpr <= far].max())
  assert 0 < got["eer"] < 0.5
  with pytest.raises(ValueError, match="genuine"):
    ml.metrics.verification_metrics([1.0, 2.0], [True, True])


def test_clustering_metrics_match_sklearn_on_separated_clusters():
  x = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 10.0)])
  assert ml.metrics.clustering_metrics(x, [0] * 5 + [1] * 5) == {"nmi": 1.0, "ami": 1.0}


def test_bad_metric_inputs():
  with pytest.raises(ValueError, match="labels"):
    ml.metrics.retrieval_metrics(np.zeros((3, 2)), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="gallery_embeddings"):
    ml.metrics.retrieval_metrics(np.zeros((3, 2)), np.zeros(3, np.int32),
                                 gallery_embeddings=np.zeros((4, 3)),
                                 gallery_labels=np.zeros(4, np.int32))
