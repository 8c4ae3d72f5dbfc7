r"""k-NN search at enrollment scale: EmbeddingIndex backends, time and peak memory.

A clustered float32 gallery (default 1,000,000 × 128) and held-out queries
(default 10,000), k = 10, L2 metric. Backends: ``jax`` (exact, the reference),
``faiss-flat`` (exact), ``faiss-ivf`` and ``faiss-hnsw`` (approximate; their
recall@k against the exact neighbours is reported). ``build_s`` is the index
construction (faiss training / graph building; 0 for jax and flat is the copy),
``search_s`` the median of ``--repeats`` searches after a warm-up one. Peak
memory: each backend runs once more in a fresh subprocess that reports its own
peak resident memory (``VmHWM``) and its resident memory before the index
(``base_rss_mb``: interpreter, libraries, data).

  python -m experiments.benchmarks.search_benchmark --out=/tmp/search.json
  python -m experiments.benchmarks.search_benchmark --gallery=3000 --queries=50 --dim=16 --repeats=1
"""

from __future__ import annotations

import functools
import time

import numpy as np
from absl import app
from absl import flags

from experiments.benchmarks import harness

_GALLERY = flags.DEFINE_integer("gallery", 1_000_000, "Gallery size.")
_QUERIES = flags.DEFINE_integer("queries", 10_000, "Number of queries.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding dimension.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query.")
_METRIC = flags.DEFINE_string("metric", "euclidean", "Distance.")
_BACKENDS = flags.DEFINE_list("backends", ["jax", "faiss-flat", "faiss-ivf", "faiss-hnsw"],
                              "Backends to run.")
_NLIST = flags.DEFINE_integer("nlist", 0, "IVF cells (0: the library default).")
_NPROBE = flags.DEFINE_integer("nprobe", 16, "IVF cells searched.")
_M = flags.DEFINE_integer("M", 32, "HNSW links per node.")
_EF = flags.DEFINE_integer("ef_search", 64, "HNSW search breadth.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed searches (median).")
_MEMORY = flags.DEFINE_bool("memory", True, "Peak memory per backend (subprocesses).")
_OUT = flags.DEFINE_string("out", "search_benchmark.json", "JSON output path.")
_SINGLE = flags.DEFINE_string("single", "", "Internal: a backend for a memory run.")


def data(gallery: int, queries: int, dim: int, seed: int = 0):
  """Gallery and queries around shared cluster centres (~100 points a cluster)."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(gallery // 100, 1), dim)).astype(np.float32)
  x = np.empty((gallery, dim), np.float32)
  for start in range(0, gallery, 100_000):          # bounded temporaries
    n = min(100_000, gallery - start)
    x[start:start + n] = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal(
        (n, dim), np.float32)
  q = centres[rng.integers(0, len(centres), queries)] + 0.5 * rng.standard_normal(
      (queries, dim), np.float32)
  return x, (np.arange(gallery) // 100).astype(np.int32), q.astype(np.float32)


def _create(backend: str, x, y):
  from metric_learning import index as index_lib  # pylint: disable=import-outside-toplevel
  if backend == "jax":
    return index_lib.EmbeddingIndex.create(x, y, metric=_METRIC.value)
  kind = backend.split("-")[1]
  params = {"ivf": {"nprobe": _NPROBE.value, **({"nlist": _NLIST.value} if _NLIST.value
                                                 else {})},
            "hnsw": {"M": _M.value, "ef_search": _EF.value}}.get(kind, {})
  index = index_lib.EmbeddingIndex.create(x, y, metric=_METRIC.value, backend="faiss",
                                          faiss_index=kind, **params)
  index.search(x[:1], k=1)            # builds (trains, links) the faiss index
  return index


def _single(backend: str) -> None:
  from metric_learning import index as index_lib  # pylint: disable=import-outside-toplevel,unused-import
  if backend != "jax":
    index_lib._import_faiss()  # pylint: disable=protected-access
  x, y, q = data(_GALLERY.value, _QUERIES.value, _DIM.value)
  base = harness.rss_mb()
  _create(backend, x, y).search(q, k=_K.value)
  harness.report(peak_rss_mb=harness.peak_rss_mb(), base_rss_mb=base)


def _memory(backend: str) -> dict:
  return harness.in_fresh_process(
      "experiments.benchmarks.search_benchmark", f"--single={backend}",
      *harness.flag_args("gallery", "queries", "dim", "k", "metric", "nlist", "nprobe", "M",
                         "ef_search"))


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  import jax  # pylint: disable=import-outside-toplevel
  jax.devices()                                     # start JAX outside the timings
  x, y, q = data(_GALLERY.value, _QUERIES.value, _DIM.value)
  rows, truth = [], None
  for backend in _BACKENDS.value:
    start = time.perf_counter()
    index = _create(backend, x, y)
    build = time.perf_counter() - start
    # One backend at a time (a 1M-row index each): timed alone, after a warm-up
    # search (jit compilation).
    timings = harness.interleaved({backend: functools.partial(index.search, q, k=_K.value)},
                                  rounds=_REPEATS.value, warmup=1)
    idx, _ = timings.values[backend][-1]
    if index.exact and truth is None:
      truth = idx
    row = {"backend": backend, "exact": index.exact, "build_s": build,
           "search_s": timings.median(backend), "times_s": timings.seconds[backend]}
    if truth is not None:
      row["recall_at_k"] = float(np.mean([len(set(a) & set(b)) / _K.value
                                          for a, b in zip(idx, truth)]))
    if _MEMORY.value:
      row.update(_memory(backend))
    rows.append(row)
    del index
  print(f"gallery {_GALLERY.value} x {_DIM.value}, {_QUERIES.value} queries, k={_K.value}")
  print(harness.table(
      [("backend", "<11"), ("exact", ">5"), ("build s", ">8.2f"), ("search s", ">9.2f"),
       ("recall", ">7.3f"), ("peak MB", ">8.0f"), ("base MB", ">8.0f")],
      [[r["backend"], str(r["exact"]), r["build_s"], r["search_s"], r.get("recall_at_k"),
        r.get("peak_rss_mb"), r.get("base_rss_mb")] for r in rows]))
  harness.write_json(_OUT.value, {
      "flags": harness.flag_values("gallery", "queries", "dim", "k", "metric", "nlist",
                                   "nprobe", "M", "ef_search", "repeats"),
      "results": rows})


if __name__ == "__main__":
  app.run(main)
