"""Gradients: finite differences, and finite / exactly zero where they must be."""

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import LOSSES
from jax.test_util import check_grads

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

NAMES = sorted(LOSSES)
# Losses whose gradient is exactly 0 when every embedding is identical.
ZERO_AT_DUPLICATES = [n for n in NAMES if not n.startswith("npair")]


def _loss(name, reduction="mean", metric="euclidean"):
  call = LOSSES[name][0]
  return lambda x, y, w=None: call(x, y, w, metric, reduction)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
  x, y, w = cases.make("padding", 9, 3, seed=7)
  with jax.enable_x64(True):
    f = lambda e: _loss(name)(e, y, jnp.asarray(w))
    check_grads(f, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_duplicates_no_valid_anchor_and_padding(name, dtype):
  loss = _loss(name)
  grad = jax.jit(jax.value_and_grad(loss), static_argnums=())
  labels = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)

  # Identical embeddings: finite loss and gradient (zero except for n-pair).
  x = jnp.ones((6, 4), dtype)
  value, g = grad(x, labels, jnp.ones(6, bool))
  assert value.dtype == dtype and g.dtype == dtype
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(g, np.float32)))
  if name in ZERO_AT_DUPLICATES:
    assert np.all(np.asarray(g, np.float32) == 0)

  # No valid anchor (all labels distinct): loss 0 and gradient exactly 0.
  x = jnp.asarray(cases.make("pk", 6, 4)[0], dtype)
  value, g = grad(x, jnp.arange(6, dtype=jnp.int32), jnp.ones(6, bool))
  if not name.startswith(("contrastive", "margin")):   # negative pairs still count
    assert float(value) == 0 and np.all(np.asarray(g, np.float32) == 0)

  # Padding rows get exactly zero gradient, whatever they hold.
  x = x.at[2].set(1e4).at[5].set(jnp.nan if dtype == jnp.float32 else 0)
  where = jnp.array([True, True, False, True, True, False])
  value, g = grad(x, labels, where)
  g = np.asarray(g, np.float32)
  assert np.isfinite(float(value))
  assert np.all(g[[2, 5]] == 0) and np.all(np.isfinite(g))


def test_batch_hard_soft_margin_is_stable_for_huge_gaps():
  x = jnp.array([[0.0], [1e4], [1.0], [2e4]])
  y = jnp.array([0, 0, 1, 1])
  v, g = jax.value_and_grad(lambda e: _loss("batch_hard_soft")(e, y))(x)
  assert np.isfinite(v) and np.all(np.isfinite(g))
