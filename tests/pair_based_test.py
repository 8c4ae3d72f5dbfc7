"""Pair-based losses (metric_learning/losses/pair_based.py).

Each loss against a float64 brute-force reference with explicit loops (every
label pattern and reduction, under jax.jit, strict shapes); memory bank =
concatenation semantics; gradients (finite differences in float64, finite and
exactly zero where they must be in f32/bf16/f16); the global batch under pmap
equals one device; a hypothesis property test; and parity with
pytorch-metric-learning (marker ``peers``, skipped when it is not installed).
"""

import functools
import math

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import metric_learning as ml
from metric_learning.losses.pair_based import angular_loss
from metric_learning.losses.pair_based import circle_loss
from metric_learning.losses.pair_based import fast_ap_loss
from metric_learning.losses.pair_based import generalized_lifted_structure_loss
from metric_learning.losses.pair_based import nca_loss
from metric_learning.losses.pair_based import tuplet_margin_loss

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

REDUCTIONS = ("mean", "sum", "none", "mean_nonzero")
METRICS = ("euclidean", "sqeuclidean", "cosine")

# ---------------------------------------------------------------------------
# float64 references: explicit loops, nothing shared with the library
# ---------------------------------------------------------------------------


class Setup(ref.Setup):
  """The shared reference set-up (tests/reference.py) plus cosine similarities."""

  def cos(self, i, j):
    return 1.0 - ref.distance(self.x[i], self.cands[j], "cosine")

  def cos_cc(self, j, k):
    return 1.0 - ref.distance(self.cands[j], self.cands[k], "cosine")


def _lse(values):
  top = max(values)
  return top + math.log(sum(math.exp(v - top) for v in values))


def _softplus(v):
  return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _anchor(value):
  return (value, 1, int(value > 0))


def _pairs(values):
  return (float(sum(values)), len(values), sum(1 for v in values if v > 0))


def reduce(per_anchor, reduction):
  values = np.array([v for v, _, _ in per_anchor], np.float64)
  if reduction == "none":
    return values
  total = float(values.sum())
  if reduction == "sum":
    return total
  den = sum(c for _, c, _ in per_anchor) if reduction == "mean" else sum(
      n for _, _, n in per_anchor)
  return total / den if den > 0 else 0.0


def ref_circle(s, margin=0.4, gamma=80.0, frozen=None):
  """``frozen``: a Setup whose similarities give the (constant) weights alpha."""
  w = frozen or s
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    lp = _lse([-gamma * max(1 + margin - w.cos(i, j), 0) * (s.cos(i, j) - (1 - margin))
               for j in pos])
    ln = _lse([gamma * max(w.cos(i, k) + margin, 0) * (s.cos(i, k) - margin) for k in neg])
    out.append(_anchor(_softplus(lp + ln)))
  return out


def ref_tuplet(s, margin=0.1000073661, scale=64.0):        # 5.73 degrees
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    vals = []
    for j in (pos if neg else []):
      shifted = math.cos(math.acos(min(max(s.cos(i, j), -1.0), 1.0)) - margin)
      vals.append(_lse([0.0] + [scale * (s.cos(i, k) - shifted) for k in neg]))
    out.append(_pairs(vals))
  return out


def ref_angular(s, alpha=0.6981317008):                   # 40 degrees
  t = math.tan(alpha) ** 2
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    vals = []
    for j in (pos if neg else []):
      f = [4 * t * (s.cos(i, k) + s.cos_cc(j, k)) - 2 * (1 + t) * s.cos(i, j) for k in neg]
      vals.append(_lse([0.0] + f))
    out.append(_pairs(vals))
  return out


def ref_lifted(s, metric="euclidean", neg_margin=1.0, pos_margin=0.0):
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    value = (_lse([s.d(i, j, metric) - pos_margin for j in pos])
             + _lse([neg_margin - s.d(i, k, metric) for k in neg]))
    out.append(_anchor(max(value, 0.0)))
  return out


def ref_fast_ap(s, num_bins=10):
  delta = 4.0 / num_bins
  centres = [4.0 * l / num_bins for l in range(num_bins + 1)]
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    # |x̂_i - x̂_j|² (a zero vector has cosine 0 to everything)
    sq = {j: 2.0 - 2.0 * s.cos(i, j) for j in pos + neg}
    pulse = lambda j, l, sq=sq: max(1.0 - abs(sq[j] - centres[l]) / delta, 0.0)
    ap, cum_pos, cum_all = 0.0, 0.0, 0.0
    for l in range(num_bins + 1):
      h_pos = sum(pulse(j, l) for j in pos)
      h_neg = sum(pulse(k, l) for k in neg)
      cum_pos += h_pos
      cum_all += h_pos + h_neg
      if h_pos * cum_pos > 0 and cum_all > 0:
        ap += h_pos * cum_pos / cum_all
    value = 1.0 - ap / len(pos)
    out.append(_anchor(0.0 if abs(value) < 1e-12 else value))   # rounding residue
  return out


def ref_nca(s, metric="sqeuclidean", scale=1.0):
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    num = _lse([-scale * s.d(i, j, metric) for j in pos])
    den = _lse([-scale * s.d(i, j, metric) for j in pos + neg])
    out.append(_anchor(den - num))
  return out


# name -> (library call (x, y, where, metric, reduction, **bank), reference, metrics)
LOSSES = {
    "circle": (
        lambda x, y, w, m, r, **kw: circle_loss(x, y, where=w, reduction=r, **kw),
        lambda s, m: ref_circle(s), (None,)),
    "circle_small_gamma": (
        lambda x, y, w, m, r, **kw: circle_loss(x, y, margin=0.25, gamma=4.0, where=w,
                                                reduction=r, **kw),
        lambda s, m: ref_circle(s, 0.25, 4.0), (None,)),
    "tuplet_margin": (
        lambda x, y, w, m, r, **kw: tuplet_margin_loss(x, y, where=w, reduction=r, **kw),
        lambda s, m: ref_tuplet(s), (None,)),
    "tuplet_margin_wide": (
        lambda x, y, w, m, r, **kw: tuplet_margin_loss(x, y, margin=0.7, scale=8.0,
                                                       where=w, reduction=r, **kw),
        lambda s, m: ref_tuplet(s, 0.7, 8.0), (None,)),
    "angular": (
        lambda x, y, w, m, r, **kw: angular_loss(x, y, where=w, reduction=r, **kw),
        lambda s, m: ref_angular(s), (None,)),
    "angular_55": (
        lambda x, y, w, m, r, **kw: angular_loss(x, y, alpha=math.radians(55), where=w,
                                                 reduction=r, **kw),
        lambda s, m: ref_angular(s, math.radians(55)), (None,)),
    "generalized_lifted": (
        lambda x, y, w, m, r, **kw: generalized_lifted_structure_loss(
            x, y, metric=m, where=w, reduction=r, **kw),
        lambda s, m: ref_lifted(s, m), METRICS),
    "generalized_lifted_margins": (
        lambda x, y, w, m, r, **kw: generalized_lifted_structure_loss(
            x, y, neg_margin=3.0, pos_margin=0.5, metric=m, where=w, reduction=r, **kw),
        lambda s, m: ref_lifted(s, m, 3.0, 0.5), ("euclidean",)),
    "fast_ap": (
        lambda x, y, w, m, r, **kw: fast_ap_loss(x, y, where=w, reduction=r, **kw),
        lambda s, m: ref_fast_ap(s), (None,)),
    "fast_ap_3_bins": (
        lambda x, y, w, m, r, **kw: fast_ap_loss(x, y, num_bins=3, where=w, reduction=r,
                                                 **kw),
        lambda s, m: ref_fast_ap(s, 3), (None,)),
    "nca": (
        lambda x, y, w, m, r, **kw: nca_loss(x, y, metric=m, where=w, reduction=r, **kw),
        lambda s, m: ref_nca(s, m), ("sqeuclidean", "euclidean", "cosine")),
    "nca_scale": (
        lambda x, y, w, m, r, **kw: nca_loss(x, y, softmax_scale=4.0, metric=m, where=w,
                                             reduction=r, **kw),
        lambda s, m: ref_nca(s, m, 4.0), ("sqeuclidean",)),
}
# One configuration per public function (the slower checks run on these).
MAIN = ("circle", "tuplet_margin", "angular", "generalized_lifted", "fast_ap", "nca")
GRID = [(name, metric) for name, (_, _, metrics) in LOSSES.items() for metric in metrics]


def _loss(name, reduction="mean", metric=None):
  call, _, metrics = LOSSES[name]
  metric = metric or metrics[0]
  return lambda x, y, w=None, **kw: call(x, y, w, metric, reduction, **kw)


def check(actual, expected, rtol=2e-4, atol=2e-4):
  actual, expected = np.asarray(actual), np.asarray(expected, np.float64)
  assert np.all(np.isfinite(actual))
  np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol,
                             strict=True)


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,metric", GRID)
def test_matches_reference(name, metric):
  """Four reductions, five label patterns, two shapes, under one jit."""
  call, reference, _ = LOSSES[name]

  @jax.jit
  def all_reductions(x, y, w):
    return {r: call(x, y, w, metric, r) for r in REDUCTIONS}

  for pattern, batch, _, x, y, w in cases.all_cases():
    out = all_reductions(x, y, np.ones(batch, bool) if w is None else w)
    terms = reference(Setup(x, y, w), metric)
    for reduction in REDUCTIONS:
      value = out[reduction]
      assert value.dtype == jnp.float32
      try:
        check(value, reduce(terms, reduction))
      except AssertionError as e:
        raise AssertionError(f"{name} {metric} {reduction} {pattern} B={batch}") from e
    np.testing.assert_allclose(jnp.sum(out["none"]), out["sum"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MAIN)
def test_memory_bank_matches_reference(name):
  """Bank rows are extra candidates (padding included), never anchors."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((6, 4)).astype(np.float32)
  y = np.array([0, 0, 1, 1, 2, 3], np.int32)
  refs = rng.standard_normal((5, 4)).astype(np.float32)
  ref_y = np.array([0, 3, 3, 9, 1], np.int32)
  ref_w = np.array([True, True, False, True, True])
  _, reference, metrics = LOSSES[name]
  for metric in metrics[:1]:
    terms = reference(Setup(x, y, None, refs, ref_y, ref_w), metric)
    out = jax.jit(lambda e, r, m=metric: {
        red: _loss(name, red, m)(e, y, ref_embeddings=r, ref_labels=ref_y, ref_where=ref_w)
        for red in REDUCTIONS})(x, refs)
    for reduction in REDUCTIONS:
      check(out[reduction], reduce(terms, reduction))


@pytest.mark.parametrize("name", MAIN)
def test_memory_bank_equals_concatenation(name):
  """Per-anchor values and gradients equal the concatenated batch's first rows."""
  x, y, _ = cases.make("pk", 9, 4, seed=1)
  refs, ref_y, _ = cases.make("singletons", 7, 4, seed=2)
  ref_y = ref_y + 100     # the singletons pattern overlaps the pk labels here and there
  ref_y[:3] = y[:3]
  loss = _loss(name, "none")
  with_bank = lambda e: loss(e, y, ref_embeddings=refs, ref_labels=ref_y)
  concatenated = lambda e: loss(jnp.concatenate([e, refs]), np.r_[y, ref_y])[:9]
  both = jax.jit(lambda e, r: (
      jax.value_and_grad(lambda a: jnp.sum(with_bank(a)), has_aux=False)(e),
      jax.value_and_grad(lambda a: jnp.sum(concatenated(a)))(e),
      with_bank(e), concatenated(e),
      jax.grad(lambda b: jnp.sum(loss(e, y, ref_embeddings=b, ref_labels=ref_y)))(r)))
  (_, g_bank), (_, g_cat), v_bank, v_cat, g_refs = both(x, refs)
  np.testing.assert_allclose(v_bank, v_cat, rtol=1e-5, atol=1e-6, strict=True)
  np.testing.assert_allclose(g_bank, g_cat, rtol=1e-4, atol=1e-6, strict=True)
  assert np.all(np.asarray(g_refs) == 0)       # the bank is a constant


def test_doc_examples_by_hand():
  """Two examples worked out by hand (the docstrings hold the others)."""
  x, y = jnp.array([[0.0], [1.0], [1.5]]), jnp.array([0, 0, 1])
  lifted = jax.jit(functools.partial(generalized_lifted_structure_loss, reduction="none"))
  check(lifted(x, y), [0.5, 1.5, 0.0], rtol=1e-6, atol=1e-6)
  x = jnp.array([[0.0], [1.0], [2.0]])
  nca = jax.jit(functools.partial(nca_loss, reduction="none"))
  check(nca(x, y), [math.log1p(math.exp(-3)), math.log(2), 0.0], rtol=1e-6, atol=1e-6)


def test_fast_ap_is_zero_when_every_positive_is_ranked_first():
  # Positives at distance 0 (bin 0), negatives at squared distance 4 (the last bin).
  x = jnp.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
  out = jax.jit(functools.partial(fast_ap_loss, reduction="none"))(x, jnp.array([0, 0, 1, 1]))
  np.testing.assert_array_equal(out, np.zeros(4, np.float32), strict=True)


@pytest.mark.parametrize("bad", [
    lambda x, y: circle_loss(x, y, gamma=0.0),
    lambda x, y: circle_loss(x, y, margin=-0.1),
    lambda x, y: tuplet_margin_loss(x, y, margin=4.0),
    lambda x, y: tuplet_margin_loss(x, y, scale=-1.0),
    lambda x, y: angular_loss(x, y, alpha=1.3),
    lambda x, y: fast_ap_loss(x, y, num_bins=0),
    lambda x, y: fast_ap_loss(x, y, num_bins=2.5),
    lambda x, y: nca_loss(x, y, softmax_scale=0.0),
    lambda x, y: nca_loss(x, y, metric="dot-ish"),
    lambda x, y: generalized_lifted_structure_loss(x, y, reduction="avg"),
    lambda x, y: circle_loss(x[0], y),
])
def test_bad_options_raise(bad):
  with pytest.raises(ValueError):
    bad(jnp.ones((4, 3)), jnp.array([0, 0, 1, 1]))


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


def _numeric_grad(f, x, eps=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    step = np.zeros_like(x)
    step[idx] = eps
    g[idx] = (f(x + step) - f(x - step)) / (2 * eps)
  return g


@pytest.mark.parametrize("name", [n for n in MAIN if n != "circle"]
                         + ["tuplet_margin_wide", "generalized_lifted_margins", "nca_scale"])
def test_gradient_matches_finite_differences(name):
  x, y, w = cases.make("padding", 9, 3, seed=7)
  with jax.enable_x64(True):
    f = jax.jit(lambda e: _loss(name)(e, y, jnp.asarray(w)))
    check_grads(f, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("gamma", [4.0, 80.0])
def test_circle_gradient_treats_the_weights_as_constants(gamma):
  """The paper's alpha are constants: the gradient is that of the frozen-alpha loss."""
  x, y, w = cases.make("padding", 9, 3, seed=7)
  with jax.enable_x64(True):
    got = jax.jit(jax.grad(
        lambda e: circle_loss(e, y, where=w, gamma=gamma, reduction="sum")))(
            jnp.asarray(x, jnp.float64))
  frozen = Setup(x, y, w)
  want = _numeric_grad(
      lambda e: reduce(ref_circle(Setup(e, y, w), 0.4, gamma, frozen=frozen), "sum"),
      np.asarray(x, np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * gamma)


@functools.lru_cache(maxsize=None)
def _value_and_grad(name, reduction="mean"):
  loss = _loss(name, reduction)
  return jax.jit(jax.value_and_grad(lambda x, y, w: jnp.sum(loss(x, y, w))))


@pytest.mark.parametrize("name", MAIN)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_duplicates_no_valid_anchor_and_padding(name, dtype):
  grad = _value_and_grad(name)
  labels = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)

  # Identical embeddings: finite loss, gradient exactly 0.
  x = jnp.ones((6, 4), dtype)
  value, g = grad(x, labels, jnp.ones(6, bool))
  assert value.dtype == dtype and g.dtype == dtype
  assert np.isfinite(float(value))
  assert np.all(np.asarray(g, np.float32) == 0)

  # No valid anchor (all labels distinct; one class): loss 0, gradient exactly 0.
  x = jnp.asarray(cases.make("pk", 6, 4)[0], dtype)
  for y in (jnp.arange(6, dtype=jnp.int32), jnp.zeros(6, jnp.int32)):
    value, g = grad(x, y, jnp.ones(6, bool))
    assert float(value) == 0 and np.all(np.asarray(g, np.float32) == 0)

  # Padding rows get exactly zero gradient, whatever they hold.
  x = x.at[2].set(1e4).at[5].set(jnp.nan if dtype == jnp.float32 else 0)
  where = jnp.array([True, True, False, True, True, False])
  value, g = grad(x, labels, where)
  g = np.asarray(g, np.float32)
  assert np.isfinite(float(value)) and float(value) > 0
  assert np.all(g[[2, 5]] == 0) and np.all(np.isfinite(g)) and np.any(g != 0)


def test_tuplet_margin_gradient_is_finite_next_to_a_duplicate():
  """cos(theta - beta) near theta = 0, where arccos' derivative blows up."""
  x = jnp.array([[1.0, 0.0], [1.0, 1e-4], [0.0, 1.0], [0.0, 1.0]])
  f = jax.jit(jax.value_and_grad(tuplet_margin_loss))
  for e in (x, x.at[1, 1].set(1e-3), x.at[1, 1].set(0.0)):
    value, g = f(e, jnp.array([0, 0, 1, 1]))
    assert np.isfinite(value) and np.all(np.isfinite(g))


# ---------------------------------------------------------------------------
# global batch under pmap (8 fake CPU devices from conftest.py)
# ---------------------------------------------------------------------------

N = 8


DEFAULT_REDUCTION = {"circle": "mean_nonzero", "tuplet_margin": "mean", "angular": "mean",
                     "generalized_lifted": "mean", "fast_ap": "mean", "nca": "mean"}
PUBLIC = {"circle": circle_loss, "tuplet_margin": tuplet_margin_loss, "angular": angular_loss,
          "generalized_lifted": generalized_lifted_structure_loss, "fast_ap": fast_ap_loss,
          "nca": nca_loss}


@pytest.mark.parametrize("name", MAIN)
def test_default_reduction(name):
  x, y, _ = cases.make("singletons", 7, 3)
  np.testing.assert_array_equal(jax.jit(PUBLIC[name])(x, y),
                                jax.jit(_loss(name, DEFAULT_REDUCTION[name]))(x, y),
                                strict=True)


def _all_reductions(call, metric, default, **kw):
  """Value and gradient of the default reduction, the other reductions' values."""
  def f(x, y, w):
    value, grad = jax.value_and_grad(lambda e: call(e, y, w, metric, default, **kw))(x)
    others = {r: call(x, y, w, metric, r, **kw) for r in REDUCTIONS}
    return value, grad, others
  return f


@pytest.mark.parametrize("name", MAIN)
def test_pmap_equals_single_device(name):
  """Every reduction's value, and the default reduction's gradient."""
  x, y, _ = cases.make("pk", 3 * N, 4, seed=5)
  w = np.ones(3 * N, bool)
  w[[2, 9, 10, 23]] = False                  # padding on several devices
  x, y, w = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)
  shard = lambda a: a.reshape((N, -1) + a.shape[1:])
  call, metric = LOSSES[name][0], LOSSES[name][2][0]
  default = DEFAULT_REDUCTION[name]
  value, grad, others = jax.jit(_all_reductions(call, metric, default))(x, y, w)
  values, grads, sharded = jax.pmap(_all_reductions(call, metric, default, axis_name="data"),
                                    axis_name="data")(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads.reshape(grad.shape), grad, rtol=1e-4, atol=1e-6)
  for r in REDUCTIONS:
    want = others[r] if r == "none" else np.full(N, others[r])
    np.testing.assert_allclose(sharded[r].reshape(want.shape), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# property test (hypothesis): finite loss and gradients, zero at padding
# ---------------------------------------------------------------------------


@st.composite
def batches(draw):
  b = 7                                         # one shape: one compile per dtype
  rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
  labels = draw(st.sampled_from([
      lambda: rng.integers(0, 3, b), lambda: np.full(b, 7), lambda: np.arange(b) * 5,
      lambda: np.r_[[0, 0], np.arange(1, b - 1)], lambda: rng.integers(0, 2, b)]))()
  scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 0.0]))
  x = (scale * rng.standard_normal((b, 3))).astype(np.float32)
  if draw(st.booleans()):                       # exact duplicate rows
    x[rng.integers(0, b, b // 2)] = x[0]
  where = rng.random(b) < 0.8 if draw(st.booleans()) else np.ones(b, bool)
  return x, labels.astype(np.int32), where


@pytest.mark.parametrize("name", MAIN)
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), dtype=st.sampled_from(["float32", "bfloat16", "float16"]))
def test_loss_and_gradient_are_always_finite(name, batch, dtype):
  x, y, w = batch
  value, grad = _value_and_grad(name)(jnp.asarray(x, dtype), y, w)
  assert value.dtype == jnp.dtype(dtype) and grad.dtype == jnp.dtype(dtype)
  assert np.isfinite(float(value)) and float(value) >= 0
  grad = np.asarray(grad, np.float32)
  assert np.all(np.isfinite(grad))
  assert np.all(grad[~w] == 0)


# ---------------------------------------------------------------------------
# parity with pytorch-metric-learning (float64, PK batches, library defaults)
# ---------------------------------------------------------------------------


def _pk(seed, classes=4, per_class=3, dim=8):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((classes * per_class, dim))
  y = np.repeat(rng.permutation(classes) * 7 + 3, per_class)
  perm = rng.permutation(len(y))
  return x[perm], y[perm]


def _pml(loss, x, y):
  torch = pytest.importorskip("torch")
  emb = torch.tensor(x, dtype=torch.float64, requires_grad=True)
  value = loss(emb, torch.tensor(y, dtype=torch.int64))
  value.backward()
  return value.item(), emb.grad.numpy()


def _ours(loss, x, y):
  with jax.enable_x64(True):
    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(x, jnp.float64),
                                                    jnp.asarray(y))
    return float(value), np.asarray(grad)


PARITY = {
    # name -> (PML class name, our loss on raw embeddings)
    "circle": ("CircleLoss", circle_loss),
    "tuplet_margin": ("TupletMarginLoss", tuplet_margin_loss),
    "fast_ap": ("FastAPLoss", fast_ap_loss),
    # PML L2-normalises first (LpDistance default); ours uses embeddings as given.
    "generalized_lifted": ("GeneralizedLiftedStructureLoss",
                           lambda e, y: generalized_lifted_structure_loss(
                               ml.l2_normalize(e), y)),
    "nca": ("NCALoss", lambda e, y: nca_loss(ml.l2_normalize(e), y)),
}


@pytest.mark.peers
@pytest.mark.parametrize("name", sorted(PARITY))
def test_equals_pytorch_metric_learning(name):
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  pml_name, ours = PARITY[name]
  for seed in range(2):
    for shape in ((4, 3, 8), (6, 2, 16)):
      x, y = _pk(seed, *shape)
      want_value, want_grad = _pml(getattr(losses, pml_name)(), x, y)
      value, grad = _ours(ours, x, y)
      np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-8)
      np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.peers
def test_angular_equals_pytorch_metric_learning_on_unit_vectors():
  """PML normalises anchors and positives but not negatives; on unit-norm inputs
  the values agree, and so do the gradients' components along the sphere."""
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  for seed in range(2):
    for shape in ((4, 3, 8), (6, 2, 16)):
      x, y = _pk(seed, *shape)
      x = x / np.linalg.norm(x, axis=1, keepdims=True)
      want_value, want_grad = _pml(losses.AngularLoss(), x, y)
      value, grad = _ours(angular_loss, x, y)
      tangent = want_grad - np.sum(want_grad * x, 1, keepdims=True) * x
      np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-8)
      np.testing.assert_allclose(grad, tangent, rtol=1e-5, atol=1e-8)
      # Our gradient on the sphere is tangent (the loss ignores the norm).
      np.testing.assert_allclose(np.sum(grad * x, 1), 0, atol=1e-10)


@pytest.mark.peers
def test_nondefault_hyperparameters_equal_pytorch_metric_learning():
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  reducers = pytest.importorskip("pytorch_metric_learning.reducers")
  x, y = _pk(5, 5, 3, 6)
  pairs = [
      (losses.CircleLoss(m=0.25, gamma=16, reducer=reducers.MeanReducer()),
       lambda e, l: circle_loss(e, l, margin=0.25, gamma=16.0, reduction="mean")),
      (losses.TupletMarginLoss(margin=20.0, scale=10),
       lambda e, l: tuplet_margin_loss(e, l, margin=math.radians(20.0), scale=10.0)),
      (losses.FastAPLoss(num_bins=4), lambda e, l: fast_ap_loss(e, l, num_bins=4)),
      (losses.GeneralizedLiftedStructureLoss(neg_margin=0.5, pos_margin=0.2),
       lambda e, l: generalized_lifted_structure_loss(ml.l2_normalize(e), l,
                                                      neg_margin=0.5, pos_margin=0.2)),
      (losses.NCALoss(softmax_scale=3),
       lambda e, l: nca_loss(ml.l2_normalize(e), l, softmax_scale=3.0)),
  ]
  for pml_loss, ours in pairs:
    want_value, want_grad = _pml(pml_loss, x, y)
    value, grad = _ours(ours, x, y)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
