"""Invariants: permutation, relabelling, masking = removal, translation, no retrace."""

import cases
import jax
import numpy as np
import pytest
from cases import LOSSES
from cases import ORDER_DEPENDENT

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

NAMES = sorted(LOSSES)
EUCLIDEAN_ONLY = {"multi_similarity", "npair", "npair_all_pairs"}   # cosine / inner products


def _loss(name, reduction):
  call = LOSSES[name][0]
  return jax.jit(lambda x, y, w: call(x, y, w, "euclidean", reduction))


def _order_preserving(perm, y):
  """``perm`` changed so that each label's rows keep their relative order."""
  perm = perm.copy()
  for label in np.unique(y):
    slots = np.flatnonzero(y[perm] == label)
    perm[slots] = np.flatnonzero(y == label)
  return perm


@pytest.mark.parametrize("name", NAMES)
def test_permuting_the_batch_permutes_per_anchor_losses(name):
  x, y, w = cases.make("padding", 12, 5)
  perm = np.random.default_rng(0).permutation(12)
  if name in ORDER_DEPENDENT:   # roles follow the order within a label: keep it
    perm = _order_preserving(perm, y)
    assert not np.array_equal(perm, np.arange(12))
  f = _loss(name, "none")
  np.testing.assert_allclose(f(x, y, w)[perm], f(x[perm], y[perm], w[perm]),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_relabelling_classes_changes_nothing(name):
  x, y, w = cases.make("singletons", 10, 4)
  relabel = {v: int(k) for v, k in zip(np.unique(y), [907, -5, 3, 1 << 30, 0, 17, 2, 8, 9])}
  y2 = np.array([relabel[v] for v in y], np.int32)
  w = np.ones(10, bool)
  f = _loss(name, "none")
  np.testing.assert_array_equal(f(x, y, w), f(x, y2, w))


@pytest.mark.parametrize("name,reduction", cases.covering_product(
    NAMES, ["mean", "sum", "mean_nonzero"]))
def test_masking_rows_equals_removing_them(name, reduction):
  x, y, w = cases.make("padding", 12, 4)
  f = _loss(name, reduction)
  masked = f(x, y, w)
  removed = f(x[w], y[w], np.ones(int(w.sum()), bool))
  np.testing.assert_allclose(masked, removed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(NAMES) - EUCLIDEAN_ONLY))
def test_translation_leaves_euclidean_losses_unchanged(name):
  x, y, w = cases.make("pk", 9, 3)
  f = _loss(name, "none")
  np.testing.assert_allclose(f(x, y, np.ones(9, bool)), f(x + 3.0, y, np.ones(9, bool)),
                             rtol=1e-4, atol=1e-4)


def test_no_retrace_across_calls_with_the_same_shapes():
  traces = []

  @jax.jit
  def step(x, y, w):
    traces.append(1)
    return ml.batch_hard_triplet_loss(x, y, where=w) + ml.batch_all_triplet_loss(x, y)

  for seed in range(4):
    x, y, w = cases.make("padding", 12, 4, seed=seed)
    step(x, y + seed, w)
  assert len(traces) == 1
