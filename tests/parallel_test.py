"""Global-batch mining across devices (8 fake CPU devices from conftest.py).

Contract: for a global batch split into equal shards, every device's value
equals the single-device loss on the concatenated batch, and each device's
gradient equals the matching rows of the single-device gradient — under pmap,
shard_map, and jit over a batch-sharded mesh (Auto and Explicit axes).

On a real accelerator (``ML_TEST_PLATFORM``, see conftest.py) the same 24-row
batch is split over the devices there are (8, 4, 2 or 1 of them): with one GPU
the collectives run over an axis of size 1.
"""

import functools

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

# 8 with conftest.py's fake CPU devices; fewer on a real accelerator.
N = max(n for n in (1, 2, 4, 8) if n <= jax.device_count())
ROWS = 24
LOSSES = {
    "batch_hard": functools.partial(ml.batch_hard_triplet_loss, margin=0.5),
    "batch_hard_soft_sqeuclidean": functools.partial(
        ml.batch_hard_triplet_loss, soft=True, metric="sqeuclidean"),
    "batch_hard_streaming": functools.partial(ml.batch_hard_triplet_loss, margin=0.5,
                                              block_size=2),
    "batch_all": functools.partial(ml.batch_all_triplet_loss, margin=0.5),
    "batch_all_mean": functools.partial(ml.batch_all_triplet_loss, margin=0.5,
                                        reduction="mean"),
    "semi_hard_facenet": functools.partial(ml.semi_hard_triplet_loss, margin=0.5),
    "semi_hard_tfa": functools.partial(ml.semi_hard_triplet_loss, margin=0.5,
                                       definition="tfa"),
    "quadruplet": functools.partial(ml.quadruplet_loss, margin=0.5, margin2=0.3),
    "contrastive_sum": functools.partial(ml.contrastive_loss, reduction="sum"),
    "lifted_structure": ml.lifted_structure_loss,
    "multi_similarity": functools.partial(ml.multi_similarity_loss, beta=10.0),
    "margin": ml.margin_loss,
    "npair": ml.npair_loss,
}

# Wave-2 losses: pair-based, and proxy losses with fixed class vectors (the
# labels 100, 105, ... of cases.make("pk") index them as (y - 100) // 5).
_PROXIES = np.random.default_rng(7).standard_normal((8 * 3, 4)).astype(np.float32)


def _proxy(fn, per_class=1, **kw):
  proxies = jnp.asarray(_PROXIES[:8 * per_class])
  return lambda e, y, **rt: fn(e, (y - 100) // 5, proxies, **kw, **rt)


WAVE2 = {
    "circle": ml.circle_loss,
    "tuplet_margin": ml.tuplet_margin_loss,
    "angular": ml.angular_loss,
    "generalized_lifted_structure": ml.generalized_lifted_structure_loss,
    "fast_ap": ml.fast_ap_loss,
    "nca": ml.nca_loss,
    "proxy_anchor": _proxy(ml.proxy_anchor_loss),
    "proxy_nca": _proxy(ml.proxy_nca_loss),
    "soft_triple": _proxy(ml.soft_triple_loss, 3, centers_per_class=3),
    "normalized_softmax": _proxy(ml.normalized_softmax_loss),
    "arcface": _proxy(ml.arcface_loss),
    "cosface": _proxy(ml.cosface_loss),
    "subcenter_arcface": _proxy(ml.subcenter_arcface_loss, 3, sub_centers=3),
}
LOSSES.update(WAVE2)


def _batch():
  x, y, _ = cases.make("pk", ROWS, 4, seed=5)
  where = np.ones(ROWS, bool)
  where[[2, 9, 10, 23]] = False                  # padding on several devices
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(where)


def _single(name, x, y, w):
  return jax.value_and_grad(lambda e: LOSSES[name](e, y, where=w))(x)


@pytest.fixture(scope="module")
def mesh():
  return jax.make_mesh((N,), ("data",))


# A loss also checked under shard_map (below) runs under pmap in the README command only.
SHARD_MAP_NAMES = ["batch_hard", "batch_hard_streaming", "batch_all", "semi_hard_tfa",
                   "multi_similarity", *sorted(WAVE2)]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow if n in SHARD_MAP_NAMES else ())
    for n in sorted(set(LOSSES) - set(WAVE2))])
def test_pmap_equals_single_device(name):
  x, y, w = _batch()
  value, grad = _single(name, x, y, w)
  shard = lambda a: a.reshape((N, -1) + a.shape[1:])

  @functools.partial(jax.pmap, axis_name="data")
  def step(xs, ys, ws):
    return jax.value_and_grad(
        lambda e: LOSSES[name](e, ys, where=ws, axis_name="data"))(xs)

  values, grads = step(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads.reshape(grad.shape), grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", SHARD_MAP_NAMES)
def test_shard_map_equals_single_device(name, mesh):
  x, y, w = _batch()
  value, grad = _single(name, x, y, w)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data"),
                     out_specs=(P("data"), P("data")))
  def step(xs, ys, ws):
    v, g = jax.value_and_grad(
        lambda e: LOSSES[name](e, ys, where=ws, axis_name="data"))(xs)
    return v[None], g

  put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))
  values, grads = step(put(x), put(y), put(w))
  np.testing.assert_allclose(values, np.full(N, value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("name", ["batch_hard", "batch_hard_streaming", "batch_all",
                                  "semi_hard_facenet"])
def test_jit_over_a_sharded_mesh_equals_single_device(name, explicit):
  x, y, w = _batch()
  value, grad = _single(name, x, y, w)
  types = (jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto,)
  mesh = jax.make_mesh((N,), ("data",), axis_types=types)
  with jax.set_mesh(mesh):
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))
    xs, ys, ws = put(x), put(y), put(w)
    v, g = jax.jit(jax.value_and_grad(lambda e, yy, ww: LOSSES[name](e, yy, where=ww)))(
        xs, ys, ws)
  assert len(g.sharding.device_set) == N
  np.testing.assert_allclose(v, value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-6)


def test_reduction_none_returns_the_local_anchors():
  x, y, w = _batch()
  full = ml.batch_hard_triplet_loss(x, y, where=w, reduction="none")
  per_device = jax.pmap(lambda a, b, c: ml.batch_hard_triplet_loss(
      a, b, where=c, reduction="none", axis_name="d"), axis_name="d")(
          x.reshape(N, ROWS // N, -1), y.reshape(N, -1), w.reshape(N, -1))
  np.testing.assert_allclose(per_device.reshape(-1), full, rtol=1e-6)


def test_margin_loss_rejects_sampling_across_devices():
  with pytest.raises(ValueError, match="axis_name"):
    jax.pmap(lambda a: ml.margin_loss(a, jnp.zeros(2, jnp.int32), key=jax.random.key(0),
                                      axis_name="d"), axis_name="d")(jnp.zeros((N, 2, 3)))


@pytest.mark.parametrize("miner", ["batch_hard", "easy_positive", "semi_hard_tfa",
                                   "batch_all", "rank_range"])
def test_miners_over_the_global_batch_equal_single_device(miner):
  x, y, w = _batch()
  fns = {
      "batch_hard": ml.mining.batch_hard,
      "easy_positive": ml.mining.easy_positive,
      "semi_hard_tfa": functools.partial(ml.mining.semi_hard, definition="tfa"),
      "batch_all": ml.mining.batch_all,
      "rank_range": functools.partial(ml.mining.rank_range, negative_ranks=(0, 3)),
  }
  full = fns[miner](ml.pairwise_distances(x), y, where=w)

  @functools.partial(jax.pmap, axis_name="d")
  def mine(xs, ys, ws):
    everyone = jax.lax.all_gather(xs, "d", tiled=True)
    return fns[miner](ml.pairwise_distances(xs, everyone), ys, where=ws, axis_name="d")

  local = mine(x.reshape(N, ROWS // N, -1), y.reshape(N, -1), w.reshape(N, -1))
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(local)):
    np.testing.assert_allclose(b.reshape(a.shape), a, rtol=1e-5, atol=1e-6)
