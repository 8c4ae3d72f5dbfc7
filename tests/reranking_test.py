"""k-reciprocal re-ranking against a loop-by-loop NumPy reference (Zhong et al. 2017)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from metric_learning import reranking

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only


def _sq(a, b):
  return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).astype(np.float32)


def _case(pattern, seed, nq, ng, dim=4):
  rng = np.random.default_rng(seed)
  if pattern == "clusters":   # identities: a few tight groups shared by queries and gallery
    centres = 3 * rng.standard_normal((5, dim))
    x = centres[rng.integers(0, 5, nq + ng)] + 0.5 * rng.standard_normal((nq + ng, dim))
  else:
    x = rng.standard_normal((nq + ng, dim))
  x = x.astype(np.float32)
  q, g = x[:nq], x[nq:]
  return _sq(q, g), _sq(q, q), _sq(g, g)


@pytest.mark.parametrize("pattern,seed,nq,ng,k1,k2,lam", [
    ("clusters", 0, 5, 30, 20, 6, 0.3),     # the paper's setting, N < k1 + 1 at places
    ("clusters", 1, 8, 40, 6, 3, 0.3),
    ("random", 2, 6, 25, 4, 1, 0.0),        # no query expansion; Jaccard only
    ("random", 3, 1, 12, 3, 2, 1.0),        # one query; original distance only
    ("clusters", 4, 10, 50, 8, 4, 0.5),
    ("random", 5, 3, 4, 20, 6, 0.3),        # tiny: every list cut at N
])
def test_rerank_matches_brute_force(pattern, seed, nq, ng, k1, k2, lam):
  qg, qq, gg = _case(pattern, seed, nq, ng)
  got = np.asarray(reranking.k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam))
  want = ref.k_reciprocal_rerank(qg, qq, gg, k1, k2, lam)
  assert got.shape == (nq, ng) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=2e-6)
  assert np.all((got >= -1e-6) & (got <= 1 + 1e-6))


def test_rerank_lambda_one_is_the_row_normalised_distance():
  qg, qq, gg = _case("random", 6, 4, 9)
  got = reranking.k_reciprocal_rerank(qg, qq, gg, k1=3, k2=2, lambda_value=1.0)
  row_max = np.maximum(qq.max(1), qg.max(1))
  np.testing.assert_allclose(got, qg / row_max[:, None], rtol=1e-6)


def test_rerank_pulls_in_a_shared_neighbourhood():
  # Two gallery samples equally far from the query in the original distance:
  # the one whose neighbourhood the query shares ranks first after re-ranking.
  g = np.array([[1.0, 0.0], [-1.0, 0.0], [1.2, 0.1], [1.2, -0.1], [1.1, 0.0],
                [-3.0, 3.0], [-3.0, -3.0], [-3.2, 3.1]], np.float32)
  q = np.array([[0.0, 0.0]], np.float32)
  qg, qq, gg = _sq(q, g), _sq(q, q), _sq(g, g)
  assert qg[0, 0] == qg[0, 1]
  got = np.asarray(reranking.k_reciprocal_rerank(qg, qq, gg, k1=4, k2=1, lambda_value=0.3))
  assert got[0, 0] < got[0, 1]


def test_rerank_is_jittable_and_has_no_nan_with_duplicates():
  qg, qq, gg = _case("random", 7, 3, 10)
  x = np.zeros((13, 2), np.float32)                       # every sample identical
  zq, zg = x[:3], x[3:]
  fn = jax.jit(lambda a, b, c, lam: reranking.k_reciprocal_rerank(a, b, c, k1=4, k2=2,
                                                                 lambda_value=lam))
  np.testing.assert_allclose(fn(qg, qq, gg, jnp.float32(0.3)),
                             reranking.k_reciprocal_rerank(qg, qq, gg, k1=4, k2=2),
                             atol=1e-6)
  out = np.asarray(fn(_sq(zq, zg), _sq(zq, zq), _sq(zg, zg), jnp.float32(0.3)))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, ref.k_reciprocal_rerank(_sq(zq, zg), _sq(zq, zq), _sq(zg, zg),
                                                4, 2, 0.3), atol=2e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k1=0), "k1 must be a positive int"),
    (dict(k2=1.5), "k2 must be a positive int"),
    (dict(lambda_value=1.5), r"lambda_value must be a number in \[0, 1\]"),
])
def test_rerank_rejects_bad_settings(kwargs, match):
  qg, qq, gg = _case("random", 8, 2, 5)
  with pytest.raises(ValueError, match=match):
    reranking.k_reciprocal_rerank(qg, qq, gg, **kwargs)


def test_rerank_rejects_mismatched_shapes():
  qg, qq, gg = _case("random", 9, 2, 5)
  with pytest.raises(ValueError, match=r"query_query must be \[2, 2\]"):
    reranking.k_reciprocal_rerank(qg, gg, gg)
  with pytest.raises(ValueError, match=r"gallery_gallery must be \[5, 5\]"):
    reranking.k_reciprocal_rerank(qg, qq, qq)
