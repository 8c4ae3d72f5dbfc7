"""EmbeddingIndex: the jax reference, the faiss backends against it, save/load/add,
the encoder's identity (``model``)."""

import builtins
import os
import subprocess
import sys

import numpy as np
import pytest
import reference as ref

import metric_learning as ml
from metric_learning import index as index_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["euclidean", "sqeuclidean", "cosine", "dot"]


def _random(n=300, q=40, dim=16, seed=0):
  """Continuous Gaussian data: no two distances tie."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, dim)).astype(np.float32)
  return x, rng.integers(0, 20, n), rng.standard_normal((q, dim)).astype(np.float32)


def _clustered(n=4000, q=200, dim=32, classes=100, seed=1):
  rng = np.random.default_rng(seed)
  centres = 3 * rng.standard_normal((classes, dim))
  y = rng.integers(0, classes, n)
  x = (centres[y] + rng.standard_normal((n, dim))).astype(np.float32)
  queries = (centres[rng.integers(0, classes, q)] + rng.standard_normal((q, dim)))
  return x, y, queries.astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
def test_jax_search_matches_brute_force_including_gallery_blocks(metric):
  x, y, q = _random()
  index = index_lib.EmbeddingIndex.create(x, y, metric=metric)
  want = ref.distance_matrix(q, x, metric)
  for block in (300, 64, 7):                 # one block, several, a ragged last one
    idx, dist = index.search(q, k=5, chunk_size=16, gallery_block=block)
    np.testing.assert_array_equal(idx, np.argsort(want, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(dist, np.take_along_axis(want, idx, 1), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_leave_one_out_search_matches_brute_force_and_compiles_once(metric):
  # exclude_self: row i never finds itself; the last block of queries is padded,
  # so one compiled search serves every block, ragged last one included.
  x, y, _ = _random(n=53)
  index = index_lib.EmbeddingIndex.create(x, y, metric=metric)
  want = ref.distance_matrix(x, x, metric)
  np.fill_diagonal(want, np.inf)
  index_lib._top_k.clear_cache()  # pylint: disable=protected-access
  for block in (53, 8):
    idx, dist = index.search(x, k=6, exclude_self=True, chunk_size=10, gallery_block=block)
    np.testing.assert_array_equal(idx, np.argsort(want, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(dist, np.take_along_axis(want, idx, 1), rtol=1e-4, atol=1e-4)
  assert index_lib._top_k._cache_size() == 2   # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"k must be in \[1, 52\].*leave-one-out"):
    index.search(x, k=53, exclude_self=True)
  with pytest.raises(ValueError, match="exclude_self=True searches the index's own rows"):
    index.search(x[:5], k=2, exclude_self=True)


def test_majority_vote_reference_with_missing_neighbours():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, (200, 7))
  found = rng.random((200, 7)) < 0.7
  found[:, 0] |= ~found.any(axis=1)
  got = index_lib.majority_vote(labels, found)
  for row, ok, pred in zip(labels, found, got):
    kept = [int(v) for v, f in zip(row, ok) if f]
    counts = {v: kept.count(v) for v in kept}
    best = max(counts.values())
    assert pred == next(v for v in kept if counts[v] == best)   # nearest of the most frequent
  with pytest.raises(ValueError, match="no neighbour"):
    index_lib.majority_vote(labels[:1], np.zeros((1, 7), bool))


def test_jax_search_breaks_ties_by_gallery_index_across_blocks():
  x = np.zeros((10, 2), np.float32)          # every distance ties
  index = index_lib.EmbeddingIndex.create(x, np.arange(10))
  idx, _ = index.search(np.zeros((1, 2)), k=4, gallery_block=3)
  assert idx.tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("metric", METRICS)
def test_exact_faiss_equals_jax(metric):
  pytest.importorskip("faiss")
  x, y, q = _random()
  jax_index = index_lib.EmbeddingIndex.create(x, y, metric=metric)
  faiss_index = index_lib.EmbeddingIndex.create(x, y, metric=metric, backend="faiss")
  assert faiss_index.exact and jax_index.exact
  i_jax, d_jax = jax_index.search(q, k=10)
  i_faiss, d_faiss = faiss_index.search(q, k=10)
  np.testing.assert_array_equal(i_faiss, i_jax)
  np.testing.assert_allclose(d_faiss, d_jax, atol=1e-5 * max(1.0, np.abs(d_jax).max()))
  np.testing.assert_array_equal(faiss_index.predict(q, k=3), jax_index.predict(q, k=3))


@pytest.mark.parametrize("kind,params", [("ivf", {"nlist": 32, "nprobe": 8}),
                                         ("hnsw", {"M": 16, "ef_search": 64})])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_faiss_finds_most_true_neighbours(kind, params, metric):
  pytest.importorskip("faiss")
  x, y, q = _clustered()
  truth, _ = index_lib.EmbeddingIndex.create(x, y, metric=metric).search(q, k=10)
  approx = index_lib.EmbeddingIndex.create(x, y, metric=metric, backend="faiss",
                                           faiss_index=kind, **params)
  assert not approx.exact
  got, dist = approx.search(q, k=10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
  assert recall >= 0.9, recall
  assert np.all(np.diff(dist, axis=1) >= -1e-6)          # sorted nearest first


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_add_save_load_predict_names(kind, tmp_path):
  pytest.importorskip("faiss")
  x, y, q = _clustered(n=800, q=20, classes=10)
  params = {"ivf": {"nlist": 8, "nprobe": 8}, "hnsw": {"M": 8}}.get(kind, {})
  index = index_lib.EmbeddingIndex.create(x, y, backend="faiss", faiss_index=kind,
                                          names={0: "zero"}, **params)
  index.search(q[:2], k=1)                                 # builds the faiss index
  new = np.full((3, x.shape[1]), 50.0, np.float32)
  bigger = index.add(new, [99, 99, 99], names={99: "new"})
  assert len(bigger) == len(index) + 3 and len(index) == 800       # the old one unchanged
  assert bigger.predict_names(new[:1] + 0.1, k=3) == ["new"]
  path = str(tmp_path / "index.npz")
  bigger.save(path)
  loaded = index_lib.EmbeddingIndex.load(path)
  assert (loaded.backend, loaded.faiss_index, loaded.faiss_params) == (
      "faiss", kind, bigger.faiss_params)
  np.testing.assert_array_equal(loaded.predict(q, k=5), bigger.predict(q, k=5))
  assert loaded.names == {0: "zero", 99: "new"}


def test_jax_backend_save_load_keeps_working(tmp_path):
  x, y, q = _random()
  index = index_lib.EmbeddingIndex.create(x, y, metric="cosine")
  path = str(tmp_path / "i.npz")
  index.save(path)
  loaded = index_lib.EmbeddingIndex.load(path)
  assert loaded.backend == "jax" and loaded.metric == "cosine"
  np.testing.assert_array_equal(loaded.search(q, k=3)[0], index.search(q, k=3)[0])


def test_model_identity_is_saved_loaded_and_kept_by_add(tmp_path):
  x, y, q = _random(n=20, q=3)
  model = {"config_sha256": "ab" * 32, "step": 6, "workdir": "/runs/a"}
  index = index_lib.EmbeddingIndex.create(x, y, names={0: "zero"}, model=model)
  assert index.model == model
  bigger = index.add(q, [1, 2, 3])
  assert bigger.model == model
  path = str(tmp_path / "i.npz")
  bigger.save(path)
  loaded = index_lib.EmbeddingIndex.load(path)
  assert loaded.model == model and loaded.names == {0: "zero"}
  np.testing.assert_array_equal(loaded.labels, bigger.labels)
  model["step"] = 7                                     # the index holds its own copy
  assert index.model["step"] == 6
  # No identity: None, saved and loaded as None.
  plain = index_lib.EmbeddingIndex.create(x, y)
  assert plain.model is None and plain.add(q, [1, 2, 3]).model is None
  plain.save(path)
  assert index_lib.EmbeddingIndex.load(path).model is None


def test_an_index_saved_before_model_identities_loads_with_none(tmp_path):
  """The format before ``model`` existed (no ``model`` array) still loads."""
  x, y, q = _random(n=20, q=3)
  path = str(tmp_path / "old.npz")
  np.savez(path, embeddings=x, labels=y, metric=np.asarray("euclidean"),
           names=np.asarray('{"0": "zero"}'), options=np.asarray(
               '{"backend": "jax", "faiss_index": "flat"}'))
  loaded = index_lib.EmbeddingIndex.load(path)
  assert loaded.model is None and loaded.names == {0: "zero"}
  np.testing.assert_array_equal(loaded.predict(q), index_lib.EmbeddingIndex.create(
      x, y).predict(q))


def test_a_model_that_is_not_a_json_dict_names_the_argument():
  x = np.zeros((2, 2))
  with pytest.raises(TypeError, match=r"^model must be a dict .* got str"):
    index_lib.EmbeddingIndex.create(x, [0, 1], model="run-a")
  with pytest.raises(TypeError, match=r"^model must hold only JSON values"):
    index_lib.EmbeddingIndex.create(x, [0, 1], model={"step": object()})


def test_missing_faiss_says_how_to_install(monkeypatch):
  real_import = builtins.__import__

  def no_faiss(name, *args, **kwargs):
    if name == "faiss":
      raise ImportError("No module named 'faiss'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_faiss)
  with pytest.raises(ImportError, match=r"pip install faiss-cpu.*metric-learning-jax\[faiss\]"):
    index_lib.EmbeddingIndex.create(np.zeros((2, 2)), [0, 1], backend="faiss")


def test_bad_backend_arguments_name_themselves():
  x = np.zeros((4, 2))
  with pytest.raises(ValueError, match="backend"):
    index_lib.EmbeddingIndex.create(x, [0, 1, 2, 3], backend="annoy")
  with pytest.raises(ValueError, match="faiss_index"):
    index_lib.EmbeddingIndex.create(x, [0, 1, 2, 3], faiss_index="lsh")
  with pytest.raises(ValueError, match="nprobe"):
    index_lib.EmbeddingIndex.create(x, [0, 1, 2, 3], nprobe=4)        # jax has none
  pytest.importorskip("faiss")
  with pytest.raises(ValueError, match=r"\['M'\].*known: \['nlist', 'nprobe'\]"):
    index_lib.EmbeddingIndex.create(x, [0, 1, 2, 3], backend="faiss", faiss_index="ivf",
                                    M=8)


@pytest.mark.slow
def test_search_benchmark_smoke(tmp_path):
  pytest.importorskip("faiss")
  out = tmp_path / "search.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.search_benchmark", "--gallery=3000",
       "--queries=50", "--dim=16", "--k=5", "--repeats=1", f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "faiss-flat" in proc.stdout and "jax" in proc.stdout
  assert ml.index is index_lib
