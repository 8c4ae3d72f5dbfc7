"""pairwise_distances / paired_distances: values, dtypes, NaN-free gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.test_util import check_grads

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only

METRICS = ("euclidean", "sqeuclidean", "cosine")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [((5, 3), (7, 3)), ((1, 1), (4, 1)), ((6, 16), None)])
def test_pairwise_matches_reference(metric, shape):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape[0]).astype(np.float32)
  y = None if shape[1] is None else rng.standard_normal(shape[1]).astype(np.float32)
  out = jax.jit(lambda a, b: ml.pairwise_distances(a, b, metric=metric))(x, y)
  expected = ref.distance_matrix(x, x if y is None else y, metric)
  assert out.shape == expected.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_paired_matches_reference(metric):
  rng = np.random.default_rng(1)
  x, y = rng.standard_normal((2, 6, 5)).astype(np.float32)
  out = ml.paired_distances(x, y, metric=metric)
  expected = [ref.distance(a, b, metric) for a, b in zip(x, y)]
  assert out.shape == (6,)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_self_distances_have_exact_zero_diagonal_and_symmetry(metric):
  x = np.random.default_rng(2).standard_normal((9, 4)).astype(np.float32) * 30
  d = np.asarray(ml.pairwise_distances(x, metric=metric))
  assert np.all(np.diag(d) == 0)
  np.testing.assert_allclose(d, d.T, rtol=1e-6, atol=1e-5)
  assert np.all(d >= 0)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_duplicates_give_zero_distance_and_zero_gradient(metric, dtype):
  """The seed's NaN: sqrt at zero distance. Duplicates must give 0 and grad 0."""
  row = np.random.default_rng(3).standard_normal(8) * 10
  x = jnp.asarray(np.stack([row, row, row * 1.0]), dtype)
  d = ml.pairwise_distances(x, metric=metric)
  assert d.dtype == dtype
  assert np.all(np.asarray(d, np.float32) == 0)
  g = jax.grad(lambda e: jnp.sum(ml.pairwise_distances(e, metric=metric)))(x)
  assert g.dtype == dtype
  assert np.all(np.asarray(g, np.float32) == 0)
  gp = jax.grad(lambda e: jnp.sum(ml.paired_distances(e, e[::-1], metric=metric)))(x)
  assert np.all(np.asarray(gp, np.float32) == 0)


def test_zero_vectors_are_finite_everywhere():
  x = jnp.zeros((3, 4))
  for metric in METRICS:
    d = ml.pairwise_distances(x, jnp.ones((2, 4)), metric=metric)
    g = jax.grad(lambda e, m=metric: jnp.sum(ml.pairwise_distances(e, metric=m)))(x)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(g))
  np.testing.assert_array_equal(ml.pairwise_distances(x, jnp.ones((2, 4)), metric="cosine"),
                                np.ones((3, 2)))


@pytest.mark.parametrize("metric", METRICS)
def test_gradients_match_finite_differences(metric):
  x = np.random.default_rng(4).standard_normal((4, 3))
  y = np.random.default_rng(5).standard_normal((5, 3))
  with jax.enable_x64(True):
    f = lambda a, b: ml.pairwise_distances(a, b, metric=metric)
    check_grads(f, (jnp.asarray(x), jnp.asarray(y)), order=2,
                              modes=["fwd", "rev"])


def test_low_precision_inputs_are_computed_in_fp32():
  """Far-from-origin points: a bf16 computation would return garbage."""
  rng = np.random.default_rng(6)
  x = (100 + rng.standard_normal((6, 32))).astype(np.float32)
  xb = jnp.asarray(x, jnp.bfloat16)
  d = ml.pairwise_distances(xb)
  assert d.dtype == jnp.bfloat16
  exact = ref.distance_matrix(np.asarray(xb, np.float64), np.asarray(xb, np.float64),
                              "euclidean")
  np.testing.assert_allclose(np.asarray(d, np.float32), exact, rtol=1e-2, atol=0.05)


def test_l2_normalize():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]])
  out = ml.l2_normalize(x)
  np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0], [1.0, 0.0]], rtol=1e-6)
  assert np.all(np.isfinite(jax.jacobian(ml.l2_normalize)(x)))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_matmul_form_derivative_is_autodiffs(metric):
  """The matmul-form kernel's own derivative rule (one pass over the matrix and
  two matmuls) gives autodiff's derivative of the same expression, 0 at the
  distances clamped to 0 (coincident rows, a row with itself), in reverse and
  forward mode."""
  from metric_learning import _kernels
  rng = np.random.default_rng(7)
  x = rng.standard_normal((6, 4)).astype(np.float32)
  x[3] = x[1]                                              # a coincident pair
  y = np.concatenate([x[:3], rng.standard_normal((4, 4)).astype(np.float32)])
  w = jnp.asarray(rng.standard_normal((6, 7)).astype(np.float32))
  root = metric == "euclidean"
  ours = lambda a, b: jnp.sum(w * _kernels.pairwise(a, b, metric))
  plain = lambda a, b: jnp.sum(w * _kernels._squared_form_values(a, b, root))
  for u, v in zip(jax.grad(ours, (0, 1))(x, y), jax.grad(plain, (0, 1))(x, y), strict=True):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)
  tangents = (jnp.asarray(rng.standard_normal(x.shape), jnp.float32),
              jnp.asarray(rng.standard_normal(y.shape), jnp.float32))
  got = jax.jvp(ours, (x, y), tangents)
  want = jax.jvp(plain, (x, y), tangents)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
