"""Every loss against its brute-force reference, for every metric, reduction and
label pattern, under jax.jit, with strict shapes."""

import functools

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from cases import LOSSES
from cases import METRICS
from cases import REDUCTIONS
from cases import check

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only


# The triplet family compares distances only, so it also takes the "dot"
# similarity (as the distance -x.y); losses that square or threshold a distance
# reject it (test_dot_is_refused_where_a_distance_is_squared_or_thresholded).
DOT_LOSSES = ("batch_hard", "batch_hard_soft", "batch_hard_streaming", "batch_all",
              "batch_all_soft", "semi_hard_facenet", "semi_hard_tfa", "quadruplet",
              "quadruplet_soft")
GRID = [(name, metric) for name, (_, _, uses_metric) in LOSSES.items()
        for metric in (METRICS if uses_metric else METRICS[:1])]
GRID += [(name, "dot") for name in DOT_LOSSES]



# The developer loop takes each loss at one metric (and each metric once).
@pytest.mark.parametrize("name,metric", cases.covering(GRID))
def test_matches_reference(name, metric):
  """All four reductions, five label patterns, two shapes, under one jit."""
  call, reference, _ = LOSSES[name]

  @jax.jit
  def all_reductions(x, y, w):
    return {r: call(x, y, w, metric, r) for r in REDUCTIONS}

  for pattern, batch, _, x, y, w in cases.all_cases():
    out = all_reductions(x, y, np.ones(batch, bool) if w is None else w)
    terms = reference(ref.Setup(x, y, w), metric)
    for reduction in REDUCTIONS:
      value = out[reduction]
      assert value.dtype == jnp.float32
      assert value.shape == ((batch,) if reduction == "none" else ()), (pattern, value.shape)
      try:
        check(value, ref.reduce(terms, reduction))
      except AssertionError as e:
        raise AssertionError(f"{name} {metric} {reduction} {pattern} B={batch}") from e
    np.testing.assert_allclose(jnp.sum(out["none"]), out["sum"], rtol=1e-5, atol=1e-6)


def test_dot_is_refused_where_a_distance_is_squared_or_thresholded():
  x, y = np.ones((4, 2), np.float32), np.array([0, 0, 1, 1])
  for fn in (ml.contrastive_loss, ml.lifted_structure_loss, ml.margin_loss):
    with pytest.raises(ValueError, match="metric"):
      fn(x, y, metric="dot")
  assert all(name in LOSSES for name in DOT_LOSSES)


def test_dot_triplets_and_selected_triplets_match_the_reference():
  x = np.random.default_rng(5).standard_normal((6, 3)).astype(np.float32)
  a, p, n = x[:2], x[2:4], x[4:]
  expected = [max(0.0, 0.3 + ref.distance(a[i], p[i], "dot") - ref.distance(a[i], n[i], "dot"))
              for i in range(2)]
  check(ml.triplet_margin_loss(a, p, n, margin=0.3, metric="dot"), np.asarray(expected))
  y = np.array([0, 0, 1, 1, 2, 2])
  sel = ml.mining.batch_hard(-ml.pairwise_distances(x, metric="dot"), y)
  check(ml.selected_triplet_loss(x, sel, margin=0.3, metric="dot"),
        ml.batch_hard_triplet_loss(x, y, margin=0.3, metric="dot"))


@pytest.mark.parametrize("name", ["batch_hard", "batch_all", "semi_hard_facenet",
                                  "semi_hard_tfa", "contrastive", "multi_similarity"])
def test_reference_candidates_match_reference(name):
  """A memory bank (extra candidates) matches the reference on batch + bank."""
  call, reference, _ = LOSSES[name]
  rng = np.random.default_rng(3)
  x = rng.standard_normal((6, 4)).astype(np.float32)
  y = np.array([0, 0, 1, 1, 2, 3], np.int32)
  refs = rng.standard_normal((5, 4)).astype(np.float32)
  ref_y = np.array([0, 3, 3, 9, 1], np.int32)
  ref_w = np.array([True, True, False, True, True])
  kwargs = dict(ref_embeddings=refs, ref_labels=ref_y, ref_where=ref_w)
  setup = ref.Setup(x, y, None, refs, ref_y, ref_w)
  for reduction in REDUCTIONS:
    loss = {
        "batch_hard": lambda r: ml.batch_hard_triplet_loss(x, y, margin=0.5, reduction=r,
                                                           **kwargs),
        "batch_all": lambda r: ml.batch_all_triplet_loss(x, y, margin=0.5, reduction=r,
                                                         **kwargs),
        "semi_hard_facenet": lambda r: ml.semi_hard_triplet_loss(
            x, y, margin=0.5, reduction=r, **kwargs),
        "semi_hard_tfa": lambda r: ml.semi_hard_triplet_loss(
            x, y, margin=0.5, definition="tfa", reduction=r, **kwargs),
        "contrastive": lambda r: ml.contrastive_loss(x, y, margin=1.5, reduction=r,
                                                     **kwargs),
        "multi_similarity": lambda r: ml.multi_similarity_loss(
            x, y, beta=10.0, reduction=r, **kwargs),
    }[name](reduction)
    check(loss, ref.reduce(reference(setup, "euclidean"), reduction))
  del call


def _naive_batch_hard(x, y, where, margin, metric, soft):
  """Plain autodiff over one dense matrix: masked max/min, no stop_gradient tricks."""
  d = ml.pairwise_distances(x, metric=metric)
  pos, neg = ml.positive_mask(y, where=where), ml.negative_mask(y, where=where)
  dp = jnp.max(jnp.where(pos, d, -jnp.inf), axis=1)
  dn = jnp.min(jnp.where(neg, d, jnp.inf), axis=1)
  valid = pos.any(1) & neg.any(1)
  gap = jnp.where(valid, dp - dn, 0.0)
  term = jax.nn.softplus(gap) if soft else jax.nn.relu(margin + gap)
  return jnp.sum(jnp.where(valid, term, 0)) / jnp.maximum(valid.sum(), 1)


@pytest.mark.parametrize("metric,soft", cases.covering_product(METRICS, [False, True]))
def test_dense_streaming_and_plain_autodiff_agree(metric, soft):
  """Value and gradient: dense, streaming with uneven block sizes, and naive autodiff."""
  x, y, w = cases.make("padding", 23, 6, seed=11)
  w = jnp.asarray(w)
  loss = lambda e, b: ml.batch_hard_triplet_loss(e, y, where=w, margin=0.5, metric=metric,
                                                 soft=soft, block_size=b)
  value, grad = jax.value_and_grad(loss)(x, None)
  naive_value, naive_grad = jax.value_and_grad(_naive_batch_hard)(x, y, w, 0.5, metric, soft)
  np.testing.assert_allclose(value, naive_value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, naive_grad, rtol=1e-4, atol=1e-5)
  for block in (1, 4, 7, 22, 64):
    b_value, b_grad = jax.value_and_grad(loss)(x, block)
    np.testing.assert_array_equal(value, b_value)
    np.testing.assert_array_equal(grad, b_grad)


def test_streaming_with_memory_bank_equals_dense():
  x, y, _ = cases.make("pk", 10, 4)
  refs, ref_y, _ = cases.make("singletons", 9, 4, seed=2)
  kw = dict(ref_embeddings=refs, ref_labels=ref_y, ref_where=np.arange(9) != 3)
  dense = jax.value_and_grad(lambda e: ml.batch_hard_triplet_loss(e, y, **kw))(x)
  streamed = jax.value_and_grad(
      lambda e: ml.batch_hard_triplet_loss(e, y, block_size=3, **kw))(x)
  np.testing.assert_array_equal(dense[0], streamed[0])
  np.testing.assert_array_equal(dense[1], streamed[1])


def test_triplet_margin_loss_matches_reference():
  rng = np.random.default_rng(0)
  a, p, n = (rng.standard_normal((9, 4)).astype(np.float32) for _ in range(3))
  for metric in METRICS:
    for soft in (False, True):
      out = jax.jit(functools.partial(ml.triplet_margin_loss, metric=metric, soft=soft,
                                      margin=0.7))(a, p, n)
      expected = [ref.term(ref.distance(a[t], p[t], metric) - ref.distance(a[t], n[t], metric),
                           0.7, soft) for t in range(9)]
      check(out, np.array(expected))


def test_selected_triplet_loss_with_easy_positive_matches_reference():
  for _, _, _, x, y, w in cases.all_cases():
    sel = ml.mining.easy_positive(ml.pairwise_distances(x), y,
                                  where=None if w is None else jnp.asarray(w))
    out = ml.selected_triplet_loss(x, sel, margin=0.5, reduction="none")
    check(out, ref.reduce(ref.batch_hard(ref.Setup(x, y, w), "euclidean", 0.5, False,
                                         positive="easy"), "none"))


def test_margin_loss_per_anchor_beta_and_its_gradient():
  x, y, _ = cases.make("pk", 9, 3)
  beta = np.linspace(0.8, 1.6, 9).astype(np.float32)
  out = ml.margin_loss(x, y, beta=beta, margin=0.3, reduction="sum")
  check(out, ref.reduce(ref.margin_loss(ref.Setup(x, y), "euclidean", beta, 0.3), "sum"))
  # d/dbeta of the sum = (#active negative pairs) - (#active positive pairs).
  g = jax.grad(lambda b: ml.margin_loss(x, y, beta=b, margin=0.3, reduction="sum"))(
      jnp.float32(1.2))
  s = ref.Setup(x, y)
  active_pos = sum(0.3 + s.d(i, j, "euclidean") - 1.2 > 0
                   for i in range(9) for j in s.positives(i))
  active_neg = sum(0.3 - s.d(i, k, "euclidean") + 1.2 > 0
                   for i in range(9) for k in s.negatives(i))
  assert g == active_neg - active_pos


def test_margin_loss_distance_weighted_sampling_is_deterministic_and_finite():
  x, y, _ = cases.make("pk", 12, 8)
  x = ml.l2_normalize(x)
  key = jax.random.key(0)
  a = ml.margin_loss(x, y, key=key)
  b = ml.margin_loss(x, y, key=key)
  assert a == b and np.isfinite(a)
  g = jax.grad(lambda e: ml.margin_loss(e, y, key=key))(x)
  assert np.all(np.isfinite(g))
