"""Mask miners (pair margin, triplet margin, multi-similarity) and the "dot" metric."""

import functools

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.test_util import check_grads

import metric_learning as ml
from metric_learning import _kernels
from metric_learning import distances as distances_lib
from metric_learning import mining

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

TYPES = ("all", "hard", "semihard", "easy")


def _where(w, batch):
  return jnp.ones(batch, bool) if w is None else jnp.asarray(w)


# --------------------------------------------------------------------------- #
# Against explicit loops.
# --------------------------------------------------------------------------- #


def test_pair_margin_matches_loops():
  fn = jax.jit(functools.partial(mining.pair_margin, pos_margin=0.9, neg_margin=1.6))
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = ref.Setup(x, y, w), ref.distance_matrix(x, x, "euclidean")
    got = fn(ml.pairwise_distances(x), y, where=_where(w, batch))
    assert got.positive.shape == got.negative.shape == (batch, batch)
    want_p, want_n = np.zeros((batch, batch), bool), np.zeros((batch, batch), bool)
    for i in range(batch):
      for j in s.positives(i):
        want_p[i, j] = d[i, j] > 0.9
      for k in s.negatives(i):
        want_n[i, k] = d[i, k] < 1.6
    np.testing.assert_array_equal(got.positive, want_p, strict=True)
    np.testing.assert_array_equal(got.negative, want_n, strict=True)


@pytest.mark.parametrize("kind", TYPES)
def test_triplet_margin_matches_loops(kind):
  fn = jax.jit(functools.partial(mining.triplet_margin, margin=0.5, type=kind))
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = ref.Setup(x, y, w), ref.distance_matrix(x, x, "euclidean")
    got = fn(ml.pairwise_distances(x), y, where=_where(w, batch))
    want = np.zeros((batch,) * 3, bool)
    for i in range(batch):
      for j in s.positives(i):
        for k in s.negatives(i):
          g = d[i, k] - d[i, j]
          want[i, j, k] = {"all": g <= 0.5, "hard": g <= 0, "semihard": 0 < g <= 0.5,
                           "easy": g > 0.5}[kind]
    np.testing.assert_array_equal(got.mask, want, strict=True)
    np.testing.assert_array_equal(got.num_triplets, want.sum((1, 2)).astype(np.int32),
                                  strict=True)


def test_triplet_types_partition_the_triplets():
  x, y, w = cases.make("padding", 12, 5)
  d = ml.pairwise_distances(x)
  masks = {t: np.asarray(mining.triplet_margin(d, y, margin=0.4, type=t,
                                                    where=jnp.asarray(w)).mask)
           for t in TYPES}
  np.testing.assert_array_equal(masks["hard"] | masks["semihard"], masks["all"])
  assert not np.any(masks["hard"] & masks["semihard"]) and not np.any(
      masks["all"] & masks["easy"])
  np.testing.assert_array_equal(masks["all"] | masks["easy"],
                                np.asarray(ml.triplet_mask(y, where=jnp.asarray(w))))


def test_multi_similarity_pairs_matches_loops():
  fn = jax.jit(functools.partial(mining.multi_similarity_pairs, epsilon=0.3))
  for _, batch, _, x, y, w in cases.all_cases():
    s = ref.Setup(x, y, w)
    sim = 1.0 - ref.distance_matrix(x, x, "cosine")
    got = fn(1.0 - ml.pairwise_distances(x, metric="cosine"), y, where=_where(w, batch))
    want_p, want_n = np.zeros((batch, batch), bool), np.zeros((batch, batch), bool)
    for i in range(batch):
      pos, neg = s.positives(i), s.negatives(i)
      if not pos or not neg:
        continue
      for j in pos:
        want_p[i, j] = sim[i, j] - 0.3 < max(sim[i, k] for k in neg)
      for k in neg:
        want_n[i, k] = sim[i, k] + 0.3 > min(sim[i, j] for j in pos)
    np.testing.assert_array_equal(got.positive, want_p, strict=True)
    np.testing.assert_array_equal(got.negative, want_n, strict=True)


def test_input_errors_name_the_argument():
  d, y = jnp.zeros((4, 4)), jnp.array([0, 0, 1, 1])
  with pytest.raises(ValueError, match="type must be one of"):
    mining.triplet_margin(d, y, type="medium")
  with pytest.raises(ValueError, match="distances must be a square"):
    mining.pair_margin(jnp.zeros((4, 3)), y)
  with pytest.raises(ValueError, match="labels must have shape \\[4\\]"):
    mining.multi_similarity_pairs(d, jnp.array([0, 1, 1]))
  with pytest.raises(ValueError, match="epsilon must be non-negative"):
    mining.multi_similarity_pairs(d, y, epsilon=-0.1)


def test_global_batch_under_pmap_equals_one_device():
  n = 8
  x, y, _ = cases.make("pk", 2 * n, 3, seed=2)
  w = np.ones(2 * n, bool)
  w[[3, 8]] = False
  d, s = ml.pairwise_distances(x), 1.0 - ml.pairwise_distances(x, metric="cosine")
  shard = lambda a: a.reshape((n, -1) + a.shape[1:])

  @functools.partial(jax.pmap, axis_name="data")
  def step(ds, ss, ys, ws):
    kw = dict(where=ws, axis_name="data")
    return (mining.pair_margin(ds, ys, pos_margin=1.0, neg_margin=2.0, **kw),
            mining.triplet_margin(ds, ys, margin=0.5, **kw),
            mining.multi_similarity_pairs(ss, ys, **kw))

  pm, tm, ms = step(shard(d), shard(s), shard(y), shard(w))
  one = (mining.pair_margin(d, y, pos_margin=1.0, neg_margin=2.0, where=w),
         mining.triplet_margin(d, y, margin=0.5, where=w),
         mining.multi_similarity_pairs(s, y, where=w))
  for got, want in zip(jax.tree.leaves((pm, tm, ms)), jax.tree.leaves(one)):
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want, strict=True)


# --------------------------------------------------------------------------- #
# Against pytorch-metric-learning's mined index sets.
# --------------------------------------------------------------------------- #


def _pml_setup():
  torch = pytest.importorskip("torch")
  miners = pytest.importorskip("pytorch_metric_learning.miners")
  return torch, miners


def _real_rows(pattern, batch, dim, seed):
  x, y, w = cases.make(pattern, batch, dim, seed=seed)
  x = np.asarray(ml.l2_normalize(x))
  keep = np.flatnonzero(w) if w is not None else np.arange(batch)
  return x, y, w, keep


def _as_set(*index_arrays):
  return set(zip(*(a.tolist() for a in index_arrays)))


@pytest.mark.peers
def test_pair_and_triplet_margin_equal_pytorch_metric_learning_index_sets():
  torch, miners = _pml_setup()
  mined = 0
  for pattern in ("pk", "padding", "singletons"):
    for seed in range(2):
      x, y, w, keep = _real_rows(pattern, 12, 4, seed)
      # PML has no padding: it mines on the real rows; map its indices back.
      xt, yt = torch.tensor(x[keep]), torch.tensor(y[keep], dtype=torch.long)
      d = ml.pairwise_distances(x)
      wj = _where(w, 12)
      ours = mining.pair_margin(d, y, pos_margin=0.6, neg_margin=1.1, where=wj)
      a1, p, a2, n = miners.PairMarginMiner(pos_margin=0.6, neg_margin=1.1)(xt, yt)
      assert _as_set(*np.nonzero(np.asarray(ours.positive))) == _as_set(
          keep[a1.numpy()], keep[p.numpy()])
      assert _as_set(*np.nonzero(np.asarray(ours.negative))) == _as_set(
          keep[a2.numpy()], keep[n.numpy()])
      mined += int(ours.positive.sum()) * int(ours.negative.sum())
      for kind in TYPES:
        ours = mining.triplet_margin(d, y, margin=0.3, type=kind, where=wj)
        mined *= max(1, int(ours.mask.sum()))
        a, p, n = miners.TripletMarginMiner(margin=0.3, type_of_triplets=kind)(xt, yt)
        assert _as_set(*np.nonzero(np.asarray(ours.mask))) == _as_set(
            keep[a.numpy()], keep[p.numpy()], keep[n.numpy()]), (pattern, seed, kind)
  assert mined > 0     # the comparison saw non-empty selections


@pytest.mark.peers
def test_multi_similarity_pairs_equal_pytorch_metric_learning_index_sets():
  torch, miners = _pml_setup()
  mined = 0
  for pattern in ("pk", "padding", "singletons", "all_distinct"):
    for seed in range(2):
      x, y, w, keep = _real_rows(pattern, 12, 4, seed)
      xt, yt = torch.tensor(x[keep]), torch.tensor(y[keep], dtype=torch.long)
      s = 1.0 - ml.pairwise_distances(x, metric="cosine")
      ours = mining.multi_similarity_pairs(s, y, epsilon=0.2, where=_where(w, 12))
      a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.2)(xt, yt)
      mined += len(a1) + len(a2)
      assert _as_set(*np.nonzero(np.asarray(ours.positive))) == _as_set(
          keep[a1.numpy()], keep[p.numpy()])
      assert _as_set(*np.nonzero(np.asarray(ours.negative))) == _as_set(
          keep[a2.numpy()], keep[n.numpy()])
  assert mined > 0


# --------------------------------------------------------------------------- #
# The "dot" metric.
# --------------------------------------------------------------------------- #


def test_dot_metric_values_diagonal_and_dtypes():
  rng = np.random.default_rng(0)
  x, y = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((4, 3))
  y = y.astype(np.float32)
  got = jax.jit(lambda a, b: ml.pairwise_distances(a, b, metric="dot"))(x, y)
  want = np.array([[float(np.dot(np.float64(a), np.float64(b))) for b in y] for a in x])
  np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5, atol=1e-6, strict=True)
  # The diagonal of a similarity is |x|^2, not 0.
  np.testing.assert_allclose(np.diag(ml.pairwise_distances(x, metric="dot")),
                             (x.astype(np.float64) ** 2).sum(1), rtol=1e-5)
  paired = ml.paired_distances(x[:4], y, metric="dot")
  np.testing.assert_allclose(paired, np.diag(want[:4]).astype(np.float32), rtol=1e-5,
                             atol=1e-6, strict=True)
  # Low precision in, computed in fp32, returned in the input dtype.
  xb = jnp.asarray(100 + x, jnp.bfloat16)
  out = ml.pairwise_distances(xb, metric="dot")
  exact = np.asarray(xb, np.float64) @ np.asarray(xb, np.float64).T
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), exact, rtol=1e-2)


def test_dot_metric_internal_form_is_a_distance_and_others_are_unchanged():
  x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
  sim = ml.pairwise_distances(x, metric="dot")
  np.testing.assert_array_equal(_kernels.pairwise(x, x, "dot"), -sim)
  # The ranking helper orders each row as the distance form does.
  rank = _kernels.row_ranking(x, x, "dot")
  np.testing.assert_array_equal(np.argsort(rank, axis=1), np.argsort(-sim, axis=1))
  np.testing.assert_array_equal(_kernels.paired(x, x[::-1], "dot"),
                                -ml.paired_distances(x, x[::-1], metric="dot"))
  assert distances_lib.METRICS == ("euclidean", "sqeuclidean", "cosine")
  # The triplet family takes "dot" (tests/losses_test.py); losses that square or
  # threshold a distance refuse it.
  with pytest.raises(ValueError, match="metric must be one of"):
    ml.contrastive_loss(x, jnp.arange(6) // 2, metric="dot")


def test_dot_metric_gradient():
  x = np.random.default_rng(4).standard_normal((4, 3))
  y = np.random.default_rng(5).standard_normal((5, 3))
  with jax.enable_x64(True):
    f = lambda a, b: ml.pairwise_distances(a, b, metric="dot")
    check_grads(f, (jnp.asarray(x), jnp.asarray(y)), order=2, modes=["fwd", "rev"])
    g = jax.grad(lambda a: jnp.sum(ml.pairwise_distances(a, metric="dot")))(jnp.asarray(x))
    np.testing.assert_allclose(g, 2 * np.tile(x.sum(0), (4, 1)), rtol=1e-12, strict=True)
  gz = jax.grad(lambda a: jnp.sum(ml.pairwise_distances(a, metric="dot")))(jnp.zeros((3, 2)))
  assert np.all(gz == 0)


# --------------------------------------------------------------------------- #
# Any pair miner feeds the pair losses (``pairs=MinedPairs``).
# --------------------------------------------------------------------------- #


class _Mined(ref.Setup):
  """The reference batch with only a miner's selected pairs."""

  def __init__(self, x, y, w, pairs):
    super().__init__(x, y, w)
    self.pos, self.neg = np.asarray(pairs.positive), np.asarray(pairs.negative)

  def positives(self, i):
    return [j for j in super().positives(i) if self.pos[i, j]]

  def negatives(self, i):
    return [k for k in super().negatives(i) if self.neg[i, k]]


def _ms_on_pairs(s, alpha, beta, base):
  """Every selected pair kept (no mining rule); an anchor without both counts 0."""
  return [ref.multi_similarity_terms(s, i, s.positives(i), s.negatives(i), alpha, beta, base)
          for i in range(len(s.labels))]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_loss_on_a_miners_pairs_matches_loops(reduction):
  for pattern, batch, _, x, y, w in cases.all_cases():
    where = _where(w, batch)
    pairs = mining.pair_margin(ml.pairwise_distances(x), y, pos_margin=1.0, neg_margin=2.5,
                               where=where)
    got = ml.contrastive_loss(x, y, margin=1.5, pairs=pairs, where=where, reduction=reduction)
    want = ref.reduce(ref.contrastive(_Mined(x, y, w, pairs), "euclidean", 1.5), reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=pattern)


def test_multi_similarity_loss_on_any_miners_pairs_matches_loops():
  for pattern, batch, _, x, y, w in cases.all_cases():
    where = _where(w, batch)
    d = ml.pairwise_distances(x, metric="cosine")
    for pairs in (mining.pair_margin(d, y, pos_margin=0.3, neg_margin=0.9, where=where),
                  mining.multi_similarity_pairs(1.0 - d, y, epsilon=0.2, where=where)):
      got = ml.multi_similarity_loss(x, y, pairs=pairs, where=where, reduction="sum")
      want = ref.reduce(_ms_on_pairs(_Mined(x, y, w, pairs), 2.0, 50.0, 0.5), "sum")
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=pattern)


def test_multi_similarity_loss_with_its_own_miners_pairs_equals_the_built_in_mining():
  for pattern, batch, _, x, y, w in cases.all_cases():
    where = _where(w, batch)
    sims = 1.0 - ml.pairwise_distances(x, metric="cosine")
    pairs = mining.multi_similarity_pairs(sims, y, epsilon=0.3, where=where)
    for reduction in ("sum", "none"):
      np.testing.assert_allclose(
          ml.multi_similarity_loss(x, y, pairs=pairs, where=where, reduction=reduction),
          ml.multi_similarity_loss(x, y, epsilon=0.3, where=where, reduction=reduction),
          rtol=1e-6, atol=1e-7, err_msg=pattern)


def test_every_pair_selected_equals_no_miner_and_streaming_agrees():
  x, y, w = cases.make("padding", 12, 5)
  everything = mining.MinedPairs(positive=jnp.ones((12, 12), bool),
                                 negative=jnp.ones((12, 12), bool))
  refs = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
  bank = dict(ref_embeddings=refs, ref_labels=np.array([100, 105, 7, 8], np.int32))
  for loss in (ml.contrastive_loss, ml.multi_similarity_loss):
    np.testing.assert_allclose(loss(x, y, pairs=everything, where=w, **bank),
                               loss(x, y, where=w, **bank) if loss is ml.contrastive_loss
                               else loss(x, y, epsilon=10.0, where=w, **bank), rtol=1e-6)
    pairs = mining.pair_margin(ml.pairwise_distances(x), y, pos_margin=1.0, neg_margin=2.5)
    np.testing.assert_allclose(loss(x, y, pairs=pairs, where=w, block_size=5),
                               loss(x, y, pairs=pairs, where=w), rtol=1e-6)


def test_gradients_through_a_miners_pairs_match_finite_differences():
  x, y, _ = cases.make("pk", 7, 3)
  x = jnp.asarray(x, jnp.float64) if jax.config.jax_enable_x64 else jnp.asarray(x)
  pairs = mining.pair_margin(ml.pairwise_distances(x), y, pos_margin=0.5, neg_margin=3.0)
  for loss in (functools.partial(ml.contrastive_loss, margin=3.0, squared=False),
               ml.multi_similarity_loss):
    check_grads(lambda e, loss=loss: loss(e, y, pairs=pairs), (x,), order=1,
                modes=["rev"], atol=5e-2, rtol=5e-2)


def test_pairs_of_the_wrong_shape_or_kind_fail_naming_them():
  x, y, _ = cases.make("pk", 7, 3)
  with pytest.raises(ValueError, match=r"pairs\.positive must be a bool \[7, 7\] mask"):
    ml.contrastive_loss(x, y, pairs=mining.MinedPairs(positive=jnp.ones((7, 6), bool),
                                                      negative=jnp.ones((7, 7), bool)))
  with pytest.raises(TypeError, match="pairs must be a MinedPairs selection"):
    ml.multi_similarity_loss(x, y, pairs=jnp.ones((7, 7), bool))
  empty = mining.MinedPairs(positive=jnp.ones((0, 0), bool), negative=jnp.ones((0, 0), bool))
  assert float(ml.contrastive_loss(jnp.ones((0, 3)), jnp.ones((0,), jnp.int32),
                                   pairs=empty)) == 0.0
