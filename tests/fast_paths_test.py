"""The automatic path (block_size=None) equals the dense and the streamed paths.

Every in-batch loss with a streamed path is checked, in values and gradients,
for every reduction, with padding rows and a memory bank, on both sides of the
automatic threshold (shrunk here so that the batches stay small), and under
``pmap`` with ``axis_name``. The triplet sums of batch-all and semi-hard (hinges,
TFA semi-hard), sort-free for few positives per anchor and sorted otherwise, are
checked against the triplet cube.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import cases
import pytest
import reference as ref

import metric_learning as ml
from metric_learning import reductions
from metric_learning.losses import _pipeline
from metric_learning.losses import contrastive
from metric_learning.losses import triplet

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

REDUCTIONS = reductions.REDUCTIONS
DENSE_ROWS, BLOCK_ROWS = 16, 8        # the automatic rule, shrunk for the tests

LOSSES = {
    "batch_hard": functools.partial(ml.batch_hard_triplet_loss, margin=0.5),
    "batch_hard_soft_cosine": functools.partial(ml.batch_hard_triplet_loss, soft=True,
                                                metric="cosine"),
    "batch_all": functools.partial(ml.batch_all_triplet_loss, margin=0.5),
    "batch_all_soft": functools.partial(ml.batch_all_triplet_loss, soft=True),
    "semi_hard_facenet": functools.partial(ml.semi_hard_triplet_loss, margin=0.5,
                                           metric="sqeuclidean"),
    "semi_hard_facenet_soft": functools.partial(ml.semi_hard_triplet_loss, margin=0.5,
                                                soft=True),
    "semi_hard_tfa": functools.partial(ml.semi_hard_triplet_loss, margin=0.5,
                                       definition="tfa"),
    "contrastive": ml.contrastive_loss,
    "contrastive_pml": functools.partial(ml.contrastive_loss, squared=False, pos_margin=0.1,
                                         reduce_separately=True),
    "multi_similarity": ml.multi_similarity_loss,
    "ntxent": functools.partial(contrastive.ntxent_loss, temperature=0.5),
    "supcon": functools.partial(contrastive.supcon_loss, temperature=0.5),
    "sigmoid": functools.partial(contrastive.sigmoid_loss, temperature=2.0, bias=-1.0),
    # The losses that stream in two passes, over candidate tiles, or by pair search.
    "lifted_structure": ml.lifted_structure_loss,
    "margin": ml.margin_loss,
    "margin_triplets": functools.partial(ml.margin_loss, weighting="triplets"),
    "npair": ml.npair_loss,
    "npair_all_pairs": functools.partial(ml.npair_loss, definition="all_pairs"),
    "circle": functools.partial(ml.circle_loss, margin=0.25, gamma=16.0),
    "tuplet_margin": functools.partial(ml.tuplet_margin_loss, scale=16.0),
    "angular": ml.angular_loss,
    "generalized_lifted": ml.generalized_lifted_structure_loss,
    "nca": ml.nca_loss,
    "fast_ap": ml.fast_ap_loss,
    "quadruplet": functools.partial(ml.quadruplet_loss, margin=0.5, margin2=0.3),
}
# The losses that held [batch, batch] matrices until issue 21 (each one's default call).
ISSUE_21 = {
    "lifted_structure": ml.lifted_structure_loss, "margin": ml.margin_loss,
    "npair": ml.npair_loss, "circle": ml.circle_loss, "tuplet_margin": ml.tuplet_margin_loss,
    "angular": ml.angular_loss, "generalized_lifted": ml.generalized_lifted_structure_loss,
    "nca": ml.nca_loss, "fast_ap": ml.fast_ap_loss, "quadruplet": ml.quadruplet_loss,
}


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
  monkeypatch.setattr(_pipeline, "AUTO_DENSE_ROWS", DENSE_ROWS)
  monkeypatch.setattr(_pipeline, "AUTO_BLOCK_ROWS", BLOCK_ROWS)
  monkeypatch.setattr(_pipeline, "AUTO_SUM_BLOCK_ROWS", BLOCK_ROWS // 2)


def _batch(size, seed=0, refs=0):
  rng = np.random.default_rng([seed, size])
  x = rng.standard_normal((size, 6)).astype(np.float32)
  y = (rng.integers(0, max(2, size // 3), size)).astype(np.int32)
  w = np.ones(size, bool)
  w[[1, size // 2]] = False
  bank = {}
  if refs:
    bank = dict(ref_embeddings=rng.standard_normal((refs, 6)).astype(np.float32),
                ref_labels=rng.integers(0, max(2, size // 3), refs).astype(np.int32),
                ref_where=np.arange(refs) != 2)
  return x, y, w, bank


# Compiled programs shared by the tests of this module: the batch (rows, labels,
# padding, bank) is an argument, so batches of one shape run one program. The key
# holds what a test may have patched that tracing reads.
_PROGRAMS = {}


def _compiled(key, fn):
  key = (key, _pipeline.AUTO_DENSE_ROWS, _pipeline.AUTO_BLOCK_ROWS,
         _pipeline.AUTO_SUM_BLOCK_ROWS, ml.mining.blocks.POSITIVE_BOUNDS,
         triplet._GATHER_BUDGET)
  if key not in _PROGRAMS:
    _PROGRAMS[key] = jax.jit(fn)
  return _PROGRAMS[key]


def _program(loss, block_size):
  """{reduction: (value, gradient of its sum)} of a batch, for every reduction."""
  def run(e, y, w, bank):
    out = {}
    for r in REDUCTIONS:
      value, pullback = jax.vjp(lambda e, r=r: loss(e, y, where=w, reduction=r,
                                                    block_size=block_size, **bank), e)
      out[r] = (value, pullback(jnp.ones_like(value))[0])
    return out
  return run


def _values_and_grads(loss, x, y, w, bank, block_size):
  """``_program``'s values, in one compiled program per loss, block and bank."""
  return _compiled(("values_and_grads", loss, block_size, tuple(sorted(bank))),
                   _program(loss, block_size))(x, y, w, bank)


def _assert_same(a, b, rtol=2e-5, atol=2e-6):
  """Equal up to float32 rounding; ``atol`` is relative to each array's largest
  entry (paths sum the same terms in different orders)."""
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    v = np.asarray(v)
    scale = max(1.0, float(np.max(np.abs(v)))) if v.size else 1.0
    np.testing.assert_allclose(np.asarray(u), v, rtol=rtol, atol=atol * scale, strict=True)


def _trace(loss, x, y, w, bank, block_size):
  """``_program`` as traced for this batch, as text."""
  return str(jax.make_jaxpr(_program(loss, block_size))(x, y, w, bank))


def _streams(loss, x, y, w, bank, block_size=None):
  """Whether the traced loss loops over blocks (rematerialised, or summed with
  their gradients: ``_pipeline.sum_row_blocks``)."""
  jaxpr = str(jax.make_jaxpr(lambda e: loss(e, y, where=w, block_size=block_size,
                                            **bank))(x))
  return "checkpoint" in jaxpr or "remat" in jaxpr or "name=row_block_sums" in jaxpr


# below and above DENSE_ROWS; the developer loop takes each loss at one size
@pytest.mark.parametrize("name,size", cases.covering_product(sorted(LOSSES), [12, 37]))
def test_automatic_dense_and_streamed_paths_agree(name, size):
  """Below the threshold the automatic call traces the dense program (so the
  explicit blocks of 5 rows are compared with it); above it, it streams in the
  automatic blocks (8 rows, 4 summed: neither divides 37) and equals the dense
  path."""
  loss = LOSSES[name]
  x, y, w, bank = _batch(size, refs=5)
  # The rule: dense up to DENSE_ROWS rows (candidates for sigmoid), blocks above.
  rows = size + (5 if name == "sigmoid" else 0)
  assert _streams(loss, x, y, w, bank) == (rows > DENSE_ROWS)
  assert not _streams(loss, x, y, w, bank, block_size=size + 5)
  assert _streams(loss, x, y, w, bank, block_size=5)
  dense = _values_and_grads(loss, x, y, w, bank, 10_000)
  if rows > DENSE_ROWS:
    _assert_same(_values_and_grads(loss, x, y, w, bank, None), dense)
  else:
    assert _trace(loss, x, y, w, bank, None) == _trace(loss, x, y, w, bank, 10_000)
    _assert_same(_values_and_grads(loss, x, y, w, bank, 5), dense)  # 5 does not divide


def _cube_reference(x, y, w, *, margin, metric, kind):
  """Batch-all / semi-hard hinge losses summed over the explicit triplet cube."""
  d = ml.pairwise_distances(jnp.where(w[:, None], x, 0), metric=metric)
  if metric == "dot":                   # a similarity: the losses rank by -x.y
    d = -d
  same = y[:, None] == y[None, :]
  real = w[:, None] & w[None, :]
  pos = same & real & ~jnp.eye(len(y), dtype=bool)
  neg = ~same & real
  gap = d[:, :, None] - d[:, None, :]                          # [i, j, k]
  mask = pos[:, :, None] & neg[:, None, :]
  if kind == "batch_all":
    values = jnp.where(mask, jax.nn.relu(margin + gap), 0)
    return jnp.sum(values) / jnp.sum(values > 0)
  if kind == "facenet":
    fixed = jax.lax.stop_gradient(gap)
    mask = mask & (fixed < 0) & (fixed > -margin)
    return jnp.sum(jnp.where(mask, margin + gap, 0)) / jnp.sum(mask)
  if kind in ("batch_all_soft", "facenet_soft"):                # softplus, mean over triplets
    if kind == "facenet_soft":
      fixed = jax.lax.stop_gradient(gap)
      mask = mask & (fixed < 0) & (fixed > -margin)
    return jnp.sum(jnp.where(mask, jax.nn.softplus(gap), 0)) / jnp.sum(mask)
  # tfa: per (i, j) the closest negative farther than D_ij, else the farthest.
  fixed = jax.lax.stop_gradient(d)
  farther = neg[:, None, :] & (fixed[:, None, :] > fixed[:, :, None])
  near = jnp.argmin(jnp.where(farther, fixed[:, None, :], jnp.inf), -1)
  far = jnp.argmax(jnp.where(neg, fixed, -jnp.inf), -1)
  k = jnp.where(jnp.any(farther, -1), near, far[:, None])
  dn = jnp.take_along_axis(d, k, -1)
  valid = pos & jnp.any(neg, -1)[:, None]
  return jnp.sum(jnp.where(valid, jax.nn.relu(margin + d - dn), 0)) / jnp.sum(valid)


CUBE_LOSSES = {
    "batch_all": functools.partial(ml.batch_all_triplet_loss, reduction="mean_nonzero"),
    "facenet": functools.partial(ml.semi_hard_triplet_loss, reduction="mean"),
    "tfa": functools.partial(ml.semi_hard_triplet_loss, definition="tfa", reduction="mean"),
    "batch_all_soft": functools.partial(ml.batch_all_triplet_loss, soft=True, reduction="mean"),
    "facenet_soft": functools.partial(ml.semi_hard_triplet_loss, soft=True, reduction="mean"),
}


@pytest.mark.parametrize("kind,metric", cases.covering_product(
    ["batch_all", "facenet", "tfa"], ["euclidean", "sqeuclidean"]))
def test_sorted_triplet_sums_equal_the_triplet_cube(kind, metric):
  loss = CUBE_LOSSES[kind]
  x, y, w, _ = _batch(30, seed=1)
  x, y, w = jnp.asarray(x) * 3, jnp.asarray(y), jnp.asarray(w)
  ref = jax.value_and_grad(lambda e: _cube_reference(e, y, w, margin=2.0, metric=metric,
                                                     kind=kind))(x)
  for block in (None, 4):
    got = jax.value_and_grad(lambda e, block=block: loss(e, y, where=w, margin=2.0,
                                                         metric=metric, block_size=block))(x)
    _assert_same(got, ref, rtol=1e-5, atol=1e-5)


# Rows wider than the largest positive bound (32): the path is chosen at run
# time per block of rows, from the most positives a row of the block has.
FEW_POSITIVE_LABELS = {
    "k4": np.arange(48) // 4,                                  # 3 positives: bound 4
    "k12": np.arange(48) // 12,                                # 11: bound 32
    "k40_and_k4": np.r_[np.zeros(40), 1 + np.arange(8) // 4],  # 39 in some blocks: sorted
}


@pytest.mark.parametrize("kind,labels,path", cases.covering_product(
    sorted(CUBE_LOSSES), sorted(FEW_POSITIVE_LABELS), ["automatic", "sorted"]))
def test_few_positive_and_sorted_paths_equal_the_triplet_cube(kind, labels, path, monkeypatch):
  """The sort-free path for few positives per anchor (issue 21), the sorted path
  (forced by leaving no bound; the per-anchor cube for the soft margins) and the
  run-time choice between them, in blocks that take different branches: values
  and gradients of the triplet cube."""
  loss = CUBE_LOSSES[kind]
  if path == "sorted":
    monkeypatch.setattr(ml.mining.blocks, "POSITIVE_BOUNDS", ())
  y = jnp.asarray(FEW_POSITIVE_LABELS[labels], jnp.int32)
  x, _, w, _ = _batch(len(y), seed=2)
  x, w = jnp.asarray(x) * 3, jnp.asarray(w)
  ref = jax.value_and_grad(lambda e: _cube_reference(e, y, w, margin=2.0,
                                                     metric="euclidean", kind=kind))(x)
  got = _compiled(("few_positives", loss), lambda e, y, w: jax.value_and_grad(
      lambda e: loss(e, y, where=w, margin=2.0, block_size=16))(e))(x, y, w)
  _assert_same(got, ref, rtol=1e-5, atol=1e-5)


WINDOW_LOSSES = {k: CUBE_LOSSES[k] for k in ("batch_all", "facenet")}


def _symmetric(loss, **kwargs) -> bool:
  """Whether the traced loss takes the symmetric pass (``mining.symmetric_window_sums``)."""
  x, y = jnp.zeros((48, 6)), jnp.arange(48) // 4
  return "_symmetric_pass" in str(jax.make_jaxpr(lambda e: loss(e, y, **kwargs))(x))


@pytest.mark.parametrize("kind,metric", cases.covering_product(
    sorted(WINDOW_LOSSES), ["euclidean", "sqeuclidean", "cosine", "dot"]))
def test_a_batch_against_itself_sums_both_halves_of_each_block_as_the_triplet_cube(kind,
                                                                                   metric):
  """Batch-all and FaceNet semi-hard of a batch against itself, reduced to a
  scalar over blocks, with few positives per anchor: one pass compares each
  block with its rows' thresholds and, transposed, with every column's
  (``mining.symmetric_window_sums``). Values, the gradients in the rows and in
  the margin, and forward mode equal the triplet cube's, with padding rows,
  for 3 positives (bound 4), 11 (bound 32) and 39 in some rows (the per-block
  path, chosen at run time); without a gradient only the values are computed."""
  loss = WINDOW_LOSSES[kind]

  def ours(e, m, y, w):
    return loss(e, y, where=w, margin=m, metric=metric, block_size=16)

  def cube(e, m, y, w):
    return _cube_reference(e, y, w, margin=m, metric=metric, kind=kind)

  assert _symmetric(loss, metric=metric, block_size=16)
  program = lambda f: _compiled(("symmetric", kind, metric, f.__name__), lambda *a: (
      jax.value_and_grad(f, (0, 1))(*a),
      jax.jvp(lambda e, m: f(e, m, *a[2:]), a[:2], (jnp.ones_like(a[0]), jnp.float32(0.5)))))
  for labels in sorted(FEW_POSITIVE_LABELS):
    y = jnp.asarray(FEW_POSITIVE_LABELS[labels], jnp.int32)
    x, _, w, _ = _batch(len(y), seed=3)
    x, w, m = jnp.asarray(x) * 2, jnp.asarray(w), jnp.float32(1.5)
    got, want = program(ours)(x, m, y, w), program(cube)(x, m, y, w)
    _assert_same(got, want, rtol=1e-5, atol=1e-5)
    _assert_same(jax.jit(ours)(x, m, y, w), want[0][0], rtol=1e-5, atol=1e-5)


def _matmuls_per_block(loss, **kwargs) -> set[int]:
  """The matmuls in each loop body (``scan``) of the loss's gradient, loops without one left out."""
  x, y = jnp.zeros((48, 6)), jnp.arange(48) // 4
  counts = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          sub = getattr(sub, "jaxpr", sub)
          if not hasattr(sub, "eqns"):
            continue
          if eqn.primitive.name == "scan":
            counts.add(sum(e.primitive.name == "dot_general" for e in sub.eqns))
          walk(sub)

  walk(jax.make_jaxpr(jax.grad(lambda e: loss(e, y, **kwargs)))(x).jaxpr)
  return counts - {0}


def test_the_symmetric_pass_is_taken_only_where_it_applies():
  """The square pass needs the batch alone, a scalar reduction and blocks:
  a memory bank, ``reduction="none"`` and the dense path take the windows per
  block, and so does the soft margin. Differentiated, its blocks run two
  matmuls each (the distances and one for the block's rows, both halves); the
  per-block path, its fallback for many positives, three."""
  bank = dict(ref_embeddings=jnp.ones((3, 6)), ref_labels=jnp.arange(3))
  for loss in WINDOW_LOSSES.values():
    assert _symmetric(loss, block_size=16)
    assert _matmuls_per_block(loss, block_size=16) == {2, 3}
    assert _matmuls_per_block(loss, block_size=16, **bank) == {3}
    assert _symmetric(loss, block_size=16, reduction="sum")
    assert not _symmetric(loss, block_size=16, **bank)
    assert not _symmetric(loss, block_size=16, reduction="none")
    assert not _symmetric(loss, block_size=48)
  assert not _symmetric(ml.batch_all_triplet_loss, block_size=16, soft=True)
  assert not _symmetric(ml.semi_hard_triplet_loss, block_size=16, definition="tfa")


@pytest.mark.parametrize("positive,labels", cases.covering_product(
    ["hard", "easy"], sorted(FEW_POSITIVE_LABELS)))
def test_batch_hard_positives_from_label_slots_equal_the_masked_pass(positive, labels,
                                                                     monkeypatch):
  """Batch-hard's positive read from each anchor's listed positive columns
  (issue 21 item 6; blocks whose anchors have more than 32 positives read the
  masked row) selects what the pass over the masked row selects, ties included;
  the loss equals the loop reference."""
  y = jnp.asarray(FEW_POSITIVE_LABELS[labels], jnp.int32)
  x, _, w, bank = _batch(len(y), seed=4, refs=6)
  x = np.round(x)                      # coarse coordinates: many tied distances
  x[9] = x[8]
  batch = _pipeline.prepare(jnp.asarray(x), y, jnp.asarray(w), **{
      k: jnp.asarray(v) for k, v in bank.items()})
  select = jax.jit(lambda b, block: triplet._select(b, "euclidean", block, positive),
                   static_argnums=1)
  for block in (None, 16):
    got = select(batch, block)
    with monkeypatch.context() as mp:
      mp.setattr(ml.mining.blocks, "POSITIVE_BOUNDS", ())
      assert triplet._anchor_slots(batch) == ()
      want = select(batch, block)
    for u, v in zip(got, want, strict=True):
      np.testing.assert_array_equal(u, v)
  if positive == "hard":
    s = ref.Setup(x, np.asarray(y), w, bank["ref_embeddings"], bank["ref_labels"],
                  bank["ref_where"])
    want = ref.reduce(ref.batch_hard(s, "euclidean", 0.5, False), "mean")
    got = ml.batch_hard_triplet_loss(jnp.asarray(x), y, where=w, margin=0.5, **bank)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


# The developer loop keeps batch-hard (argmax mining over the global batch), n-pair
# (the global row order) and the cheap ones; the README command runs all twelve.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow if n in (
        "batch_all", "semi_hard_tfa", "lifted_structure", "quadruplet",
        "multi_similarity") else ())
    for n in ["batch_hard", "batch_all", "semi_hard_tfa", "contrastive", "multi_similarity",
              "ntxent", "supcon", "sigmoid", "lifted_structure", "npair", "angular",
              "quadruplet"]])
def test_pmap_automatic_path_equals_one_device(name):
  loss = LOSSES[name]
  # 8 fake CPU devices (conftest.py); on a real accelerator, the devices there are.
  devices = max(n for n in (1, 2, 4, 8) if n <= jax.device_count())
  x, y, w, _ = _batch(40, seed=2)                    # 40 global rows, 5 local on 8 devices
  shard = lambda a: a.reshape((devices, -1) + a.shape[1:])

  def local(e, labels, where):
    return jax.value_and_grad(lambda e: loss(e, labels, where=where, axis_name="i"))(e)

  # Local rows 5 (or more) and global candidates 40: with the threshold at 4 rows, each
  # device streams its rows (sigmoid: its candidate columns) in blocks of 8.
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(_pipeline, "AUTO_DENSE_ROWS", 4)
    value, grad = jax.pmap(local, axis_name="i")(shard(x), shard(y), shard(w))
  ref_value, ref_grad = jax.value_and_grad(
      lambda e: loss(e, y, where=w, block_size=10_000))(x)
  np.testing.assert_allclose(np.asarray(value), np.full(devices, ref_value), rtol=2e-5,
                             atol=2e-6)
  np.testing.assert_allclose(np.asarray(grad).reshape(x.shape), ref_grad, rtol=2e-5,
                             atol=2e-6)


def _labels(pattern, size, rng):
  if pattern == "singletons":               # every label once but two pairs
    y = np.arange(size)
    y[[3, size - 2]] = y[[4, size - 1]]
  elif pattern == "one_class":
    y = np.zeros(size, int)
  elif pattern == "pk_sorted":                # P x K, rows grouped by class
    y = np.arange(size) // 4
  else:                                       # a few large shuffled classes
    y = rng.permutation(np.arange(size) % 3)
  return y.astype(np.int32)


@pytest.mark.parametrize("name,pattern", cases.covering_product(
    sorted(ISSUE_21), ["singletons", "one_class", "pk_sorted", "three_classes"]))
def test_streamed_paths_agree_on_every_label_pattern(name, pattern):
  loss = LOSSES[name]
  rng = np.random.default_rng(3)
  size = 23                                   # not a multiple of the block (4)
  x = rng.standard_normal((size, 5)).astype(np.float32)
  y = _labels(pattern, size, rng)
  w = np.arange(size) != 7
  bank = dict(ref_embeddings=rng.standard_normal((6, 5)).astype(np.float32),
              ref_labels=y[:6], ref_where=np.arange(6) != 1)
  for kw in ({}, bank):
    _assert_same(_values_and_grads(loss, x, y, w, kw, 4),
                 _values_and_grads(loss, x, y, w, kw, 10_000), rtol=1e-5, atol=2e-6)


def test_margin_loss_per_anchor_beta_streams():
  x, y, w, _ = _batch(29)
  beta = np.linspace(0.5, 1.5, 29).astype(np.float32)

  def grads(block_size):
    f = lambda e, b: ml.margin_loss(e, y, beta=b, where=w, block_size=block_size)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, beta)

  _assert_same(grads(4), grads(10_000))


def _planned_temp_bytes(loss, batch, dim):
  x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  step = jax.jit(jax.value_and_grad(lambda e, labels: loss(e, labels)))
  return step.lower(x, y).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.xla_optimized
@pytest.mark.parametrize("name", sorted(ISSUE_21))
def test_default_call_memory_grows_linearly_with_the_batch(name, monkeypatch):
  """XLA's planned temporaries of loss + gradient: O(block · batch), not O(batch²).

  At B = 8192 (D = 16) a [B, B] float32 matrix alone is 256 MiB; the default
  call must plan well under half of that, and doubling B from 4096 must about
  double the plan (a dense matrix would quadruple it).
  """
  monkeypatch.setattr(_pipeline, "AUTO_DENSE_ROWS", 512)    # the library's own rule
  monkeypatch.setattr(_pipeline, "AUTO_BLOCK_ROWS", 256)
  monkeypatch.setattr(_pipeline, "AUTO_SUM_BLOCK_ROWS", 64)
  loss = ISSUE_21[name]
  small, large = (_planned_temp_bytes(loss, b, 16) for b in (4096, 8192))
  assert large < 8192 * 8192 * 4 / 2, f"{name}: {large / 2**20:.0f} MiB planned"
  assert large < 2.5 * small, f"{name}: {small / 2**20:.0f} -> {large / 2**20:.0f} MiB"


def test_forcing_dense_with_a_block_as_large_as_the_batch():
  x, y, w, _ = _batch(37)
  assert _streams(ml.batch_hard_triplet_loss, x, y, w, {})
  assert not _streams(ml.batch_hard_triplet_loss, x, y, w, {}, block_size=37)


def test_positive_bounds_flag_sets_the_library_bounds(monkeypatch):
  """loss_benchmark --positive_bounds=none times the sorted path alone."""
  from experiments.benchmarks import loss_benchmark  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(ml.mining.blocks, "POSITIVE_BOUNDS", ml.mining.POSITIVE_BOUNDS)
  for value, want in ((None, (4, 32)), (["none"], ()), (["32", "8"], (8, 32))):
    loss_benchmark.set_positive_bounds(value)
    assert ml.mining.blocks.POSITIVE_BOUNDS == want


@pytest.mark.slow
def test_loss_benchmark_smoke(tmp_path):
  out = tmp_path / "bench.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, "-m", "experiments.benchmarks.loss_benchmark", "--batch_sizes=64",
         "--repeats=1", "--min_time=0", "--losses=batch_hard,ntxent,batch_all",
         "--positive_bounds=none", f"--out={out}", f"--plot_dir={tmp_path}"]
  subprocess.run(cmd, check=True, cwd=root, env=env, capture_output=True, text=True,
                 timeout=600)
  rows = json.loads(out.read_text())["results"]
  assert json.loads(out.read_text())["meta"]["positive_bounds"] == ["none"]
  assert {r["loss"] for r in rows} == {"batch_hard", "ntxent", "batch_all"}
  assert all(r["ml_ms"] > 0 for r in rows)
  assert all(r["ml_peak_mb"] > 0 for r in rows)
  assert all(r["floor_ms"] > 0 for r in rows)   # the fused-GEMM floor, same run
  assert list(tmp_path.glob("loss_benchmark_*.png"))


SUMMED = {
    "batch_all": ml.batch_all_triplet_loss,
    "semi_hard_facenet": ml.semi_hard_triplet_loss,
    "multi_similarity": ml.multi_similarity_loss,
    "lifted_structure": ml.lifted_structure_loss,     # differentiable per-row extras
}


@pytest.mark.parametrize("name", sorted(SUMMED))
def test_summed_blocks_differentiate_in_both_modes_and_in_every_input(name):
  """A scalar reduction over blocks takes each block's gradient as the block is
  computed (``_pipeline.sum_row_blocks``): reverse mode, forward mode and the
  derivative in a traced hyper-parameter (here the margin or alpha) equal the
  dense path's; no block is recomputed (no rematerialisation in the program)."""
  loss = SUMMED[name]
  x, y, w, bank = _batch(23, seed=5, refs=5)
  hyper = "alpha" if name == "multi_similarity" else "margin"
  h0 = jnp.float32(2.0 if name == "multi_similarity" else 0.7)

  def f(block_size):
    return lambda e, h: loss(e, y, where=w, block_size=block_size, **{hyper: h}, **bank)

  streamed, dense = f(4), f(10_000)
  assert "name=row_block_sums" in str(jax.make_jaxpr(streamed)(x, h0))
  jaxpr = str(jax.make_jaxpr(jax.grad(streamed, (0, 1)))(x, h0))
  if name != "lifted_structure":    # its first pass, a vector per row, is rematerialised
    assert "checkpoint" not in jaxpr and "remat" not in jaxpr
  _assert_same(jax.jit(jax.value_and_grad(streamed, (0, 1)))(x, h0),
               jax.jit(jax.value_and_grad(dense, (0, 1)))(x, h0))
  tangents = (jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32),
              jnp.float32(0.3))
  _assert_same(jax.jit(lambda *p: jax.jvp(streamed, p, tangents))(x, h0),
               jax.jit(lambda *p: jax.jvp(dense, p, tangents))(x, h0))


def test_summed_blocks_inside_a_branch_and_under_vmap():
  """The summed path holds no tracer of its caller: it runs inside a
  ``lax.cond`` branch and under ``vmap`` (TFA semi-hard chooses its path in a
  ``lax.switch`` and falls back to the summed blocks)."""
  x, y, w, _ = _batch(23, seed=6)
  loss = lambda e: ml.batch_all_triplet_loss(e, y, where=w, block_size=4)
  branch = lambda e, on: jax.lax.cond(on, loss, lambda e: jnp.float32(0), e)
  plain = jax.jit(jax.value_and_grad(loss))
  got = jax.jit(jax.value_and_grad(branch))(x, True)
  _assert_same(got, plain(x))
  xs = jnp.stack([jnp.asarray(x), jnp.asarray(x)[::-1]])
  batched = jax.jit(jax.vmap(jax.value_and_grad(loss)))(xs)
  _assert_same(jax.tree.map(lambda v: v[1], batched), plain(xs[1]))


@pytest.mark.parametrize("labels,budget", cases.covering_product(
    sorted(FEW_POSITIVE_LABELS), [0, 4 * 48 * 6]))
def test_tfa_pairs_mined_first_within_the_gather_budget(labels, budget, monkeypatch):
  """TFA semi-hard mines its pairs first only for the positive bounds whose
  gathered [anchors, bound, dim] rows fit ``_GATHER_BUDGET`` (0: none, so
  the streamed terms; 4 · 48 · 6: bound 4 alone): the same values and
  gradients as the triplet cube on every path."""
  monkeypatch.setattr(triplet, "_GATHER_BUDGET", budget)
  y = jnp.asarray(FEW_POSITIVE_LABELS[labels], jnp.int32)
  x, _, w, _ = _batch(len(y), seed=2)
  x, w = jnp.asarray(x) * 3, jnp.asarray(w)
  ref = jax.value_and_grad(lambda e: _cube_reference(e, y, w, margin=2.0,
                                                     metric="euclidean", kind="tfa"))(x)
  for block in (None, 16):
    got = _compiled(("tfa", block), lambda e, y, w, block=block: jax.value_and_grad(
        lambda e: ml.semi_hard_triplet_loss(e, y, where=w, margin=2.0, definition="tfa",
                                            reduction="mean", block_size=block))(e))(x, y, w)
    _assert_same(got, ref, rtol=1e-5, atol=1e-5)
