r"""Retrieval / re-ID evaluation at dataset scale: time and peak memory.

Two cases, on synthetic clustered embeddings of a real benchmark's shape:

* ``retrieval`` — Stanford Online Products' test set (Oh Song et al., Deep
  Metric Learning via Lifted Structured Feature Embedding, 2016): 60,502
  embeddings of dim 128 in 11,316 classes of 2–12 images (mean ~5.35),
  leave-one-out. ``ours`` is ``ml.metrics.retrieval_metrics`` (MAP@R,
  R-precision, P@1, R@1/10/100, mAP, MRR — all exact); ``pml`` is
  pytorch-metric-learning's ``AccuracyCalculator`` with its default faiss
  ``IndexFlatL2`` k-NN, ``k="max_bin_count"`` (the smallest k that keeps MAP@R
  exact) and only ``mean_average_precision_at_r``, ``r_precision`` and
  ``precision_at_1`` — the cheapest exact configuration it has.
* ``reid`` — Market-1501's evaluation (Zheng et al., Scalable Person
  Re-identification: A Benchmark, 2015): 3,368 queries of 750 identities, a
  19,732-image gallery with distractors (id 0) and junk (id -1), 6 cameras.
  ``ours`` is ``ml.metrics.reid_metrics`` (CMC + mAP by counting ranks);
  ``ours_sort`` is the same metrics through the full per-query sort.

Times are medians of ``--repeats`` interleaved runs after one warm-up (so
compilation is excluded). Peak memory: each method runs once more in a fresh
subprocess that reports its peak resident memory (``VmHWM``: ``ru_maxrss``
would carry the parent's peak over ``fork``/``exec``; whole process:
interpreter, library, data) and its resident memory just before the call (``base_rss_mb``).

  python -m experiments.benchmarks.eval_benchmark --out=/tmp/eval.json
  python -m experiments.benchmarks.eval_benchmark --n=2000 --classes=370 --reid_queries=100 \
      --reid_gallery=600 --reid_ids=40 --repeats=1 --out=/tmp/eval.json   # smoke
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform

import numpy as np
from absl import app
from absl import flags

from experiments.benchmarks import harness

_N = flags.DEFINE_integer("n", 60502, "Retrieval: number of embeddings.")
_CLASSES = flags.DEFINE_integer("classes", 11316, "Retrieval: number of classes.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding dimension.")
_NOISE = flags.DEFINE_float("noise", 1.6, "Within-class spread (unit-norm centres).")
_REID_Q = flags.DEFINE_integer("reid_queries", 3368, "Re-ID: queries.")
_REID_G = flags.DEFINE_integer("reid_gallery", 19732, "Re-ID: gallery size.")
_REID_IDS = flags.DEFINE_integer("reid_ids", 750, "Re-ID: query identities.")
_CASES = flags.DEFINE_list("cases", ["retrieval", "reid"], "Cases to run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per method (median).")
_MEMORY = flags.DEFINE_bool("memory", True, "Peak RSS per method (fresh subprocesses).")
_CHUNK = flags.DEFINE_integer("chunk_size", 256, "Queries per block for ours.")
_OUT = flags.DEFINE_string("out", "eval_benchmark.json", "JSON output path.")
_SINGLE = flags.DEFINE_string("single", "", "Internal: 'case:method' for a memory run.")

_PML_KEYS = {"map_at_r": "mean_average_precision_at_r", "r_precision": "r_precision",
             "precision_at_1": "precision_at_1"}


def _sizes(rng, n: int, classes: int, low: int = 2, high: int = 12) -> np.ndarray:
  """Class sizes in [low, high] summing to n, skewed to small like SOP's."""
  if not low * classes <= n <= high * classes:
    raise ValueError(f"n={n} cannot be split into {classes} classes of {low}..{high}.")
  p = (n / classes - low) / (high - low)
  sizes = low + rng.binomial(high - low, min(max(p, 0.0), 1.0), classes)
  while (gap := n - sizes.sum()) != 0:   # nudge random classes until the total is n
    step = np.sign(gap)
    movable = np.flatnonzero((sizes < high) if step > 0 else (sizes > low))
    pick = rng.choice(movable, min(abs(gap), len(movable)), replace=False)
    sizes[pick] += step
  return sizes


def _clustered(rng, labels: np.ndarray, dim: int, noise: float) -> np.ndarray:
  centres = rng.standard_normal((labels.max() + 2, dim)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  x = centres[labels + 1] + noise / np.sqrt(dim) * rng.standard_normal(
      (len(labels), dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def retrieval_data(n: int, classes: int, dim: int, noise: float, seed: int = 0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(classes), _sizes(rng, n, classes)).astype(np.int32)
  return _clustered(rng, y, dim, noise), y


def reid_data(queries: int, gallery: int, ids: int, dim: int, noise: float, seed: int = 1):
  """Market-1501-like: ids 1..ids, distractors 0 (~14%) and junk -1 (~19%) in the gallery."""
  rng = np.random.default_rng(seed)
  distractors, junk = int(0.142 * gallery), int(0.194 * gallery)
  real = gallery - distractors - junk
  g_ids = np.concatenate([np.repeat(np.arange(1, ids + 1),
                                    _sizes(rng, real, ids, 2, 4 * real // ids)),
                          np.zeros(distractors, int), -np.ones(junk, int)]).astype(np.int32)
  every = np.arange(1, min(ids, queries) + 1)                      # every id queried
  q_ids = np.sort(np.concatenate([every, rng.integers(1, ids + 1, queries - len(every))]))
  q_ids = q_ids.astype(np.int32)
  g_cam = rng.integers(1, 7, gallery).astype(np.int32)
  q_cam = rng.integers(1, 7, queries).astype(np.int32)
  x = _clustered(rng, np.concatenate([q_ids, g_ids]), dim, noise)
  return x[:queries], q_ids, q_cam, x[queries:], g_ids, g_cam


def _runner(case: str, method: str):
  """(data builder, function of the data returning a flat dict of floats)."""
  if case == "retrieval":
    data = lambda: retrieval_data(_N.value, _CLASSES.value, _DIM.value, _NOISE.value)
    if method == "ours":
      import metric_learning as ml  # pylint: disable=import-outside-toplevel
      return data, lambda x, y: ml.metrics.retrieval_metrics(
          x, y, ks=(1, 10, 100), chunk_size=_CHUNK.value)
    if method == "pml":
      import torch  # pylint: disable=import-outside-toplevel
      from pytorch_metric_learning.utils import accuracy_calculator  # pylint: disable=import-outside-toplevel
      calc = accuracy_calculator.AccuracyCalculator(
          include=tuple(_PML_KEYS.values()), k="max_bin_count", device=torch.device("cpu"))

      def pml(x, y):
        got = calc.get_accuracy(x, y)
        return {ours: float(got[theirs]) for ours, theirs in _PML_KEYS.items()}
      return data, pml
  if case == "reid" and method in ("ours", "ours_sort"):
    import metric_learning as ml  # pylint: disable=import-outside-toplevel
    from metric_learning import metrics  # pylint: disable=import-outside-toplevel
    data = lambda: reid_data(_REID_Q.value, _REID_G.value, _REID_IDS.value, _DIM.value,
                             _NOISE.value)

    def reid(*arrays):
      saved = metrics._MAX_COUNTED_SLOTS  # pylint: disable=protected-access
      metrics._MAX_COUNTED_SLOTS = -1 if method == "ours_sort" else saved  # pylint: disable=protected-access
      try:
        return ml.metrics.reid_metrics(*arrays, ks=(1, 5, 10), chunk_size=_CHUNK.value)
      finally:
        metrics._MAX_COUNTED_SLOTS = saved  # pylint: disable=protected-access
    return data, reid
  raise ValueError(f"unknown case:method {case}:{method}")


def _methods(case: str) -> list[str]:
  if case == "retrieval":
    have = all(importlib.util.find_spec(m) for m in ("faiss", "pytorch_metric_learning"))
    return ["ours", "pml"] if have else ["ours"]
  return ["ours", "ours_sort"]


def _single(spec: str) -> None:
  case, method = spec.split(":")
  build, fn = _runner(case, method)
  arrays = build()
  base = harness.rss_mb()
  fn(*arrays)
  harness.report(peak_rss_mb=harness.peak_rss_mb(), base_rss_mb=base)


def _memory(case: str, method: str) -> dict:
  return harness.in_fresh_process(
      "experiments.benchmarks.eval_benchmark", f"--single={case}:{method}",
      *harness.flag_args("n", "classes", "dim", "noise", "reid_queries", "reid_gallery",
                         "reid_ids", "chunk_size"))


def run_case(case: str) -> list[dict]:
  methods = _methods(case)
  runners = {m: _runner(case, m) for m in methods}
  arrays = runners[methods[0]][0]()
  timings = harness.interleaved(
      {m: functools.partial(fn, *arrays) for m, (_, fn) in runners.items()},
      rounds=_REPEATS.value, warmup=1)
  values = {m: timings.values[m][-1] for m in methods}
  rows = []
  for m in methods:
    row = {"case": case, "method": m, "median_s": timings.median(m),
           "times_s": timings.seconds[m], "values": values[m]}
    common = [k for k in values[m] if k in values[methods[0]] and k != "num_queries"]
    row["max_abs_diff_vs_ours"] = max(abs(values[m][k] - values[methods[0]][k])
                                      for k in common)
    if _MEMORY.value:
      row.update(_memory(case, m))
    rows.append(row)
  return rows


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  rows = [row for case in _CASES.value for row in run_case(case)]
  print(harness.table(
      [("case", "<10"), ("method", "<10"), ("median s", ">9.2f"), ("peak MB", ">8.0f"),
       ("base MB", ">8.0f"), ("max|Δ|", ">8.1e"), (" values", "")],
      [[r["case"], r["method"], r["median_s"], r.get("peak_rss_mb"), r.get("base_rss_mb"),
        r["max_abs_diff_vs_ours"], f" {({k: round(v, 4) for k, v in r['values'].items()})}"]
       for r in rows]))
  harness.write_json(_OUT.value, {
      "flags": harness.flag_values("n", "classes", "dim", "noise", "reid_queries",
                                   "reid_gallery", "reid_ids", "repeats", "chunk_size"),
      "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
      "results": rows})


if __name__ == "__main__":
  app.run(main)
