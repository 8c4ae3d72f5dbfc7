"""Proxy / classifier losses: float64 loops, gradients, dtypes, pmap, PML parity."""

import functools
import math

import cases
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from metric_learning import models
from metric_learning.losses import proxies as px

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

# --------------------------------------------------------------------------- #
# Float64 brute-force references: explicit loops, nothing shared with the library.
# --------------------------------------------------------------------------- #


def _unit(v):
  v = np.asarray(v, np.float64)
  n = math.sqrt(float(v @ v))
  return v / n if n > 0 else v


def _cos(a, b):
  return float(_unit(a) @ _unit(b))


def _xent(logits, target):
  """-log softmax(logits)[target] = log(1 + sum_{c != target} e^(z_c - z_target))."""
  return math.log1p(sum(math.exp(v - logits[target]) for c, v in enumerate(logits)
                        if c != target))


# float32 exponentials underflow to 0 below ~1e-38: "mean_nonzero" counts as
# non-zero what float32 can represent.
_TINY = 1e-35


def _rows(x, y, w, per_row):
  """Per-row (value, count, nonzero) with padding rows (0, 0, 0)."""
  out = []
  for i in range(len(y)):
    if w is not None and not w[i]:
      out.append((0.0, 0, 0))
      continue
    v = per_row(x[i], int(y[i]))
    out.append((v, 1, int(v > _TINY)))
  return out


def _reduce(per_row, reduction):
  values = np.array([v for v, _, _ in per_row])
  if reduction == "none":
    return values
  if reduction == "sum":
    return float(values.sum())
  den = sum(c if reduction == "mean" else n for _, c, n in per_row)
  return float(values.sum()) / den if den else 0.0


def ref_proxy_anchor(x, y, w, p, reduction, margin=0.1, alpha=32.0):
  real = [i for i in range(len(y)) if w is None or w[i]]
  pos, neg = [], []
  for c in range(len(p)):
    sp = [math.exp(-alpha * (_cos(x[i], p[c]) - margin)) for i in real if y[i] == c]
    sn = [math.exp(alpha * (_cos(x[i], p[c]) + margin)) for i in real if y[i] != c]
    pos.append(math.log1p(sum(sp)))
    neg.append(math.log1p(sum(sn)))
  pos, neg = np.array(pos), np.array(neg)
  if reduction == "none":
    return pos + neg
  if reduction == "sum":
    return float((pos + neg).sum())
  if reduction == "mean":
    n_pos = sum(1 for c in range(len(p)) if any(y[i] == c for i in real))
    n_neg = len(p)
  else:
    n_pos, n_neg = int((pos > _TINY).sum()), int((neg > _TINY).sum())
  return ((pos.sum() / n_pos if n_pos else 0.0) + (neg.sum() / n_neg if n_neg else 0.0))


def ref_proxy_nca(x, y, w, p, reduction, scale=1.0):
  def row(xi, yi):
    d = [float(np.sum((_unit(xi) - _unit(pc)) ** 2)) for pc in p]
    return _xent([-scale * v for v in d], yi)
  return _reduce(_rows(x, y, w, row), reduction)


def ref_soft_triple(x, y, w, p, reduction, k=10, la=20.0, gamma=0.1, margin=0.01):
  def row(xi, yi):
    logits = []
    for c in range(len(p) // k):
      s = [_cos(xi, p[c * k + j]) for j in range(k)]
      e = [math.exp(v / gamma) for v in s]
      sim = sum(ej * sj for ej, sj in zip(e, s)) / sum(e)
      logits.append(la * (sim - (margin if c == yi else 0.0)))
    return _xent(logits, yi)
  return _reduce(_rows(x, y, w, row), reduction)


def ref_normalized_softmax(x, y, w, p, reduction, temperature=0.05):
  row = lambda xi, yi: _xent([_cos(xi, pc) / temperature for pc in p], yi)
  return _reduce(_rows(x, y, w, row), reduction)


def _arc(c, m):
  theta = math.acos(max(-1.0, min(1.0, c)))
  return math.cos(theta + m) if theta <= math.pi - m else c - m * math.sin(m)


def ref_margin_softmax(x, y, w, p, reduction, kind, margin, scale=64.0, k=1):
  def row(xi, yi):
    cos = [max(_cos(xi, p[c * k + j]) for j in range(k)) for c in range(len(p) // k)]
    target = _arc(cos[yi], margin) if kind == "arc" else cos[yi] - margin
    return _xent([scale * (target if c == yi else v) for c, v in enumerate(cos)], yi)
  return _reduce(_rows(x, y, w, row), reduction)


# name -> (library call(x, y, p, where, reduction), reference(x, y, w, p, reduction), k)
LOSSES = {
    "proxy_anchor": (lambda x, y, p, w, r: px.proxy_anchor_loss(x, y, p, where=w, reduction=r),
                     ref_proxy_anchor, 1),
    "proxy_anchor_m": (
        lambda x, y, p, w, r: px.proxy_anchor_loss(x, y, p, margin=0.3, alpha=4.0, where=w,
                                                   reduction=r),
        functools.partial(ref_proxy_anchor, margin=0.3, alpha=4.0), 1),
    "proxy_nca": (lambda x, y, p, w, r: px.proxy_nca_loss(x, y, p, scale=3.0, where=w,
                                                          reduction=r),
                  functools.partial(ref_proxy_nca, scale=3.0), 1),
    "soft_triple": (
        lambda x, y, p, w, r: px.soft_triple_loss(x, y, p, centers_per_class=3, where=w,
                                                  reduction=r),
        functools.partial(ref_soft_triple, k=3), 3),
    "normalized_softmax": (
        lambda x, y, p, w, r: px.normalized_softmax_loss(x, y, p, where=w, reduction=r),
        ref_normalized_softmax, 1),
    "arcface": (lambda x, y, p, w, r: px.arcface_loss(x, y, p, where=w, reduction=r),
                functools.partial(ref_margin_softmax, kind="arc", margin=0.5), 1),
    "arcface_wide": (  # a margin large enough to reach the monotonic branch
        lambda x, y, p, w, r: px.arcface_loss(x, y, p, margin=2.0, scale=8.0, where=w,
                                              reduction=r),
        functools.partial(ref_margin_softmax, kind="arc", margin=2.0, scale=8.0), 1),
    "cosface": (lambda x, y, p, w, r: px.cosface_loss(x, y, p, where=w, reduction=r),
                functools.partial(ref_margin_softmax, kind="cos", margin=0.35), 1),
    "subcenter_arcface": (
        lambda x, y, p, w, r: px.subcenter_arcface_loss(x, y, p, sub_centers=2, where=w,
                                                        reduction=r),
        functools.partial(ref_margin_softmax, kind="arc", margin=0.5, k=2), 2),
}
NAMES = sorted(LOSSES)
# One configuration per code path, for the slower tests.
CORE = [n for n in NAMES if n not in ("proxy_anchor_m", "arcface_wide")]
REDUCTIONS = ("mean", "sum", "none", "mean_nonzero")


def _class_labels(y, w):
  """The case's label pattern as class indices 0..n-1; padding rows get -1."""
  _, y = np.unique(y, return_inverse=True)
  y = y.astype(np.int32)
  if w is not None:
    y = np.where(w, y, -1).astype(np.int32)
  return y


def _proxies(num_classes, k, dim, seed=0):
  rng = np.random.default_rng([seed, num_classes, k, dim])
  return rng.standard_normal((num_classes * k, dim)).astype(np.float32)


def _inputs(pattern, batch, dim, k, seed=0):
  x, y, w = cases.make(pattern, batch, dim, seed=seed)
  y = _class_labels(y, w)
  num_classes = batch + 2    # fixed per shape (one compile); always some classes without rows
  return x, y, w, _proxies(num_classes, k, dim, seed)


@pytest.mark.parametrize("name", NAMES)
def test_matches_float64_loops(name):
  call, reference, k = LOSSES[name]
  # One compiled function per shape returns every reduction.
  fn = jax.jit(lambda x, y, p, w: [call(x, y, p, w, r) for r in REDUCTIONS])
  for pattern, batch, dim, x, _, _ in cases.all_cases():
    x, y, w, p = _inputs(pattern, batch, dim, k)
    wj = jnp.ones(batch, bool) if w is None else jnp.asarray(w)
    for reduction, out in zip(REDUCTIONS, fn(x, y, p, wj)):
      want = np.asarray(reference(x, y, w, p, reduction), np.float32)
      assert out.dtype == jnp.float32
      np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5, strict=True,
                                 err_msg=f"{name} {pattern} {batch} {reduction}")


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_slicing_rows_out(name):
  call, _, k = LOSSES[name]
  x, y, w, p = _inputs("padding", 12, 5, k)
  fn = jax.jit(lambda x, y, w: [call(x, y, p, w, r) for r in ("mean", "sum")])
  for masked, sliced in zip(fn(x, y, jnp.asarray(w)), fn(x[w], y[w], None)):
    np.testing.assert_allclose(masked, sliced, rtol=1e-6, atol=1e-6, strict=True)


@pytest.mark.parametrize("name", CORE + ["arcface_wide"])
def test_gradients_match_finite_differences_for_embeddings_and_proxies(name):
  call, _, k = LOSSES[name]
  x, y, w, p = _inputs("padding", 9, 3, k, seed=3)
  with jax.enable_x64(True):
    f = jax.jit(lambda e, q: call(e, y, q, jnp.asarray(w), "mean"))
    check_grads(f, (jnp.asarray(x, jnp.float64), jnp.asarray(p, jnp.float64)), order=1,
                modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_finite_gradients_and_exact_zeros_on_padding(dtype):
  labels = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)
  ps = {name: jnp.asarray(_proxies(3, LOSSES[name][2], 4), dtype) for name in CORE}

  @jax.jit
  def grads(x, y, w):    # every loss in one program: one compile per dtype
    return {name: jax.value_and_grad(
        lambda e, q, name=name: LOSSES[name][0](e, y, q, w, "mean"), argnums=(0, 1))(
            x, ps[name]) for name in CORE}

  def finite(a):
    return np.all(np.isfinite(np.asarray(a, np.float32)))

  # Identical embeddings, and embeddings equal to their proxies (cos = 1 exactly).
  p0 = ps["proxy_anchor"]
  for x in (jnp.ones((6, 4), dtype), p0[labels]):
    for name, (value, (gx, gp)) in grads(x, labels, jnp.ones(6, bool)).items():
      assert value.dtype == dtype and gx.dtype == dtype and gp.dtype == dtype, name
      assert finite(value) and finite(gx) and finite(gp), name

  # Padding rows: exactly zero gradient whatever they hold (labels included).
  x = jnp.asarray(cases.make("pk", 6, 4)[0], dtype)
  x = x.at[2].set(1e4).at[5].set(jnp.nan if dtype == jnp.float32 else 0)
  where = jnp.array([True, True, False, True, True, False])
  for name, (value, (gx, gp)) in grads(x, labels.at[2].set(-1).at[5].set(99), where).items():
    gx = np.asarray(gx, np.float32)
    assert finite(value) and finite(gp) and finite(gx), name
    assert np.all(gx[[2, 5]] == 0), name

  # Nothing real: loss 0 and gradients exactly 0.
  for name, (value, (gx, gp)) in grads(x, labels, jnp.zeros(6, bool)).items():
    assert float(value) == 0, name
    assert np.all(np.asarray(gx, np.float32) == 0), name
    assert np.all(np.asarray(gp, np.float32) == 0), name


def test_labels_are_validated_naming_the_arguments():
  x, p = jnp.ones((4, 3)), jnp.ones((2, 3))
  with pytest.raises(ValueError, match=r"labels must index the rows of proxies.*\[5\]"):
    px.proxy_anchor_loss(x, jnp.array([0, 1, 5, 0]), p)
  with pytest.raises(ValueError, match=r"labels must index the rows of proxies.*\[-1\]"):
    px.arcface_loss(x, jnp.array([0, -1, 1, 0]), p)
  # Padding rows may hold any label.
  px.cosface_loss(x, jnp.array([0, -1, 1, 7]), p, where=jnp.array([True, False, True, False]))
  with pytest.raises(ValueError, match="proxies must have num_classes \\* 3 rows"):
    px.soft_triple_loss(x, jnp.array([0, 0, 0, 0]), jnp.ones((4, 3)), centers_per_class=3)
  with pytest.raises(ValueError, match="sub_centers must be a positive int"):
    px.subcenter_arcface_loss(x, jnp.array([0, 0, 0, 0]), p, sub_centers=0)
  with pytest.raises(ValueError, match="same embedding dimension"):
    px.normalized_softmax_loss(x, jnp.array([0, 0, 0, 0]), jnp.ones((2, 4)))
  with pytest.raises(TypeError, match="labels must have an integer dtype"):
    px.proxy_nca_loss(x, jnp.zeros(4), p)
  with pytest.raises(ValueError, match="alpha must be positive"):
    px.proxy_anchor_loss(x, jnp.array([0, 0, 0, 0]), p, alpha=0.0)
  with pytest.raises(ValueError, match="reduction must be one of"):
    px.arcface_loss(x, jnp.array([0, 0, 0, 0]), p, reduction="avg")
  # Under jit the labels cannot be checked: a bad label of a real row gives NaN.
  for name in ("proxy_anchor", "arcface"):
    call = jax.jit(LOSSES[name][0], static_argnums=4)
    assert np.isnan(float(call(x, jnp.array([0, 1, 5, 0]), p, None, "mean")))


# --------------------------------------------------------------------------- #
# Global batch under pmap (8 fake CPU devices from conftest.py).
# --------------------------------------------------------------------------- #

N = 8


# (loss, reduction) pairs checked under pmap: every loss, and every reduction of
# proxy-anchor (the per-row losses share one reduction path).
PMAP_CASES = [(n, "mean") for n in CORE] + [("proxy_anchor", "sum"),
                                            ("proxy_anchor", "mean_nonzero"),
                                            ("arcface", "sum")]


def test_pmap_equals_single_device():
  """All cases in one pmap program (one compile keeps the test fast)."""
  x, y, _ = cases.make("pk", 3 * N, 4, seed=5)
  y = _class_labels(y, None)
  w = np.ones(3 * N, bool)
  w[[2, 9, 10, 23]] = False
  ps = {name: _proxies(int(y.max()) + 2, LOSSES[name][2], 4) for name, _ in PMAP_CASES}

  def all_cases(e, yy, ww, axis_name):
    return [jax.value_and_grad(_fn(name, reduction, axis_name), argnums=(0, 2))(
        e, yy, ps[name], ww) for name, reduction in PMAP_CASES]

  single = jax.jit(functools.partial(all_cases, axis_name=None))(x, y, w)
  shard = lambda a: a.reshape((N, -1) + a.shape[1:])
  step = jax.pmap(functools.partial(all_cases, axis_name="data"), axis_name="data")
  multi = step(shard(x), shard(y), shard(w))
  for case, (value, (gx, gp)), (values, (gxs, gps)) in zip(PMAP_CASES, single, multi):
    np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6, strict=True,
                               err_msg=str(case))
    np.testing.assert_allclose(gxs.reshape(gx.shape), gx, rtol=1e-4, atol=1e-6,
                               err_msg=str(case))
    # Proxies are replicated: the devices' shares sum to the single-device gradient.
    np.testing.assert_allclose(gps.sum(0), gp, rtol=1e-4, atol=1e-5 * np.abs(gp).max(),
                               strict=True, err_msg=str(case))


def _fn(name, reduction, axis_name):
  """(embeddings, labels, proxies, where) -> loss, with ``axis_name``."""
  fns = {
      "proxy_anchor": px.proxy_anchor_loss,
      "proxy_anchor_m": functools.partial(px.proxy_anchor_loss, margin=0.3, alpha=4.0),
      "proxy_nca": functools.partial(px.proxy_nca_loss, scale=3.0),
      "soft_triple": functools.partial(px.soft_triple_loss, centers_per_class=3),
      "normalized_softmax": px.normalized_softmax_loss,
      "arcface": px.arcface_loss,
      "arcface_wide": functools.partial(px.arcface_loss, margin=2.0, scale=8.0),
      "cosface": px.cosface_loss,
      "subcenter_arcface": functools.partial(px.subcenter_arcface_loss, sub_centers=2),
  }
  return lambda e, y, q, w: fns[name](e, y, q, where=w, reduction=reduction,
                                      axis_name=axis_name)


# --------------------------------------------------------------------------- #
# The NNX module.
# --------------------------------------------------------------------------- #


def test_proxies_module_init_and_training_with_an_encoder():
  proxies = models.Proxies(5, 16, per_class=2, rngs=nnx.Rngs(0))
  value = np.asarray(proxies())
  assert value.shape == (10, 16) and value.dtype == np.float32
  big = np.asarray(models.Proxies(200, 64, rngs=nnx.Rngs(1))())
  np.testing.assert_allclose(big.std(), math.sqrt(2 / 200), rtol=0.05)
  with pytest.raises(ValueError, match="num_classes must be a positive int"):
    models.Proxies(0, 4, rngs=nnx.Rngs(0))

  x, y, _ = cases.make("pk", 12, 8, seed=1)
  y = _class_labels(y, None)
  model = nnx.List([nnx.Linear(8, 6, rngs=nnx.Rngs(2)),
                    models.Proxies(4, 6, rngs=nnx.Rngs(3))])
  optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

  def loss_fn(m):
    return px.proxy_anchor_loss(m[0](x), y, m[1](), alpha=8.0)

  @nnx.jit
  def train_step(m, opt):
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    opt.update(m, grads)
    return loss

  before = np.asarray(model[1]())
  losses = [float(train_step(model, optimizer)) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]
  assert not np.allclose(np.asarray(model[1]()), before)      # the proxies were trained


# --------------------------------------------------------------------------- #
# Parity with pytorch-metric-learning (values and gradients, float64).
# --------------------------------------------------------------------------- #


def _pml(name, num_classes, dim):
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  kw = dict(num_classes=num_classes, embedding_size=dim)
  if name == "proxy_anchor":
    return losses.ProxyAnchorLoss(**kw), "proxies", False
  if name == "proxy_nca":
    return losses.ProxyNCALoss(softmax_scale=3.0, **kw), "proxies", False
  if name == "soft_triple":
    return losses.SoftTripleLoss(centers_per_class=3, **kw), "fc", True
  if name == "normalized_softmax":
    return losses.NormalizedSoftmaxLoss(**kw), "W", True
  if name == "arcface":
    return losses.ArcFaceLoss(**kw), "W", True
  if name == "cosface":
    return losses.CosFaceLoss(**kw), "W", True
  if name == "subcenter_arcface":
    return losses.SubCenterArcFaceLoss(sub_centers=2, **kw), "W", True
  raise ValueError(name)


OURS = {
    "proxy_anchor": px.proxy_anchor_loss,
    "proxy_nca": functools.partial(px.proxy_nca_loss, scale=3.0),
    "soft_triple": functools.partial(px.soft_triple_loss, centers_per_class=3),
    "normalized_softmax": px.normalized_softmax_loss,
    # pytorch-metric-learning's default margin is 28.6 degrees.
    "arcface": functools.partial(px.arcface_loss, margin=math.radians(28.6)),
    "cosface": px.cosface_loss,
    "subcenter_arcface": functools.partial(px.subcenter_arcface_loss, sub_centers=2,
                                           margin=math.radians(28.6)),
}


@pytest.mark.peers
@pytest.mark.parametrize("name", sorted(OURS))
def test_equals_pytorch_metric_learning(name):
  torch = pytest.importorskip("torch")
  k = {"soft_triple": 3, "subcenter_arcface": 2}.get(name, 1)
  worst = 0.0
  ours = jax.jit(jax.value_and_grad(lambda e, y, q: OURS[name](e, y, q), argnums=(0, 2)))
  for seed in range(3):
    rng = np.random.default_rng(seed)
    num_classes, batch, dim = 5, 12, 6
    x = rng.standard_normal((batch, dim))
    y = rng.integers(0, num_classes, batch).astype(np.int32)
    p = rng.standard_normal((num_classes * k, dim))
    with jax.enable_x64(True):
      value, (gx, gp) = ours(jnp.asarray(x), jnp.asarray(y), jnp.asarray(p))
    module, attr, transposed = _pml(name, num_classes, dim)
    param = getattr(module, attr)
    param.data = torch.tensor(p.T if transposed else p, dtype=torch.float64)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = module(xt, torch.tensor(y, dtype=torch.long))
    out.backward()
    gpt = param.grad.numpy()
    gpt = gpt.T if transposed else gpt
    np.testing.assert_allclose(float(value), out.item(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), rtol=1e-5, atol=1e-8,
                               strict=True)
    np.testing.assert_allclose(np.asarray(gp), gpt, rtol=1e-5, atol=1e-8, strict=True)
    worst = max(worst, abs(float(value) - out.item()) / max(abs(out.item()), 1e-12),
                float(np.max(np.abs(np.asarray(gx) - xt.grad.numpy()))),
                float(np.max(np.abs(np.asarray(gp) - gpt))))
  print(f"{name}: worst relative value / absolute gradient difference {worst:.2e}")


def _center_reg_loop(centers, num_classes, k, tau):
  """The SoftTriple centre regulariser with explicit loops over class pairs."""
  w = np.asarray(centers, np.float64)
  w = w / np.linalg.norm(w, axis=1, keepdims=True)
  total = 0.0
  for c in range(num_classes):
    for t in range(k):
      for s in range(t + 1, k):
        total += math.sqrt(2.0 + 1e-5 - 2.0 * float(w[c * k + t] @ w[c * k + s]))
  return tau * total / (num_classes * k * (k - 1))


def test_soft_triple_center_reg_matches_loops_and_pmap():
  """center_reg=τ adds the paper's term for every reduction; K = 1 and τ = 0
  add nothing; gradients are finite-difference exact; under pmap the term is
  counted once (value and gradients equal one device's)."""
  rng = np.random.default_rng(4)
  x = rng.standard_normal((8, 5)).astype(np.float32)
  y = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)
  centers = rng.standard_normal((4 * 3, 5)).astype(np.float32)
  call = lambda e, c, tau, r="mean", k=3: px.soft_triple_loss(
      e, y, c, centers_per_class=k, reduction=r, center_reg=tau)
  want = _center_reg_loop(centers, 4, 3, 0.2)
  assert want > 0
  for r in ("mean", "sum", "none"):
    np.testing.assert_allclose(call(x, centers, 0.2, r), np.asarray(call(x, centers, 0.0, r)) + want,
                               rtol=1e-5)
  np.testing.assert_array_equal(call(x, centers[:4], 0.2, k=1), call(x, centers[:4], 0.0, k=1))
  with jax.enable_x64(True):
    check_grads(lambda e, c: call(e, c, 0.2), (jnp.asarray(x, jnp.float64),
                                               jnp.asarray(centers, jnp.float64)),
                order=1, modes=["rev"], eps=1e-6)
  full = jax.value_and_grad(lambda e, c: call(e, c, 0.2), argnums=(0, 1))(x, centers)
  n = jax.device_count()
  xs, ys = x.reshape(n, -1, 5), y.reshape(n, -1)
  value, (gx, gc) = jax.pmap(jax.value_and_grad(
      lambda e, labels, c: px.soft_triple_loss(e, labels, c, centers_per_class=3,
                                               axis_name="d", center_reg=0.2),
      argnums=(0, 2)), axis_name="d", in_axes=(0, 0, None))(xs, ys, centers)
  np.testing.assert_allclose(value, np.full(n, full[0]), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gx).reshape(x.shape), full[1][0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.sum(gc, 0), full[1][1], rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="center_reg"):
    call(x, centers, -1.0)
