"""Property-based tests (hypothesis) over every loss.

Random batch sizes, dimensions, label patterns (one class, all distinct,
singletons, heavy duplicates, padding), embedding scales (tiny, huge, zeros,
exact duplicates) and dtypes: losses and gradients are always finite, and the
losses without discontinuous selection thresholds match the float64 reference.
(Semi-hard, multi-similarity and quadruplet select by strict inequalities, where
float32 and float64 may legitimately disagree at a boundary; they are checked
against the reference on fixed inputs in losses_test.py.)

Every example runs at one shape: its batch is padded to 12 rows (``where``
False) and 5 columns (zeros, which change no distance and no inner product), so
each loss and dtype compiles one program for all its examples, and the padding
rows are checked to get no gradient with the rest. (Odd batch shapes themselves:
losses_test.py and fast_paths_test.py.)

The default profile runs 1,100 examples in total (about 1.5 minutes);
ML_HYPOTHESIS_PROFILE=large runs ten times more.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from cases import LOSSES
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

settings.register_profile("default", max_examples=50, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("large", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("ML_HYPOTHESIS_PROFILE", "default"))

SIZES = (4, 7, 12)
DIMS = (2, 5)
CONTINUOUS = ("batch_hard", "batch_hard_soft", "batch_hard_streaming", "batch_all",
              "batch_all_soft", "contrastive", "lifted_structure", "margin", "npair")


@st.composite
def batches(draw):
  b = draw(st.sampled_from(SIZES))
  d = draw(st.sampled_from(DIMS))
  pattern = draw(st.sampled_from(["random", "one_class", "all_distinct", "singletons",
                                  "duplicates"]))
  rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
  labels = {
      "random": lambda: rng.integers(0, 3, b),
      "one_class": lambda: np.full(b, 7),
      "all_distinct": lambda: np.arange(b) * 5 - 9,
      "singletons": lambda: np.r_[[0, 0], np.arange(1, b - 1)],
      "duplicates": lambda: rng.integers(0, 2, b),
  }[pattern]().astype(np.int32)
  scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 0.0]))
  x = (scale * rng.standard_normal((b, d))).astype(np.float32)
  if draw(st.booleans()):                       # exact duplicate rows
    x[rng.integers(0, b, b // 2)] = x[0]
  where = rng.random(b) < 0.8 if draw(st.booleans()) else np.ones(b, bool)
  return x, labels, where


def _padded(x, y, w):
  """The batch at ``max(SIZES)`` rows and ``max(DIMS)`` columns: padding rows
  (labelled like row 0) and zero columns, which leave the loss and the real
  rows' gradients as they are."""
  b, d = x.shape
  xp = np.zeros((max(SIZES), max(DIMS)), x.dtype)
  xp[:b, :d] = x
  yp = np.full(max(SIZES), y[0], y.dtype)
  yp[:b] = y
  wp = np.zeros(max(SIZES), bool)
  wp[:b] = w
  return xp, yp, wp


@functools.lru_cache(maxsize=None)
def _compiled(name, reduction):
  call = LOSSES[name][0]
  return jax.jit(jax.value_and_grad(
      lambda x, y, w: call(x, y, w, "euclidean", reduction).sum()))


@pytest.mark.parametrize("name", sorted(LOSSES))
@given(batch=batches(), dtype=st.sampled_from(["float32", "bfloat16", "float16"]))
def test_loss_and_gradient_are_always_finite(name, batch, dtype):
  x, y, w = _padded(*batch)
  value, grad = _compiled(name, "mean")(jnp.asarray(x, dtype), y, w)
  assert value.dtype == jnp.dtype(dtype) and grad.dtype == jnp.dtype(dtype)
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  assert np.all(np.asarray(grad, np.float32)[~w] == 0)     # padding gets no gradient


@pytest.mark.parametrize("name", CONTINUOUS)
@given(batch=batches())
def test_continuous_losses_match_the_reference(name, batch):
  x, y, w = batch
  reference = LOSSES[name][1]
  terms = reference(ref.Setup(x, y, w), "euclidean")
  scale = max(1.0, float(np.abs(x).max()) ** 2)
  for reduction in ("none", "mean"):
    value, _ = _compiled(name, reduction)(*_padded(x, y, w))
    expected = np.sum(ref.reduce(terms, reduction))
    np.testing.assert_allclose(float(value), expected, rtol=2e-4, atol=2e-5 * scale)
