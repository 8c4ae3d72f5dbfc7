"""What the side-by-side comparison with other libraries found, closed.

Non-finite real rows poison every loss; empty batches give 0; the memory bank
works with every in-batch loss (concatenation semantics); selected_triplet_loss
takes every index selection a miner returns; presets normalise the bank; and
parity with pytorch-metric-learning's NPairsLoss, ContrastiveLoss and MarginLoss
(values and gradients), skipped when torch is absent.
"""

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from cases import LOSSES
from cases import REDUCTIONS
from cases import check
from jax.test_util import check_grads

import metric_learning as ml
from metric_learning.losses import pairs
from metric_learning.losses import triplet

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

NAMES = sorted(LOSSES)


def _call(name, x, y, w, reduction="mean", **kwargs):
  """LOSSES[name] (same settings) with extra keyword arguments (memory bank)."""
  return _WITH_KWARGS[name](x, y, w, reduction, **kwargs)


# The LOSSES entries, as functions that also take keyword arguments.
_WITH_KWARGS = {
    "batch_hard": lambda x, y, w, r, **k: ml.batch_hard_triplet_loss(
        x, y, where=w, margin=0.5, reduction=r, **k),
    "batch_hard_soft": lambda x, y, w, r, **k: ml.batch_hard_triplet_loss(
        x, y, where=w, soft=True, reduction=r, **k),
    "batch_hard_streaming": lambda x, y, w, r, **k: ml.batch_hard_triplet_loss(
        x, y, where=w, margin=0.5, reduction=r, block_size=5, **k),
    "batch_all": lambda x, y, w, r, **k: ml.batch_all_triplet_loss(
        x, y, where=w, margin=0.5, reduction=r, **k),
    "batch_all_soft": lambda x, y, w, r, **k: ml.batch_all_triplet_loss(
        x, y, where=w, soft=True, reduction=r, **k),
    "semi_hard_facenet": lambda x, y, w, r, **k: ml.semi_hard_triplet_loss(
        x, y, where=w, margin=0.5, reduction=r, **k),
    "semi_hard_tfa": lambda x, y, w, r, **k: ml.semi_hard_triplet_loss(
        x, y, where=w, margin=0.5, definition="tfa", reduction=r, **k),
    "quadruplet": lambda x, y, w, r, **k: ml.quadruplet_loss(
        x, y, where=w, margin=0.5, margin2=0.3, reduction=r, **k),
    "quadruplet_soft": lambda x, y, w, r, **k: ml.quadruplet_loss(
        x, y, where=w, soft=True, reduction=r, **k),
    "contrastive": lambda x, y, w, r, **k: ml.contrastive_loss(
        x, y, where=w, margin=1.5, reduction=r, **k),
    "lifted_structure": lambda x, y, w, r, **k: ml.lifted_structure_loss(
        x, y, where=w, margin=1.0, reduction=r, **k),
    "margin": lambda x, y, w, r, **k: ml.margin_loss(
        x, y, where=w, beta=1.0, margin=0.3, reduction=r, **k),
    "margin_triplets": lambda x, y, w, r, **k: ml.margin_loss(
        x, y, where=w, beta=1.0, margin=0.3, reduction=r, weighting="triplets", **k),
    "multi_similarity": lambda x, y, w, r, **k: ml.multi_similarity_loss(
        x, y, where=w, alpha=2.0, beta=10.0, base=0.5, epsilon=0.1, reduction=r, **k),
    "npair": lambda x, y, w, r, **k: ml.npair_loss(x, y, where=w, reduction=r, **k),
    "npair_all_pairs": lambda x, y, w, r, **k: ml.npair_loss(
        x, y, where=w, reduction=r, definition="all_pairs", **k),
}


def test_every_loss_is_covered():
  assert set(_WITH_KWARGS) == set(LOSSES)


# --------------------------------------------------------------------------- #
# Non-finite real rows make every loss non-finite; padding stays ignored.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_real_row_makes_the_loss_and_gradient_non_finite(name):
  x, y, w = cases.make("padding", 10, 3, seed=4)
  w = jnp.asarray(w)
  variants = [x]
  for row in (3, 5):                      # a real row; a padding row (1, 5, 9 are padding)
    for bad in (np.nan, np.inf, -np.inf):
      v = x.copy()
      v[row, 1] = bad
      variants.append(v)

  @jax.jit
  def run(xs):   # one compilation: every reduction and the gradient, for every variant
    def one(e):
      values = {r: _call(name, e, y, w, r) for r in REDUCTIONS}
      return values, jax.grad(lambda e: _call(name, e, y, w))(e)
    return jax.vmap(one)(xs)

  values, grads = run(np.stack(variants))
  for reduction, value in values.items():
    value = np.asarray(value)
    assert np.all(np.isfinite(value[0])), reduction
    assert not np.any(np.isfinite(value[1:4])), (reduction, value[1:4])
    # The same values in a padding row change nothing.
    np.testing.assert_array_equal(value[4:], np.broadcast_to(value[0], value[4:].shape))
  grads = np.asarray(grads)
  assert all(not np.all(np.isfinite(g)) for g in grads[1:4])
  assert np.all(np.isfinite(grads[4:])) and np.all(grads[4:, 5] == 0)


def test_one_nan_row_no_longer_makes_batch_hard_zero():
  """The bug the comparison found: every anchor dropped, loss 0.0, "converged"."""
  x, y, _ = cases.make("pk", 9, 3)
  x = x.copy()
  x[4] = np.nan
  for block_size in (None, 2, 4):
    assert np.isnan(ml.batch_hard_triplet_loss(x, y, block_size=block_size))


@pytest.mark.parametrize("name", ["batch_hard", "batch_hard_streaming", "contrastive",
                                  "lifted_structure", "npair"])
def test_a_non_finite_real_bank_row_poisons_and_an_empty_slot_does_not(name):
  x, y, _ = cases.make("pk", 6, 3)
  bank, bank_y, _ = cases.make("pk", 5, 3, seed=1)
  bank = bank.copy()
  bank[2] = np.nan
  kw = dict(ref_embeddings=bank, ref_labels=bank_y)
  assert np.isnan(_call(name, x, y, None, ref_where=np.ones(5, bool), **kw))
  slot_empty = np.arange(5) != 2
  value = _call(name, x, y, None, ref_where=slot_empty, **kw)
  clean = _call(name, x, y, None, ref_embeddings=bank[slot_empty], ref_labels=bank_y[slot_empty])
  np.testing.assert_allclose(value, clean, rtol=1e-6)


def test_selected_triplet_loss_and_presets_are_poisoned_too():
  x, y, w = cases.make("padding", 9, 3)
  sel = ml.mining.batch_hard(ml.pairwise_distances(x), y, where=w)
  x_bad = x.copy()
  x_bad[0] = np.inf
  assert np.isnan(ml.selected_triplet_loss(x_bad, sel, where=w))
  x_pad = x.copy()
  x_pad[1] = np.nan                       # padding
  np.testing.assert_array_equal(ml.selected_triplet_loss(x_pad, sel, where=w),
                                ml.selected_triplet_loss(x, sel, where=w))
  for name in ml.presets.NAMES:
    assert np.isnan(ml.presets.get(name)(x_bad, y)), name


# --------------------------------------------------------------------------- #
# Empty batches.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_gives_zero_for_every_reduction(name):
  x, y, w = np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), np.zeros((0,), bool)
  bank, bank_y, _ = cases.make("pk", 6, 4)

  @jax.jit
  def every(x):
    out = {r: _call(name, x, y, w, r) for r in REDUCTIONS}
    # An empty batch with a memory bank: still nothing to anchor.
    out["bank"] = _call(name, x, y, None, ref_embeddings=bank, ref_labels=bank_y)
    return out, jax.grad(lambda e: _call(name, e, y, None))(x)

  out, g = every(x)
  for reduction in REDUCTIONS + ("bank",):
    expected = np.zeros((0,) if reduction == "none" else (), np.float32)
    np.testing.assert_array_equal(out[reduction], expected, strict=True)
  assert g.shape == (0, 4)


def test_empty_batches_for_selections_and_presets():
  x, y = np.zeros((0, 3), np.float32), np.zeros((0,), np.int32)
  index, none = np.zeros((0,), np.int32), np.zeros((0,), bool)
  pairs_index, pairs_none = np.zeros((0, 0), np.int32), np.zeros((0, 0), bool)
  ranks_index, ranks_none = np.zeros((0, 2), np.int32), np.zeros((0, 2), bool)
  distance = np.zeros((0,), np.float32)
  for sel in (ml.mining.TripletSelection(index, index, distance, distance, none),
              ml.mining.PairSelection(pairs_index, pairs_index.astype(np.float32),
                                      pairs_index.astype(np.float32), pairs_none),
              ml.mining.RankSelection(ranks_index, ranks_index.astype(np.float32),
                                      ranks_none, ranks_index,
                                      ranks_index.astype(np.float32), ranks_none)):
    for reduction in REDUCTIONS:
      out = ml.selected_triplet_loss(x, sel, reduction=reduction)
      expected = np.zeros((0,) if reduction == "none" else (), np.float32)
      np.testing.assert_array_equal(out, expected, strict=True)
  for name in ml.presets.NAMES:
    np.testing.assert_array_equal(ml.presets.get(name)(x, y), np.float32(0), strict=True)


# --------------------------------------------------------------------------- #
# The memory bank: concatenation semantics for every in-batch loss.
# --------------------------------------------------------------------------- #

def _bank_case():
  x, y, w = cases.make("padding", 9, 3, seed=5)
  y = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4], np.int32)
  rng = np.random.default_rng(8)
  bank = rng.standard_normal((6, 3)).astype(np.float32)
  bank_y = np.array([0, 2, 2, 5, 1, 7], np.int32)
  bank_w = np.array([True, True, False, True, True, True])
  return x, y, w, bank, bank_y, bank_w


@pytest.mark.parametrize("name", NAMES)
def test_memory_bank_equals_concatenation_and_the_reference(name):
  """Bank rows are candidates, never anchors, and receive no gradient."""
  x, y, w, bank, bank_y, bank_w = _bank_case()
  b = x.shape[0]
  cat_y, cat_w = np.concatenate([y, bank_y]), np.concatenate([w, bank_w])

  def with_bank(e, m, r):
    return _call(name, e, y, w, r, ref_embeddings=m, ref_labels=bank_y, ref_where=bank_w)

  def concatenated(e):   # the anchors' terms of the loss on [batch; bank]
    rows = jnp.concatenate([e, jax.lax.stop_gradient(jnp.asarray(bank))])
    return _call(name, rows, cat_y, cat_w, "none")[:b]

  @jax.jit
  def run(e, m):
    values = {r: with_bank(e, m, r) for r in REDUCTIONS}
    g, g_bank = jax.grad(lambda e, m: jnp.sum(with_bank(e, m, "none")), (0, 1))(e, m)
    g_cat = jax.grad(lambda e: jnp.sum(concatenated(e)))(e)
    return values, concatenated(e), g, g_bank, g_cat

  values, cat, g, g_bank, g_cat = run(x, bank)
  np.testing.assert_allclose(values["none"], cat, rtol=1e-5, atol=1e-6)
  terms = LOSSES[name][1](ref.Setup(x, y, w, bank, bank_y, bank_w), "euclidean")
  for reduction in REDUCTIONS:
    check(values[reduction], ref.reduce(terms, reduction))
  np.testing.assert_allclose(g, g_cat, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(g_bank, np.zeros_like(bank))


def test_margin_loss_key_with_a_bank_is_refused():
  x, y, _ = cases.make("pk", 6, 3)
  with pytest.raises(ValueError, match="key.*ref_embeddings"):
    ml.margin_loss(x, y, key=jax.random.key(0), ref_embeddings=x, ref_labels=y)


# --------------------------------------------------------------------------- #
# Presets normalise the bank like the batch.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", ["pml", "facenet", "pml_contrastive", "pml_margin",
                                  "pml_npair"])
def test_normalising_presets_normalise_the_bank(name):
  x, y, _ = cases.make("pk", 9, 4)
  bank, bank_y, _ = cases.make("pk", 6, 4, seed=3, scale=7.0)   # far from unit norm
  bank_y = bank_y + 1                   # classes of their own: n-pair negatives too
  preset = ml.presets.get(name)
  got = preset(x, y, ref_embeddings=bank, ref_labels=bank_y)
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  want = preset.loss(unit(x), y, ref_embeddings=unit(bank), ref_labels=bank_y,
                     **preset.defaults)
  mixed = preset.loss(unit(x), y, ref_embeddings=bank, ref_labels=bank_y, **preset.defaults)
  # float32: normalising inside or outside the loss rounds differently, and the
  # semi-hard hinge sums are prefix sums over sorted distances.
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(float(got) - float(mixed)) > 1e-3      # the old behaviour was different


# --------------------------------------------------------------------------- #
# selected_triplet_loss takes every index selection a miner returns.
# --------------------------------------------------------------------------- #

def _triplets_from(sel):
  pi, ni, valid = (np.asarray(v) for v in (sel.positive_index, sel.negative_index, sel.valid))
  return [[(int(pi[i]), int(ni[i]))] if valid[i] else [] for i in range(len(valid))]


def _selections(x, y, w):
  d = ml.pairwise_distances(x)
  wj = None if w is None else jnp.asarray(w)
  s = ref.Setup(x, y, w)
  out = {}
  for name, sel, positive in (("batch_hard", ml.mining.batch_hard(d, y, where=wj), "hard"),
                              ("easy_positive", ml.mining.easy_positive(d, y, where=wj),
                               "easy")):
    expected = ref.batch_hard(s, "euclidean", 0.5, False, positive=positive)
    out[name] = (sel, expected)
  unit = ml.l2_normalize(jnp.asarray(x))
  sel = ml.mining.distance_weighted(ml.pairwise_distances(unit), y, key=jax.random.key(3),
                                    dim=x.shape[1], where=wj)
  # The sampled indices are the miner's; the reference recomputes the terms on x.
  out["distance_weighted"] = (sel, ref.selected(s, _triplets_from(sel), "euclidean", 0.5,
                                                False))
  out["semi_hard_tfa"] = (ml.mining.semi_hard(d, y, definition="tfa", where=wj),
                          ref.semi_hard_tfa(s, "euclidean", 0.5, False))
  for ranks in (((0, 1), (0, 2)), ((0, 2), (1, 3)), ((1, 3), (2, 5))):
    sel = ml.mining.rank_range(d, y, positive_ranks=ranks[0], negative_ranks=ranks[1],
                               where=wj)
    out[f"rank_range{ranks}"] = (sel, ref.selected(
        s, ref.rank_triplets(s, "euclidean", *ranks), "euclidean", 0.5, False))
  return out


@jax.jit
def _every_reduction(e, sel, w):
  return {r: ml.selected_triplet_loss(e, sel, margin=0.5, reduction=r, where=w)
          for r in REDUCTIONS}


def test_selected_triplet_loss_matches_the_reference_for_every_miner():
  for pattern in cases.PATTERNS:
    batch, dim = cases.SHAPES[-1]
    x, y, w = cases.make(pattern, batch, dim)
    for name, (sel, expected) in _selections(x, y, w).items():
      out = _every_reduction(x, sel, np.ones(batch, bool) if w is None else w)
      for reduction in REDUCTIONS:
        try:
          check(out[reduction], ref.reduce(expected, reduction))
        except AssertionError as e:
          raise AssertionError(f"{name} {reduction} {pattern} B={batch}") from e


def test_tfa_pair_selection_reproduces_semi_hard_tfa_loss_and_gradient():
  x, y, w = cases.make("padding", 12, 4, seed=2)
  w = jnp.asarray(w)
  sel = ml.mining.semi_hard(ml.pairwise_distances(x), y, definition="tfa", where=w)
  for soft in (False, True):
    a = jax.value_and_grad(lambda e, soft=soft: ml.selected_triplet_loss(
        e, sel, margin=0.5, soft=soft, where=w))(x)
    b = jax.value_and_grad(lambda e, soft=soft: ml.semi_hard_triplet_loss(
        e, y, margin=0.5, soft=soft, definition="tfa", where=w))(x)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["pairs", "ranks"])
def test_selected_triplet_loss_gradients_match_finite_differences(kind):
  x, y, w = cases.make("padding", 9, 3, seed=7)
  w = jnp.asarray(w)
  d = ml.pairwise_distances(x)
  sel = (ml.mining.semi_hard(d, y, definition="tfa", where=w) if kind == "pairs" else
         ml.mining.rank_range(d, y, positive_ranks=(0, 2), negative_ranks=(0, 3), where=w))
  with jax.enable_x64(True):
    f = lambda e: ml.selected_triplet_loss(e, sel, margin=0.5, where=w)
    check_grads(f, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"], eps=1e-6)


def test_counts_are_not_a_selection():
  x, y, _ = cases.make("pk", 6, 3)
  counts = ml.mining.batch_all(ml.pairwise_distances(x), y)
  with pytest.raises(TypeError, match="TripletCounts.*batch_all_triplet_loss"):
    ml.selected_triplet_loss(x, counts)
  with pytest.raises(ValueError, match="selection.valid must have shape"):
    ml.selected_triplet_loss(x[:4], ml.mining.batch_hard(ml.pairwise_distances(x), y))


def test_selected_triplet_loss_under_pmap_equals_one_device():
  x, y, w = cases.make("padding", 16, 3, seed=9)
  w = jnp.asarray(w)
  full = ml.selected_triplet_loss(
      x, ml.mining.batch_hard(ml.pairwise_distances(x), y, where=w), margin=0.5, where=w)
  full_g = jax.grad(lambda e: ml.selected_triplet_loss(
      e, ml.mining.batch_hard(ml.pairwise_distances(e), y, where=w), margin=0.5, where=w))(x)
  n = jax.device_count()

  def local(e, labels, where):
    d = ml.pairwise_distances(e, jax.lax.all_gather(e, "d", tiled=True))
    sel = ml.mining.batch_hard(jax.lax.stop_gradient(d), labels, where=where, axis_name="d")
    return ml.selected_triplet_loss(e, sel, margin=0.5, where=where, axis_name="d")

  shard = lambda v: np.asarray(v).reshape((n, -1) + np.shape(v)[1:])
  value, g = jax.pmap(jax.value_and_grad(local), axis_name="d")(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(value, np.full(n, full), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g).reshape(x.shape), full_g, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Sohn's N-pair loss: roles, global order, and the old definition.
# --------------------------------------------------------------------------- #

def test_npair_sohn_on_n_pair_batches_in_both_layouts():
  rng = np.random.default_rng(0)
  a, p = rng.standard_normal((2, 5, 4)).astype(np.float32)
  expected = np.mean([np.log(np.sum(np.exp(a[n] @ p.T))) - a[n] @ p[n] for n in range(5)])
  interleaved = np.stack([a, p], 1).reshape(10, 4)
  np.testing.assert_allclose(ml.npair_loss(interleaved, np.repeat(np.arange(5), 2)),
                             expected, rtol=1e-5)
  blocks = np.concatenate([a, p])
  np.testing.assert_allclose(ml.npair_loss(blocks, np.tile(np.arange(5), 2)), expected,
                             rtol=1e-5)
  per_anchor = ml.npair_loss(blocks, np.tile(np.arange(5), 2), reduction="none")
  assert np.all(per_anchor[5:] == 0) and np.all(per_anchor[:5] > 0)
  assert abs(float(ml.npair_loss(blocks, np.tile(np.arange(5), 2), definition="all_pairs"))
             - expected) > 1e-3


def test_npair_sohn_under_pmap_uses_the_global_order():
  x, y, w = cases.make("padding", 16, 3, seed=1)
  y = np.array([5, 1, 5, 2, 1, 3, 3, 2, 4, 4, 6, 1, 7, 6, 7, 5], np.int32)
  full, full_g = jax.value_and_grad(lambda e: ml.npair_loss(e, y, where=w))(x)
  n = jax.device_count()
  shard = lambda v: np.asarray(v).reshape((n, -1) + np.shape(v)[1:])
  value, g = jax.pmap(jax.value_and_grad(
      lambda e, labels, where: ml.npair_loss(e, labels, where=where, axis_name="d")),
      axis_name="d")(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(value, np.full(n, full), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g).reshape(x.shape), full_g, rtol=1e-5, atol=1e-6)


def test_npair_l2_penalty_adds_the_mean_squared_norm_of_real_rows():
  """Sohn's norm penalty: + λ mean ||x_i||² over real rows (padding left out),
  for every reduction; 0 changes nothing; one device = pmap (value and grad)."""
  x, y, w = cases.make("padding", 16, 3, seed=2)
  x = np.asarray(x).copy()
  x[~np.asarray(w)] = 1e3                       # padding holds large values
  lam = 0.25
  sq = float(np.mean(np.sum(np.asarray(x, np.float64)[np.asarray(w)] ** 2, -1)))
  for reduction in ("mean", "sum", "mean_nonzero", "none"):
    base = ml.npair_loss(x, y, where=w, reduction=reduction)
    same = ml.npair_loss(x, y, where=w, reduction=reduction, l2_penalty=0.0)
    np.testing.assert_array_equal(same, base)
    got = ml.npair_loss(x, y, where=w, reduction=reduction, l2_penalty=lam)
    np.testing.assert_allclose(got, np.asarray(base) + lam * sq, rtol=1e-5)
  with jax.enable_x64(True):
    check_grads(lambda e: ml.npair_loss(e, y, where=jnp.asarray(w), l2_penalty=lam),
                (jnp.asarray(x, jnp.float64) * jnp.asarray(w)[:, None],), order=1,
                modes=["rev"], eps=1e-6)
  full, full_g = jax.value_and_grad(lambda e: ml.npair_loss(e, y, where=w, l2_penalty=lam))(x)
  n = jax.device_count()
  shard = lambda v: np.asarray(v).reshape((n, -1) + np.shape(v)[1:])
  value, g = jax.pmap(jax.value_and_grad(
      lambda e, labels, where: ml.npair_loss(e, labels, where=where, axis_name="d",
                                             l2_penalty=lam)),
      axis_name="d")(shard(x), shard(y), shard(w))
  np.testing.assert_allclose(value, np.full(n, full), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g).reshape(x.shape), full_g, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="l2_penalty"):
    ml.npair_loss(x, y, l2_penalty=-1.0)


# --------------------------------------------------------------------------- #
# Contrastive options against the reference.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("separately", [True, False])
def test_contrastive_options_match_the_reference(squared, separately):
  @jax.jit
  def every(x, y, w):
    return {r: ml.contrastive_loss(x, y, where=w, margin=1.2, pos_margin=0.3,
                                   squared=squared, reduce_separately=separately,
                                   reduction=r) for r in REDUCTIONS}

  for pattern, batch, _, x, y, w in cases.all_cases():
    out = every(x, y, np.ones(batch, bool) if w is None else w)
    pos, neg = ref.contrastive_parts(ref.Setup(x, y, w), "euclidean", 1.2, 0.3, squared)
    for reduction in REDUCTIONS:
      if separately:
        expected = np.asarray(ref.reduce(pos, reduction)) + ref.reduce(neg, reduction)
      else:
        both = [(p[0] + q[0], p[1] + q[1], p[2] + q[2]) for p, q in zip(pos, neg)]
        expected = ref.reduce(both, reduction)
      try:
        check(out[reduction], expected)
      except AssertionError as e:
        raise AssertionError(f"{reduction} {pattern} B={batch}") from e


def test_contrastive_options_gradients_match_finite_differences():
  x, y, w = cases.make("padding", 9, 3, seed=7)
  with jax.enable_x64(True):
    f = lambda e: ml.contrastive_loss(e, y, where=jnp.asarray(w), pos_margin=0.2,
                                      squared=False, reduce_separately=True,
                                      reduction="mean_nonzero")
    check_grads(f, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"], eps=1e-6)


# --------------------------------------------------------------------------- #
# Parity with pytorch-metric-learning (values and gradients to 1e-5).
# --------------------------------------------------------------------------- #

def _pml():
  torch = pytest.importorskip("torch")
  pytest.importorskip("pytorch_metric_learning")
  return torch


def _torch_value_and_grad(torch, loss, x, y):
  emb = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
  value = loss(emb, torch.tensor(np.asarray(y), dtype=torch.int64))
  value.backward()
  return value.item(), emb.grad.numpy()


def _assert_parity(ours, torch_loss, x, y):
  torch = _pml()
  want, want_g = _torch_value_and_grad(torch, torch_loss, x, y)
  got, got_g = jax.value_and_grad(ours)(jnp.asarray(x))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=1e-5)
  return want, want_g


def _parity_batches():
  rng = np.random.default_rng(11)
  yield rng.standard_normal((12, 6)).astype(np.float32), np.repeat(np.arange(6), 2)
  yield rng.standard_normal((12, 6)).astype(np.float32), np.tile(np.arange(6), 2)
  yield rng.standard_normal((12, 6)).astype(np.float32), np.repeat(np.arange(4), 3)
  yield (rng.standard_normal((10, 5)).astype(np.float32),
         np.array([3, 1, 3, 0, 1, 1, 7, 9, 0, 3]))            # uneven, singletons


@pytest.mark.peers
def test_npair_equals_pml_npairs_loss():
  torch = _pml()
  from pytorch_metric_learning import distances
  from pytorch_metric_learning import losses
  for x, y in _parity_batches():
    # PML's default similarity normalises: the preset.
    _assert_parity(lambda e, y=y: ml.presets.get("pml_npair")(e, y), losses.NPairsLoss(), x, y)
    raw = losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False))
    want, want_g = _assert_parity(lambda e, y=y: ml.npair_loss(e, y), raw, x, y)
    # The old (order-free) generalisation is a different loss on the same batch.
    old, old_g = jax.value_and_grad(
        lambda e, y=y: ml.npair_loss(e, y, definition="all_pairs"))(jnp.asarray(x))
    assert abs(float(old) - want) > 1e-3
    assert np.abs(old_g - want_g).max() > 0.05 * np.abs(want_g).max()
  del torch


@pytest.mark.peers
def test_contrastive_equals_pml_contrastive_loss():
  torch = _pml()
  from pytorch_metric_learning import distances
  from pytorch_metric_learning import losses
  for x, y in _parity_batches():
    _assert_parity(lambda e, y=y: ml.presets.get("pml_contrastive")(e, y),
                   losses.ContrastiveLoss(), x, y)
    _assert_parity(lambda e, y=y: ml.presets.get("pml_contrastive")(
        e, y, pos_margin=0.3, margin=0.9), losses.ContrastiveLoss(pos_margin=0.3,
                                                                  neg_margin=0.9), x, y)
    plain = distances.LpDistance(normalize_embeddings=False)
    _assert_parity(lambda e, y=y: ml.contrastive_loss(
        e, y, margin=3.0, pos_margin=0.5, squared=False, reduce_separately=True,
        reduction="mean_nonzero"),
        losses.ContrastiveLoss(pos_margin=0.5, neg_margin=3.0, distance=plain), x, y)
  del torch


@pytest.mark.peers
def test_margin_equals_pml_margin_loss():
  torch = _pml()
  from pytorch_metric_learning import distances
  from pytorch_metric_learning import losses
  from pytorch_metric_learning import reducers
  for x, y in _parity_batches():
    _assert_parity(lambda e, y=y: ml.presets.get("pml_margin")(e, y), losses.MarginLoss(),
                   x, y)
    _assert_parity(lambda e, y=y: ml.presets.get("pml_margin")(e, y, beta=0.9, margin=0.1),
                   losses.MarginLoss(beta=0.9, margin=0.1), x, y)
    plain = distances.LpDistance(normalize_embeddings=False)
    _assert_parity(lambda e, y=y: ml.margin_loss(e, y, beta=2.5, margin=0.4,
                                                 weighting="triplets", reduction="mean"),
                   losses.MarginLoss(beta=2.5, margin=0.4, distance=plain,
                                     reducer=reducers.MeanReducer()), x, y)
  del torch


@pytest.mark.peers
def test_pml_preset_with_a_bank_equals_pml_cross_batch_memory():
  """CrossBatchMemory normalises its memory rows through the loss's distance."""
  torch = _pml()
  from pytorch_metric_learning import losses
  from pytorch_metric_learning import miners
  rng = np.random.default_rng(4)
  bank = (5.0 * rng.standard_normal((8, 6))).astype(np.float32)
  bank_y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
  x = rng.standard_normal((8, 6)).astype(np.float32)
  y = np.array([0, 0, 1, 1, 2, 2, 4, 4])
  memory = losses.CrossBatchMemory(losses.TripletMarginLoss(), embedding_size=6,
                                   memory_size=16, miner=miners.BatchHardMiner())
  memory(torch.tensor(bank, dtype=torch.float64), torch.tensor(bank_y))   # fill the bank
  want = memory(torch.tensor(x, dtype=torch.float64), torch.tensor(y)).item()
  got = ml.presets.get("pml")(x, y, ref_embeddings=bank, ref_labels=bank_y)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Keys are keyword-only.
# --------------------------------------------------------------------------- #

def test_margin_loss_key_is_keyword_only():
  import inspect
  for fn in (pairs.margin_loss, triplet.selected_triplet_loss):
    for p in inspect.signature(fn).parameters.values():
      if p.name == "key":
        assert p.kind is inspect.Parameter.KEYWORD_ONLY

