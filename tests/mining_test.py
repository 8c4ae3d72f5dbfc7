"""Miners against brute-force selection loops."""

import functools

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only


def _setup(x, y, w):
  return ref.Setup(x, y, w), ref.distance_matrix(x, x, "euclidean")


@pytest.mark.parametrize("positive", ["hard", "easy"])
def test_batch_hard_and_easy_positive_match_loops(positive):
  miner = jax.jit(ml.mining.batch_hard if positive == "hard" else ml.mining.easy_positive)
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = _setup(x, y, w)
    sel = miner(ml.pairwise_distances(x), y, where=None if w is None else jnp.asarray(w))
    for field in ("positive_index", "negative_index", "positive_distance",
                  "negative_distance", "valid"):
      assert getattr(sel, field).shape == (batch,)
    for i in range(batch):
      pos, neg = s.positives(i), s.negatives(i)
      assert bool(sel.valid[i]) == bool(pos and neg)
      if not (pos and neg):
        assert sel.positive_index[i] == -1 and sel.negative_index[i] == -1
        assert sel.positive_distance[i] == 0 and sel.negative_distance[i] == 0
        continue
      pick = max if positive == "hard" else min
      assert sel.positive_index[i] == pick(pos, key=lambda j: d[i, j])
      assert sel.negative_index[i] == min(neg, key=lambda k: d[i, k])
      np.testing.assert_allclose(sel.positive_distance[i], d[i, sel.positive_index[i]],
                                 rtol=1e-5)


def test_semi_hard_tfa_matches_loops():
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = _setup(x, y, w)
    sel = ml.mining.semi_hard(ml.pairwise_distances(x), y, definition="tfa",
                              where=None if w is None else jnp.asarray(w))
    assert sel.negative_index.shape == (batch, batch)
    for i in range(batch):
      neg = s.negatives(i)
      for j in range(batch):
        is_pair = j in s.positives(i) and bool(neg)
        assert bool(sel.valid[i, j]) == is_pair
        if not is_pair:
          assert sel.negative_index[i, j] == -1
          continue
        farther = [k for k in neg if d[i, k] > d[i, j]]
        want = (min(farther, key=lambda k: d[i, k]) if farther
                else max(neg, key=lambda k: d[i, k]))
        assert sel.negative_index[i, j] == want


@pytest.mark.parametrize("definition", ["facenet", None])
def test_triplet_counts_match_loops(definition):
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = _setup(x, y, w)
    dm = ml.pairwise_distances(x)
    wj = None if w is None else jnp.asarray(w)
    counts = (ml.mining.semi_hard(dm, y, margin=0.7, where=wj) if definition
              else ml.mining.batch_all(dm, y, margin=0.7, where=wj))
    for i in range(batch):
      trip = [(j, k) for j in s.positives(i) for k in s.negatives(i)]
      if definition:
        trip = [(j, k) for j, k in trip if d[i, j] < d[i, k] < d[i, j] + 0.7]
        active = trip
      else:
        active = [(j, k) for j, k in trip if 0.7 + d[i, j] - d[i, k] > 0]
      assert counts.num_triplets[i] == len(trip)
      assert counts.num_active[i] == len(active)


def test_rank_range_matches_sorting():
  for _, batch, _, x, y, w in cases.all_cases():
    s, d = _setup(x, y, w)
    sel = ml.mining.rank_range(ml.pairwise_distances(x), y, positive_ranks=(0, 2),
                               negative_ranks=(1, 4),
                               where=None if w is None else jnp.asarray(w))
    assert sel.positive_index.shape == (batch, 2)
    assert sel.negative_index.shape == (batch, 3)
    for i in range(batch):
      pos = sorted(s.positives(i), key=lambda j: -d[i, j])[0:2]
      neg = sorted(s.negatives(i), key=lambda k: d[i, k])[1:4]
      assert sel.positive_index[i].tolist() == pos + [-1] * (2 - len(pos))
      assert sel.negative_index[i].tolist() == neg + [-1] * (3 - len(neg))
      assert sel.negative_valid[i].tolist() == [True] * len(neg) + [False] * (3 - len(neg))


def test_rank_range_beyond_batch_is_invalid_not_an_error():
  x, y, _ = cases.make("pk", 6, 2)
  sel = ml.mining.rank_range(ml.pairwise_distances(x), y, negative_ranks=(4, 9))
  assert sel.negative_index.shape == (6, 5)
  assert not np.any(sel.negative_valid[:, 1:])


def test_distance_weighted_samples_only_valid_pairs_and_follows_weights():
  x, y, w = cases.make("padding", 12, 16)
  x = np.asarray(ml.l2_normalize(x))
  d = ml.pairwise_distances(x)
  s = ref.Setup(x, y, w)
  keys = jax.random.split(jax.random.key(0), 400)
  sample = jax.jit(jax.vmap(lambda k: ml.mining.distance_weighted(
      d, y, key=k, dim=16, where=jnp.asarray(w))))(keys)
  for i in range(12):
    pos, neg = s.positives(i), s.negatives(i)
    if not (pos and neg):
      assert not np.any(sample.valid[:, i])
      continue
    assert set(np.asarray(sample.positive_index[:, i]).tolist()) <= set(pos)
    assert set(np.asarray(sample.negative_index[:, i]).tolist()) <= set(neg)
  # Negatives closer than typical are drawn more often than uniform sampling would.
  i = 0
  neg = s.negatives(i)
  counts = np.bincount(np.asarray(sample.negative_index[:, i]), minlength=12)[neg]
  dn = np.asarray(d)[i, neg]
  logw = -((16 - 2) * np.log(np.maximum(dn, 0.5))
           + (16 - 3) / 2 * np.log(np.maximum(1 - np.maximum(dn, 0.5) ** 2 / 4, 1e-8)))
  p = np.exp(logw - logw.max())
  p = np.where(dn < 1.4, p, 0)
  p /= p.sum()
  np.testing.assert_allclose(counts / 400, p, atol=0.08)


def test_statistics_are_finite_and_correct_on_tiny_batches():
  x = jnp.array([[0.0], [1.0], [1.5], [4.0]])
  s = ml.mining.statistics(ml.pairwise_distances(x), jnp.array([0, 0, 1, 1]), margin=0.2)
  assert float(s["valid_anchor_fraction"]) == 1.0
  assert float(s["active_triplet_fraction"]) == 3 / 8
  np.testing.assert_allclose(float(s["hardest_negative_mean"]), (1.5 + 0.5 + 0.5 + 3) / 4)
  empty = ml.triplet_statistics(x, jnp.array([0, 1, 2, 3]))
  assert all(np.isfinite(float(v)) for v in empty.values())
  assert float(empty["valid_anchor_fraction"]) == 0.0


def test_no_inf_leaks_from_all_masked_rows():
  d = ml.pairwise_distances(jnp.ones((3, 2)))
  sel = ml.mining.batch_hard(d, jnp.array([0, 0, 0]))
  assert np.all(np.isfinite(sel.positive_distance)) and np.all(np.isfinite(sel.negative_distance))


def _first_argmax_loop(row):
  """(first column holding the maximum, any value > -inf); None for NaN rows."""
  if np.isnan(row).any():
    return None
  best = max(row)
  return next(j for j, v in enumerate(row) if v == best), best > -np.inf


@pytest.mark.parametrize("size,chunk", [(7, 4), (8, 4), (9, 4), (37, 4), (64, 16),
                                        (1000, 256), (1537, 256)])
def test_first_argmax_matches_loop_on_ties_empty_rows_and_nan(size, chunk):
  """The chunked path (rows longer than 2 chunks, any remainder) picks exactly
  the column the two-pass form does: first maximum, ties included."""
  rng = np.random.default_rng(size)
  keys = rng.integers(0, 5, (12, size)).astype(np.float32)      # many ties
  keys[1] = -np.inf                                               # nothing valid
  keys[2, :] = -np.inf
  keys[2, -1] = 3.0                                               # only the last column
  keys[3, size // 2] = np.nan
  keys[4] = np.where(rng.random(size) < 0.9, -np.inf, keys[4])   # sparse
  keys[5, 0] = 9.0                                                # first column wins
  keys[6, -1] = 9.0                                               # last column wins
  index, found = ml.mining.first_argmax(jnp.asarray(keys), chunk=chunk)
  assert index.shape == found.shape == (12,)
  assert index.dtype == jnp.int32
  for i, row in enumerate(keys):
    if _first_argmax_loop(row) is None:   # XLA's max may skip a NaN: any column in range
      assert 0 <= int(index[i]) < size
      continue
    want_index, want_found = _first_argmax_loop(row)
    assert int(index[i]) == want_index, (i, row)
    assert bool(found[i]) == want_found
  # leading dimensions, the short (two-pass) path, and jit agree
  stacked = jnp.asarray(np.stack([keys, keys[::-1]]))
  both, _ = jax.jit(ml.mining.first_argmax, static_argnames="chunk")(stacked, chunk=chunk)
  np.testing.assert_array_equal(both[0], index)
  np.testing.assert_array_equal(both[1], index[::-1])
  short, _ = ml.mining.first_argmax(jnp.asarray(keys), chunk=size)
  np.testing.assert_array_equal(short, index)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_sort_rows_returns_the_values_sorted_bit_for_bit(dtype):
  """Integer-key sorting: negatives, -0, +0, inf and subnormals in float order."""
  with jax.enable_x64(dtype == "float64"):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 40)) * 10.0 ** rng.integers(-3, 3, (5, 40))
    x[0, :6] = [np.inf, -np.inf, 0.0, -0.0, 1e-42, -1e-42]
    x = jnp.asarray(x, dtype)
    got = ml.mining.sort_rows(x)
    assert got.dtype == x.dtype and got.shape == x.shape
    want = np.sort(np.asarray(x, np.float64), -1)
    np.testing.assert_array_equal(np.asarray(got, np.float64), want)


def _window_loops(d, pos, neg, margin, lower):
  """Per row: (sum of m + d_j - d_k over the windows, triplets, active, d sum / d d)."""
  rows, cols = d.shape
  sums, triplets, active = np.zeros(rows), np.zeros(rows, int), np.zeros(rows, int)
  slope = np.zeros_like(d)
  for i in range(rows):
    for j in range(cols):
      if not pos[i, j]:
        continue
      for k in range(cols):
        if not neg[i, k]:
          continue
        triplets[i] += not lower
        inside = d[i, k] < d[i, j] + margin and (not lower or d[i, j] < d[i, k])
        if inside:
          sums[i] += margin + d[i, j] - d[i, k]
          active[i] += 1
          triplets[i] += lower
          slope[i, j] += 1
          slope[i, k] -= 1
  return sums, triplets, active, slope


WINDOW_SUMS = {
    "automatic": ml.mining.window_sums,
    "sorted": ml.mining.sorted_window_sums,
    "bounded": functools.partial(ml.mining.bounded_window_sums, 8),
}


@pytest.mark.parametrize("impl", sorted(WINDOW_SUMS))
@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0, 1e-9])
def test_window_sums_match_loops_with_ties(lower, margin, impl):
  """Values, counts and the gradient (a count per distance) on integer distances
  full of ties, window ends landing exactly on distances, and a margin too small
  to change a distance (1e-9 next to 1..5); sorted, sort-free with a bound of 8
  positives (every row here has at most 8) and the automatic choice."""
  rng = np.random.default_rng(int(margin * 10) + lower)
  d = rng.integers(0, 6, (9, 13)).astype(np.float32)
  d[0] = 2.5                                            # one distance everywhere
  pos = rng.random((9, 13)) < 0.3
  neg = ~pos & (rng.random((9, 13)) < 0.8)
  pos[1] = False                                        # no positive
  neg[2] = False                                        # no negative
  want = _window_loops(d, pos, neg, np.float32(margin), lower)
  assert pos.sum(-1).max() <= 8
  fn = lambda v: WINDOW_SUMS[impl](v, jnp.asarray(pos), jnp.asarray(neg), margin, lower)
  sums, triplets, active = jax.jit(fn)(jnp.asarray(d))
  np.testing.assert_allclose(sums, want[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(triplets, want[1])
  np.testing.assert_array_equal(active, want[2])
  grad = jax.grad(lambda v: jnp.sum(fn(v)[0]))(jnp.asarray(d))
  np.testing.assert_array_equal(grad, want[3])


@pytest.mark.parametrize("impl", ["automatic", "sorted", "bounded"])
def test_tfa_selection_equals_the_per_anchor_definition_on_ties(impl):
  """The sorted and the sort-free forms pick the same column as tfa_negatives
  (the [j, k] comparison of one anchor): lowest column among equal distances,
  both for the nearest farther negative and for the farthest-negative fallback."""
  select = {"automatic": ml.mining.tfa_selection, "sorted": ml.mining.sorted_tfa_selection,
            "bounded": functools.partial(ml.mining.bounded_tfa_selection, 12)}[impl]
  rng = np.random.default_rng(11)
  for _ in range(3):
    d = rng.integers(0, 4, (10, 14)).astype(np.float32)      # many ties
    pos = rng.random((10, 14)) < 0.3
    neg = ~pos & (rng.random((10, 14)) < 0.7)
    neg[0] = False                                          # no negative at all
    d, pos, neg = jnp.asarray(d), jnp.asarray(pos), jnp.asarray(neg)
    want = jax.vmap(ml.mining.tfa_negatives)(d, pos, neg)
    got = jax.jit(select)(d, pos, neg)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_positive_slots_list_each_rows_positives_in_column_order():
  rng = np.random.default_rng(3)
  pos = rng.random((7, 11)) < 0.3
  pos[0], pos[1] = False, True                           # none; every column
  index, valid = jax.jit(ml.mining.positive_slots, static_argnums=1)(jnp.asarray(pos), 5)
  for i in range(7):
    want = list(np.flatnonzero(pos[i])[:5])
    assert index[i].tolist() == want + [-1] * (5 - len(want))
    assert valid[i].tolist() == [True] * len(want) + [False] * (5 - len(want))


@pytest.mark.parametrize("pattern", ["groups", "one_class", "distinct", "padding", "refs",
                                     "extreme_labels"])
def test_label_slots_equal_the_positive_columns_of_the_masks(pattern):
  """The positives found by one label sort (what the losses use) are the
  masks' positive columns in column order, with their count, for padding,
  reference rows, singletons and labels at the integer limits."""
  rng = np.random.default_rng(7)
  a, refs = 23, (9 if pattern == "refs" else 0)
  labels = {"groups": np.arange(a + refs) // 3, "one_class": np.zeros(a + refs),
            "distinct": np.arange(a + refs), "padding": rng.integers(0, 4, a + refs),
            "refs": rng.integers(0, 5, a + refs),
            "extreme_labels": rng.choice([np.iinfo(np.int32).min, -1, 0,
                                          np.iinfo(np.int32).max], a + refs)}[pattern]
  labels = jnp.asarray(labels, jnp.int32)
  where = jnp.asarray(rng.random(a + refs) > (0.3 if pattern in ("padding", "extreme_labels",
                                                                  "refs") else -1))
  self_index = jnp.arange(a)
  masks = ml.masks.pair_masks(labels[:a], where[:a], labels, where, self_index)
  for bound in (4, 12, 40):
    want = ml.mining.positive_slots(masks.positive, bound)[0]
    index, count = jax.jit(ml.mining.label_slots, static_argnums=5)(
        labels[:a], where[:a], labels, where, self_index, bound)
    np.testing.assert_array_equal(index, want)
    np.testing.assert_array_equal(count, jnp.sum(masks.positive, -1))


@pytest.mark.parametrize("most,branch", [(0, 4), (4, 4), (5, 32), (32, 32), (33, "sorted"),
                                         (60, "sorted")])
def test_the_few_positive_path_is_chosen_by_the_largest_positive_count(most, branch):
  """The smallest bound that every row of the call fits, decided at run time
  (one compiled function for every count); rows no wider than the largest
  bound take it without a choice."""
  assert ml.mining.POSITIVE_BOUNDS == (4, 32)
  choose = jax.jit(lambda p: ml.mining.by_positive_count(
      p, lambda bound: jnp.int32(bound), lambda: jnp.int32(-1)))
  pos = np.zeros((3, 64), bool)
  pos[1, :most] = True
  pos[2, :min(most, 2)] = True
  assert int(choose(jnp.asarray(pos))) == (-1 if branch == "sorted" else branch)
  assert int(choose(jnp.ones((2, 20), bool))) == 20     # width 20 <= 32: always bounded


@pytest.mark.parametrize("labels", [np.arange(40) // 4, np.arange(40) // 10,
                                    np.r_[np.zeros(36), np.arange(4)]])
def test_counting_miners_equal_on_both_paths(labels, monkeypatch):
  """mining.batch_all and the FaceNet / TFA semi_hard miners give the same
  selection sort-free (few positives) and sorted."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((40, 3)).astype(np.float32))
  d, y = ml.pairwise_distances(x), jnp.asarray(labels, jnp.int32)
  miners = lambda: (ml.mining.batch_all(d, y, margin=0.5),
                    ml.mining.semi_hard(d, y, margin=0.5),
                    ml.mining.semi_hard(d, y, definition="tfa"))
  fast = miners()
  monkeypatch.setattr(ml.mining.blocks, "POSITIVE_BOUNDS", ())
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(miners()), strict=True):
    np.testing.assert_array_equal(a, b)


def test_every_miner_accepts_an_empty_batch():
  """Zero rows (e.g. a fully padded shard) give zero-size selections, not an
  error, like the losses' 0 on an empty batch."""
  d, y = jnp.zeros((0, 0)), jnp.zeros((0,), jnp.int32)
  calls = {
      "batch_hard": lambda: ml.mining.batch_hard(d, y),
      "easy_positive": lambda: ml.mining.easy_positive(d, y),
      "semi_hard": lambda: ml.mining.semi_hard(d, y),
      "semi_hard_tfa": lambda: ml.mining.semi_hard(d, y, definition="tfa"),
      "batch_all": lambda: ml.mining.batch_all(d, y),
      "rank_range": lambda: ml.mining.rank_range(d, y),
      "distance_weighted": lambda: ml.mining.distance_weighted(d, y, key=jax.random.key(0),
                                                               dim=4),
      "statistics": lambda: ml.mining.statistics(d, y),
      "pair_margin": lambda: ml.mining.pair_margin(d, y),
      "triplet_margin": lambda: ml.mining.triplet_margin(d, y),
      "multi_similarity_pairs": lambda: ml.mining.multi_similarity_pairs(d, y),
  }
  for name, call in calls.items():
    out = call()
    leaves = jax.tree.leaves(out)
    assert leaves, name
    for leaf in leaves:
      if name == "statistics":                    # scalars: finite, nothing found
        assert np.all(np.isfinite(np.asarray(leaf))), name
      else:
        assert leaf.shape[0] == 0, (name, leaf.shape)


@pytest.mark.parametrize("width", [4, 12])
def test_slot_argmax_equals_the_masked_first_argmax(width):
  """The batch-hard positive read from the listed columns is the masked row's
  first maximum (ties to the first column, empty rows), and rows with more
  columns than listed fall back to the whole row, whether the keys and mask
  are given as arrays or as functions."""
  rng = np.random.default_rng(11)
  keys = rng.integers(0, 4, (9, 30)).astype(np.float32)   # many ties
  mask = rng.random((9, 30)) < 0.3
  for i in range(9):                                       # at most width columns
    mask[i, np.flatnonzero(mask[i])[width:]] = False
  mask[0] = False                                          # no column
  mask[1, :width + 3] = True                               # more than width: the whole row
  keys[1, width + 2] = 9                                   # its maximum is not listed
  mask[2] = np.arange(30) < width                          # exactly width columns
  want = ml.mining.first_argmax(jnp.where(mask, keys, -jnp.inf))
  for rows in (slice(0, 9), slice(2, 9), slice(0, 1)):
    index, _ = ml.mining.positive_slots(jnp.asarray(mask[rows]), width)
    count = jnp.sum(mask[rows], -1)
    assert (int(jnp.max(count)) > width) == (rows.start == 0 and rows.stop == 9)
    k, m = keys[rows], mask[rows]
    for args in ((k, m), (lambda k=k: k, lambda m=m: m)):
      got = jax.jit(lambda i, c, args=args: ml.mining.slot_argmax(*args, i, c))(index, count)
      np.testing.assert_array_equal(got[0], want[0][rows])
      np.testing.assert_array_equal(got[1], want[1][rows])


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_label_slots_at_the_packed_sort_limit(extra):
  """Labels spanning just under, at and over the range where (label, column)
  packs into one uint32 (the fast sort) give the masks' positive columns."""
  size = 23
  limit = 2**32 // size - 2                 # spans below this take the packed sort
  rng = np.random.default_rng(extra + 5)
  low = np.iinfo(np.int32).min + 7
  labels = jnp.asarray(rng.choice([low, low + 1, low + limit + extra, low + limit - 1],
                                  size), jnp.int32)
  where = jnp.asarray(rng.random(size) > 0.2)
  masks = ml.masks.pair_masks(labels, where, labels, where, jnp.arange(size))
  index, count = ml.mining.label_slots(labels, where, labels, where, jnp.arange(size), 8)
  np.testing.assert_array_equal(index, ml.mining.positive_slots(masks.positive, 8)[0])
  np.testing.assert_array_equal(count, jnp.sum(masks.positive, -1))
