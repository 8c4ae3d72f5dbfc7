"""NT-Xent, supervised contrastive and sigmoid (SigLIP) losses.

Each loss against a float64 brute-force reference with explicit loops (every
label pattern and reduction, under jax.jit, strict shapes); finite differences;
finite and exactly-zero gradients in f32/bf16/f16; the memory bank; global
batches under pmap, shard_map and a sharded jit; the blocked sigmoid path; a
hypothesis property test; and parity with optax and pytorch-metric-learning
(marked ``peers``, skipped when those are absent).
"""

import functools
import math
import os

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
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from metric_learning.losses import contrastive

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

REDUCTIONS = ("mean", "sum", "none", "mean_nonzero")
TAU = 0.2
T, B = 5.0, -2.0    # sigmoid temperature and bias used throughout


# ---------------------------------------------------------------------------
# float64 brute-force references: explicit loops, nothing shared with the library


def _cos(setup, i, j):
  return 1.0 - ref.distance(setup.x[i], setup.cands[j], "cosine")


def _softplus(v):
  return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def ref_ntxent(setup, tau):
  """Per anchor: (sum over positive pairs with a negative, pairs, non-zero pairs)."""
  out = []
  for i in range(len(setup.labels)):
    if not setup.where[i]:
      out.append((0.0, 0, 0))
      continue
    negs = setup.negatives(i)
    vals = []
    for j in setup.positives(i):
      if not negs:
        continue
      num = math.exp(_cos(setup, i, j) / tau)
      den = num + sum(math.exp(_cos(setup, i, k) / tau) for k in negs)
      vals.append(-math.log(num / den))
    out.append(ref._collect(vals))  # pylint: disable=protected-access
  return out


def ref_supcon(setup, tau):
  """Per anchor: (l_i at valid anchors, 1, l_i > 0)."""
  out = []
  for i in range(len(setup.labels)):
    pos, neg = setup.positives(i), setup.negatives(i)
    if not (setup.where[i] and pos and neg):
      out.append((0.0, 0, 0))
      continue
    den = sum(math.exp(_cos(setup, i, a) / tau) for a in pos + neg)
    value = -sum(math.log(math.exp(_cos(setup, i, p) / tau) / den) for p in pos) / len(pos)
    out.append((value, 1, int(value > 0)))
  return out


def ref_sigmoid(setup, t, b):
  """Per anchor: (sum over every pair, 1 per real anchor, non-zero pairs)."""
  out = []
  for i in range(len(setup.labels)):
    if not setup.where[i]:
      out.append((0.0, 0, 0))
      continue
    vals = [_softplus(-(t * _cos(setup, i, j) + b)) for j in setup.positives(i)]
    vals += [_softplus(t * _cos(setup, i, k) + b) for k in setup.negatives(i)]
    total, _, nonzero = ref._collect(vals)  # pylint: disable=protected-access
    out.append((total, 1, nonzero))
  return out


# name -> (library call (x, y, where, reduction, **kw), reference(setup))
LOSSES = {
    "ntxent": (
        lambda x, y, w, r, **kw: contrastive.ntxent_loss(
            x, y, temperature=TAU, where=w, reduction=r, **kw),
        lambda s: ref_ntxent(s, TAU)),
    "supcon": (
        lambda x, y, w, r, **kw: contrastive.supcon_loss(
            x, y, temperature=TAU, where=w, reduction=r, **kw),
        lambda s: ref_supcon(s, TAU)),
    "sigmoid": (
        lambda x, y, w, r, **kw: contrastive.sigmoid_loss(
            x, y, temperature=jnp.asarray(T), bias=jnp.asarray(B), where=w,
            reduction=r, **kw),
        lambda s: ref_sigmoid(s, T, B)),
    "sigmoid_blocked": (
        lambda x, y, w, r, **kw: contrastive.sigmoid_loss(
            x, y, temperature=jnp.asarray(T), bias=jnp.asarray(B), where=w,
            reduction=r, block_size=5, **kw),
        lambda s: ref_sigmoid(s, T, B)),
}
NAMES = sorted(LOSSES)


def _check(actual, expected, rtol=2e-5, atol=2e-5):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert np.all(np.isfinite(actual))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, strict=True)


# ---------------------------------------------------------------------------
# values


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name):
  """Four reductions, five label patterns, two shapes, under one jit."""
  call, reference = LOSSES[name]

  @jax.jit
  def all_reductions(x, y, w):
    return {r: call(x, y, w, r) for r in REDUCTIONS}

  for pattern, batch, _, x, y, w in cases.all_cases():
    out = all_reductions(x, y, np.ones(batch, bool) if w is None else w)
    terms = reference(ref.Setup(x, y, w))
    for reduction in REDUCTIONS:
      value = out[reduction]
      assert value.dtype == jnp.float32
      try:
        _check(value, np.asarray(ref.reduce(terms, reduction), np.float32))
      except AssertionError as e:
        raise AssertionError(f"{name} {reduction} {pattern} B={batch}") from e
    np.testing.assert_allclose(jnp.sum(out["none"]), out["sum"], rtol=1e-5, atol=1e-6)


def test_label_patterns_give_what_they_must():
  """Patterns with a known answer: no negative or no positive gives 0; two views
  per label make NT-Xent and SupCon one loss; SigLIP "mean" divides by real rows."""
  x, _, _ = cases.make("pk", 7, 3)
  for name in ("ntxent", "supcon"):
    for y in (np.full(7, 3), np.arange(7)):       # no negative / no positive: 0
      assert float(LOSSES[name][0](x, y, None, "mean")) == 0.0
  # Two views per label: NT-Xent and SupCon coincide (one positive per anchor).
  y = np.array([0, 0, 1, 1, 2, 2, 3])
  _check(LOSSES["ntxent"][0](x, y, None, "none"), LOSSES["supcon"][0](x, y, None, "none"),
         rtol=1e-6, atol=1e-6)
  # SigLIP "mean" is the sum over pairs over the number of real rows.
  w = np.array([True] * 5 + [False] * 2)
  _check(LOSSES["sigmoid"][0](x, y, w, "mean") * 5, LOSSES["sigmoid"][0](x, y, w, "sum"),
         rtol=1e-6, atol=0)


def test_hand_computed_values():
  x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  y = jnp.array([0, 0, 1, 1])
  # Positive cos 1, negatives cos 0. NT-Xent per pair: log(1 + 2 e^{-1/tau}).
  expected = math.log1p(2 * math.exp(-1 / 0.5))
  _check(contrastive.ntxent_loss(x, y, temperature=0.5), np.float32(expected), 1e-6, 0)
  _check(contrastive.ntxent_loss(x, y, temperature=0.5, reduction="none"),
         np.full(4, expected, np.float32), 1e-6, 0)
  # SupCon with one positive is NT-Xent.
  _check(contrastive.supcon_loss(x, y, temperature=0.5), np.float32(expected), 1e-6, 0)
  # SigLIP: softplus(-(t + b)) + 2 softplus(b) per anchor; mean over 4 anchors.
  t, b = 3.0, -1.0
  per = _softplus(-(t + b)) + 2 * _softplus(b)
  _check(contrastive.sigmoid_loss(x, y, temperature=jnp.array(t), bias=jnp.array(b)),
         np.float32(per), 1e-6, 0)


def test_memory_bank_is_concatenation_semantics():
  """Bank rows are candidates (not anchors) exactly as in the reference on
  batch + bank, and no gradient flows into them."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((6, 4)).astype(np.float32)
  y = np.array([0, 0, 1, 1, 2, 3], np.int32)
  refs = rng.standard_normal((5, 4)).astype(np.float32)
  ref_y = np.array([0, 3, 3, 9, 1], np.int32)
  ref_w = np.array([True, True, False, True, True])
  w = np.array([True, True, True, True, True, False])
  setup = ref.Setup(x, y, w, refs, ref_y, ref_w)
  for name in NAMES:
    call, reference = LOSSES[name]

    @jax.jit
    def run(r, call=call):
      bank = dict(ref_embeddings=r, ref_labels=ref_y, ref_where=ref_w)
      out = {red: call(x, y, w, red, **bank) for red in REDUCTIONS}
      return out, jax.grad(lambda r: call(x, y, w, "mean", ref_embeddings=r,
                                          ref_labels=ref_y, ref_where=ref_w))(r)

    out, g_refs = run(refs)
    for reduction in REDUCTIONS:
      _check(out[reduction], np.asarray(ref.reduce(reference(setup), reduction), np.float32))
    assert np.all(np.asarray(g_refs) == 0), name


# ---------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
  x, y, w = cases.make("padding", 9, 3, seed=7)
  y = y.copy()
  y[-3:] = [40, 41, 42]                 # some anchors without positives
  with jax.enable_x64(True):
    f = jax.jit(lambda e: LOSSES[name][0](e, y, jnp.asarray(w), "mean"))
    check_grads(f, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("name", ["ntxent", "supcon"])
def test_learnable_temperature(name):
  loss = {"ntxent": contrastive.ntxent_loss, "supcon": contrastive.supcon_loss}[name]
  x, y, w = cases.make("padding", 9, 3, seed=2)
  with jax.enable_x64(True):
    f = jax.jit(lambda e, tau: loss(e, y, temperature=tau, where=jnp.asarray(w)))
    check_grads(f, (jnp.asarray(x, jnp.float64), jnp.asarray(0.3, jnp.float64)), order=1,
                modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("block_size", [None, 4])
def test_sigmoid_temperature_and_bias_are_learnable(block_size):
  """Gradients reach t and b, equal finite differences, and are what they must be."""
  x, y, w = cases.make("padding", 9, 3, seed=4)
  with jax.enable_x64(True):
    f = jax.jit(lambda e, t, b: contrastive.sigmoid_loss(
        e, y, temperature=t, bias=b, where=jnp.asarray(w), block_size=block_size))
    args = (jnp.asarray(x, jnp.float64), jnp.asarray(T, jnp.float64),
            jnp.asarray(B, jnp.float64))
    check_grads(f, args, order=1, modes=["rev"], eps=1e-6)
    _, g_t, g_b = jax.grad(f, argnums=(0, 1, 2))(*args)
    # d/db = mean over anchors of sum_pairs (sigmoid(z) - [positive]); by hand:
    setup = ref.Setup(x, y, w)
    sig = lambda v: 1 / (1 + math.exp(-v))
    db = dt = 0.0
    for i in setup.anchors():
      for j in setup.positives(i):
        s = _cos(setup, i, j)
        db += sig(T * s + B) - 1
        dt += (sig(T * s + B) - 1) * s
      for k in setup.negatives(i):
        s = _cos(setup, i, k)
        db += sig(T * s + B)
        dt += sig(T * s + B) * s
    n = len(setup.anchors())
    np.testing.assert_allclose(g_b, db / n, rtol=1e-10, strict=True)
    np.testing.assert_allclose(g_t, dt / n, rtol=1e-10, strict=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_duplicates_no_valid_anchor_and_padding(name, dtype):
  call = LOSSES[name][0]
  grad = jax.jit(jax.value_and_grad(lambda x, y, w: call(x, y, w, "mean")))
  labels = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)

  # Identical embeddings: every cosine is 1, so the gradient is exactly 0.
  x = jnp.ones((6, 4), dtype)
  value, g = grad(x, labels, jnp.ones(6, bool))
  assert value.dtype == dtype and g.dtype == dtype
  assert np.isfinite(float(value)) and np.all(np.asarray(g, np.float32) == 0)

  # No positive pair (all labels distinct): NT-Xent / SupCon are 0 with gradient
  # exactly 0; the sigmoid loss still has its negative pairs.
  x = jnp.asarray(cases.make("pk", 6, 4)[0], dtype)
  value, g = grad(x, jnp.arange(6, dtype=jnp.int32), jnp.ones(6, bool))
  g = np.asarray(g, np.float32)
  assert np.all(np.isfinite(g))
  if name.startswith("sigmoid"):
    assert float(value) > 0 and np.any(g != 0)
  else:
    assert float(value) == 0 and np.all(g == 0)

  # Padding rows get exactly zero gradient, whatever they hold (even NaN / inf).
  x = x.at[2].set(1e4).at[5].set(jnp.nan if dtype == jnp.float32 else jnp.inf)
  where = jnp.array([True, True, False, True, True, False])
  value, g = grad(x, labels, where)
  g = np.asarray(g, np.float32)
  assert np.isfinite(float(value))
  assert np.all(g[[2, 5]] == 0) and np.all(np.isfinite(g)) and np.any(g != 0)


def test_extreme_temperatures_stay_finite():
  x, y, _ = cases.make("singletons", 12, 5)
  for loss in (contrastive.ntxent_loss, contrastive.supcon_loss):
    f = jax.jit(jax.value_and_grad(lambda e, tau, loss=loss: loss(e, y, temperature=tau),
                                   argnums=(0, 1)))
    for tau in (1e-4, 1e4):
      v, g = f(x, jnp.float32(tau))
      assert np.isfinite(float(v)) and all(np.all(np.isfinite(a)) for a in g)
  f = jax.jit(jax.value_and_grad(
      lambda e, t, b: contrastive.sigmoid_loss(e, y, temperature=t, bias=b),
      argnums=(0, 1, 2)))
  for t, b in ((1e4, -1e4), (1e-4, 1e4), (0.0, 0.0)):
    v, g = f(x, jnp.float32(t), jnp.float32(b))
    assert np.isfinite(float(v)) and all(np.all(np.isfinite(a)) for a in g)


# ---------------------------------------------------------------------------
# the blocked sigmoid path


@functools.lru_cache(maxsize=None)
def _blocks_case(block_size):
  """Values of every reduction, and gradients (embeddings, temperature, bias) of a
  random combination of them, with padding and a memory bank."""
  x, y, w = cases.make("padding", 9, 3, seed=1)
  rng = np.random.default_rng(1)
  bank = dict(ref_embeddings=rng.standard_normal((4, 3)).astype(np.float32),
              ref_labels=np.array([100, 7, 105, 7], np.int32),
              ref_where=np.array([True, True, False, True]))
  weights = rng.uniform(0.5, 1.5, len(REDUCTIONS) - 1)
  per_anchor = rng.uniform(0.5, 1.5, 9)

  def f(e, t, b):
    out = {r: contrastive.sigmoid_loss(e, y, temperature=t, bias=b, where=w, reduction=r,
                                       block_size=block_size, **bank) for r in REDUCTIONS}
    scalars = jnp.stack([out[r] for r in REDUCTIONS if r != "none"])
    return jnp.dot(weights, scalars) + jnp.dot(per_anchor, out["none"]), out

  (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
      x, jnp.float32(T), jnp.float32(B))
  return out, grads


@pytest.mark.parametrize("block_size", [1, 4])
def test_sigmoid_blocks_equal_dense(block_size):
  """13 candidates in blocks of 1 and of 4 (the last one padded)."""
  for dense, blocked in zip(jax.tree.leaves(_blocks_case(None)),
                            jax.tree.leaves(_blocks_case(block_size))):
    np.testing.assert_allclose(blocked, dense, rtol=2e-6, atol=1e-7, strict=True)


def _intermediate_shapes(jaxpr):
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      yield tuple(getattr(v.aval, "shape", ()))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns"):
          yield from _intermediate_shapes(sub)
        elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
          yield from _intermediate_shapes(sub.jaxpr)


def test_sigmoid_blocks_never_hold_the_full_logits():
  """Forward and backward: no [batch, batch] intermediate exists with blocks."""
  n = 64
  x = jnp.zeros((n, 3))
  y = jnp.arange(n) // 4

  def shapes(block_size):
    f = lambda e, t, b: contrastive.sigmoid_loss(e, y, temperature=t, bias=b,
                                                 block_size=block_size)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(f, argnums=(0, 1, 2)))(
        x, jnp.float32(T), jnp.float32(B))
    return set(_intermediate_shapes(jaxpr.jaxpr))

  assert (n, n) in shapes(None)              # the check can fail
  blocked = shapes(8)
  assert (n, 8) in blocked
  # Nothing near B x B either: not the logits, nor a stack of per-block residuals.
  assert max(math.prod(s) for s in blocked) <= n * n // 4, sorted(blocked, key=math.prod)[-3:]


def test_invalid_arguments():
  x, y, _ = cases.make("pk", 6, 3)
  with pytest.raises(ValueError, match="temperature"):
    contrastive.ntxent_loss(x, y, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    contrastive.supcon_loss(x, y, temperature=jnp.ones(2))
  with pytest.raises(ValueError, match="bias"):
    contrastive.sigmoid_loss(x, y, temperature=1.0, bias=jnp.zeros(3))
  with pytest.raises(TypeError, match="block_size"):
    contrastive.sigmoid_loss(x, y, temperature=1.0, bias=0.0, block_size=2.0)
  with pytest.raises(ValueError, match="block_size"):
    contrastive.sigmoid_loss(x, y, temperature=1.0, bias=0.0, block_size=0)
  with pytest.raises(ValueError, match="reduction"):
    contrastive.ntxent_loss(x, y, reduction="avg")
  with pytest.raises(ValueError, match="labels"):
    contrastive.supcon_loss(x, y[:-1])
  with pytest.raises(TypeError):
    contrastive.sigmoid_loss(x, y)                       # t and b are required


# ---------------------------------------------------------------------------
# global batch across devices (8 fake CPU devices, conftest.py)

N = 8
PARALLEL = {
    "ntxent": functools.partial(contrastive.ntxent_loss, temperature=TAU),
    "supcon": functools.partial(contrastive.supcon_loss, temperature=TAU),
    "sigmoid": functools.partial(contrastive.sigmoid_loss, temperature=T, bias=B),
    "sigmoid_blocked": functools.partial(contrastive.sigmoid_loss, temperature=T, bias=B,
                                         block_size=5),
}


def _global_batch():
  x, y, _ = cases.make("pk", 3 * N, 4, seed=5)
  where = np.ones(3 * N, bool)
  where[[2, 9, 10, 23]] = False                  # padding on several devices
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(where)


@pytest.mark.parametrize("name", ["ntxent", "supcon", "sigmoid_blocked"])
def test_pmap_equals_single_device(name):
  x, y, w = _global_batch()
  value, grad = jax.value_and_grad(lambda e: PARALLEL[name](e, y, where=w))(x)
  shard = lambda a: a.reshape((N, -1) + a.shape[1:])

  @functools.partial(jax.pmap, axis_name="data")
  def step(xs, ys, ws):
    return jax.value_and_grad(lambda e: PARALLEL[name](e, ys, where=ws, axis_name="data"))(xs)

  values, grads = step(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6, strict=True)
  np.testing.assert_allclose(grads.reshape(grad.shape), grad, rtol=1e-4, atol=1e-6,
                             strict=True)


@pytest.mark.parametrize("block_size", [None, 5])
def test_pmap_sigmoid_parameter_gradients_sum_to_single_device(block_size):
  """Each device differentiates its share: summed over devices (as a data-parallel
  step does) the temperature and bias gradients are the single-device ones."""
  x, y, w = _global_batch()
  f = lambda e, t, b, ys, ws, axis=None: contrastive.sigmoid_loss(
      e, ys, temperature=t, bias=b, where=ws, block_size=block_size, axis_name=axis)
  g = jax.grad(f, argnums=(1, 2))(x, jnp.float32(T), jnp.float32(B), y, w)
  shard = lambda a: a.reshape((N, -1) + a.shape[1:])
  gs = jax.pmap(jax.grad(functools.partial(f, axis="data"), argnums=(1, 2)),
                axis_name="data", in_axes=(0, None, None, 0, 0))(
                    shard(x), jnp.float32(T), jnp.float32(B), shard(y), shard(w))
  for single, per_device in zip(g, gs):
    np.testing.assert_allclose(jnp.sum(per_device), single, rtol=1e-5, strict=True)


@pytest.mark.parametrize("name", ["ntxent", "sigmoid_blocked"])
def test_shard_map_equals_single_device(name):
  mesh = jax.make_mesh((N,), ("data",))
  x, y, w = _global_batch()
  value, grad = jax.value_and_grad(lambda e: PARALLEL[name](e, y, where=w))(x)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data"),
                     out_specs=(P("data"), P("data")))
  def step(xs, ys, ws):
    v, g = jax.value_and_grad(
        lambda e: PARALLEL[name](e, ys, where=ws, axis_name="data"))(xs)
    return v[None], g

  put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))
  values, grads = step(put(x), put(y), put(w))
  np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6, strict=True)
  np.testing.assert_allclose(grads, grad, rtol=1e-4, atol=1e-6, strict=True)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("name", ["sigmoid_blocked"])
def test_jit_over_a_sharded_mesh_equals_single_device(name, explicit):
  x, y, w = _global_batch()
  value, grad = jax.value_and_grad(lambda e: PARALLEL[name](e, y, where=w))(x)
  types = (jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto,)
  mesh = jax.make_mesh((N,), ("data",), axis_types=types)
  with jax.set_mesh(mesh):
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))
    v, g = jax.jit(jax.value_and_grad(lambda e, yy, ww: PARALLEL[name](e, yy, where=ww)))(
        put(x), put(y), put(w))
  np.testing.assert_allclose(v, value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# property test (hypothesis)

settings.register_profile("contrastive", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
_PROFILE = "contrastive" if os.environ.get("ML_HYPOTHESIS_PROFILE") != "large" else "large"


@st.composite
def _batches(draw):
  b = draw(st.sampled_from((4, 7)))
  d = 3
  rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
  labels = draw(st.sampled_from([
      lambda: rng.integers(0, 3, b), lambda: np.full(b, 7), lambda: np.arange(b) * 5 - 9,
      lambda: np.r_[[0, 0], np.arange(1, b - 1)], lambda: rng.integers(0, 2, b)]))()
  scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 0.0]))
  x = (scale * rng.standard_normal((b, d))).astype(np.float32)
  if draw(st.booleans()):                       # exact duplicate rows
    x[rng.integers(0, b, b // 2)] = x[0]
  where = rng.random(b) < 0.8 if draw(st.booleans()) else np.ones(b, bool)
  return x, labels.astype(np.int32), where


@functools.lru_cache(maxsize=None)
def _compiled(name):
  call = LOSSES[name][0]
  return jax.jit(jax.value_and_grad(lambda x, y, w: call(x, y, w, "mean")))


@pytest.mark.parametrize("name", NAMES)
@settings(settings.get_profile(_PROFILE))
@given(batch=_batches(), dtype=st.sampled_from(["float32", "bfloat16", "float16"]))
def test_property_finite_and_matches_reference(name, batch, dtype):
  x, y, w = batch
  value, grad = _compiled(name)(jnp.asarray(x, dtype), y, w)
  assert value.dtype == jnp.dtype(dtype) and grad.dtype == jnp.dtype(dtype)
  g = np.asarray(grad, np.float32)
  assert np.isfinite(float(value)) and np.all(np.isfinite(g))
  assert np.all(g[~w] == 0)                     # padding gets no gradient
  if dtype == "float32":
    expected = ref.reduce(LOSSES[name][1](ref.Setup(x, y, w)), "mean")
    np.testing.assert_allclose(float(value), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# parity with optax and pytorch-metric-learning (float64, values and gradients)


def _parity_batches():
  for pattern in ("pk", "singletons"):
    for batch, dim in ((12, 5), (9, 3)):
      x, y, _ = cases.make(pattern, batch, dim, seed=11)
      yield pattern, x.astype(np.float64), y


def _torch_value_and_grad(loss, x, y):
  torch = pytest.importorskip("torch")
  emb = torch.tensor(x, dtype=torch.float64, requires_grad=True)
  value = loss(emb, torch.tensor(y, dtype=torch.int64))
  value.backward()
  return value.item(), emb.grad.numpy()


@functools.lru_cache(maxsize=None)
def _jitted(loss, **kw):
  return jax.jit(jax.value_and_grad(
      lambda e, y, tau, w: loss(e, y, temperature=tau, where=w, **kw)))


def _ours(loss, x, y, tau, where=None, **kw):
  with jax.enable_x64(True):
    w = np.ones(len(y), bool) if where is None else where
    v, g = _jitted(loss, **kw)(jnp.asarray(x), jnp.asarray(y), jnp.float64(tau), w)
    return float(v), np.asarray(g)


@functools.lru_cache(maxsize=None)
def _optax_ntxent():
  optax = pytest.importorskip("optax")
  return jax.jit(jax.value_and_grad(optax.losses.ntxent))


@pytest.mark.peers
@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_ntxent_equals_optax(tau):
  pytest.importorskip("optax")
  for pattern, x, y in _parity_batches():
    v, g = _ours(contrastive.ntxent_loss, x, y, tau)
    with jax.enable_x64(True):
      pv, pg = _optax_ntxent()(jnp.asarray(x), jnp.asarray(y), jnp.float64(tau))
    np.testing.assert_allclose(v, float(pv), rtol=1e-5, atol=1e-8, err_msg=pattern)
    np.testing.assert_allclose(g, np.asarray(pg), rtol=1e-5, atol=1e-8, strict=True,
                               err_msg=pattern)


@pytest.mark.peers
@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_ntxent_equals_pytorch_metric_learning(tau):
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  for pattern, x, y in _parity_batches():
    v, g = _ours(contrastive.ntxent_loss, x, y, tau)
    pv, pg = _torch_value_and_grad(losses.NTXentLoss(temperature=tau), x, y)
    np.testing.assert_allclose(v, pv, rtol=1e-5, atol=1e-8, err_msg=pattern)
    np.testing.assert_allclose(g, pg, rtol=1e-5, atol=1e-8, strict=True, err_msg=pattern)


@pytest.mark.peers
@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero"])
@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_supcon_equals_pytorch_metric_learning(tau, reduction):
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  for pattern, x, y in _parity_batches():
    v, g = _ours(contrastive.supcon_loss, x, y, tau, reduction=reduction)
    pv, pg = _torch_value_and_grad(losses.SupConLoss(temperature=tau), x, y)
    np.testing.assert_allclose(v, pv, rtol=1e-5, atol=1e-8, err_msg=pattern)
    np.testing.assert_allclose(g, pg, rtol=1e-5, atol=1e-8, strict=True, err_msg=pattern)


@pytest.mark.peers
def test_padding_equals_peers_on_the_real_rows():
  """``where`` equals slicing the padding out, as the peers see it."""
  pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  x, y, w = cases.make("padding", 12, 5, seed=3)
  x = x.astype(np.float64)
  for ours, theirs in ((contrastive.ntxent_loss, losses.NTXentLoss(temperature=0.1)),
                       (contrastive.supcon_loss, losses.SupConLoss(temperature=0.1))):
    v, g = _ours(ours, x, y, 0.1, where=w)
    pv, pg = _torch_value_and_grad(theirs, x[w], y[w])
    np.testing.assert_allclose(v, pv, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g[w], pg, rtol=1e-5, atol=1e-8, strict=True)
    assert np.all(g[~w] == 0)
