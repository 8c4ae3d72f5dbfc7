"""Presets reproduce the papers' and libraries' definitions on PK batches."""

import cases
import numpy as np
import pytest
import reference as ref

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only


def _pk(seed=0, batch=12, dim=6, scale=1.0):
  x, y, _ = cases.make("pk", batch, dim, seed=seed, scale=scale)
  return x, y


def _normalized(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


EXPECTED = {
    # name: (embeddings transform, reference per-anchor terms, reduction)
    "hermans": (lambda x: x, lambda s: ref.batch_hard(s, "euclidean", 0.0, True), "mean"),
    "facenet": (_normalized, lambda s: ref.semi_hard_facenet(s, "sqeuclidean", 0.2, False),
                "mean"),
    "pml": (_normalized, lambda s: ref.batch_hard(s, "euclidean", 0.05, False),
            "mean_nonzero"),
    "tfa": (lambda x: x, lambda s: ref.batch_hard(s, "euclidean", 1.0, False), "mean"),
    "tfa_semihard": (lambda x: x, lambda s: ref.semi_hard_tfa(s, "euclidean", 1.0, False),
                     "mean"),
    "sentence_transformers": (lambda x: x,
                              lambda s: ref.batch_hard(s, "euclidean", 5.0, False), "mean"),
}




def _pml_contrastive(s):
  pos, neg = ref.contrastive_parts(s, "euclidean", 1.0, 0.0, squared=False)
  return ref.reduce(pos, "mean_nonzero") + ref.reduce(neg, "mean_nonzero")


# Presets of the pair losses: name -> reference value on normalised embeddings.
EXPECTED_PAIRS = {
    "pml_contrastive": _pml_contrastive,
    "pml_margin": lambda s: ref.reduce(ref.margin_triplets(s, "euclidean", 1.2, 0.2),
                                       "mean_nonzero"),
    "pml_npair": lambda s: ref.reduce(ref.npair_sohn(s), "mean"),
}


def test_every_preset_is_tested():
  assert set(ml.presets.NAMES) == set(EXPECTED) | set(EXPECTED_PAIRS)


@pytest.mark.parametrize("name", sorted(EXPECTED) + sorted(EXPECTED_PAIRS))
def test_preset_matches_its_definition(name):
  for seed in range(3):
    x, y = _pk(seed, scale=0.3 if name == "sentence_transformers" else 1.0)
    if name in EXPECTED_PAIRS:
      expected = EXPECTED_PAIRS[name](ref.Setup(_normalized(x.astype(np.float64)), y))
    else:
      transform, terms, reduction = EXPECTED[name]
      expected = ref.reduce(terms(ref.Setup(transform(x.astype(np.float64)), y)), reduction)
    np.testing.assert_allclose(ml.presets.get(name)(x, y), expected, rtol=1e-4, atol=1e-5)


def test_overrides_and_description():
  x, y = _pk()
  p = ml.presets.get("tfa")
  np.testing.assert_allclose(p(x, y, margin=0.1),
                             ml.batch_hard_triplet_loss(x, y, margin=0.1), rtol=1e-6)
  assert "TripletHardLoss" in p.description


def test_tfa_per_anchor_convention_on_pk_batches():
  """TFA: mean over all B anchors of [m + max_pos - min_neg]_+ (PK: all anchors valid)."""
  x, y = _pk(seed=5)
  d = ref.distance_matrix(x, x, "euclidean")
  same = y[:, None] == y[None, :]
  hp = np.max(np.where(same & ~np.eye(12, dtype=bool), d, 0), axis=1)
  hn = np.min(np.where(~same, d, np.inf), axis=1)
  np.testing.assert_allclose(ml.presets.get("tfa")(x, y),
                             np.mean(np.maximum(1.0 + hp - hn, 0)), rtol=1e-5)


# ---- side by side with pytorch-metric-learning (skipped when not installed) ----

@pytest.mark.peers
def test_pml_preset_equals_pytorch_metric_learning():
  torch = pytest.importorskip("torch")
  pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
  pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
  for seed in range(3):
    x, y = _pk(seed, batch=16, dim=8)
    emb, lab = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
    triplets = pml_miners.BatchHardMiner()(emb, lab)
    want = pml_losses.TripletMarginLoss()(emb, lab, triplets).item()
    np.testing.assert_allclose(ml.presets.get("pml")(x, y), want, rtol=1e-4, atol=1e-6)


@pytest.mark.peers
def test_hermans_and_batch_all_equal_pytorch_metric_learning_equivalents():
  torch = pytest.importorskip("torch")
  pml = pytest.importorskip("pytorch_metric_learning")
  from pytorch_metric_learning import distances
  from pytorch_metric_learning import losses
  from pytorch_metric_learning import miners
  from pytorch_metric_learning import reducers
  x, y = _pk(3, batch=16, dim=8)
  emb, lab = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
  plain = distances.LpDistance(normalize_embeddings=False)
  triplets = miners.BatchHardMiner(distance=plain)(emb, lab)
  hermans = losses.TripletMarginLoss(margin=0.0, smooth_loss=True, distance=plain,
                                     reducer=reducers.MeanReducer())(emb, lab, triplets)
  np.testing.assert_allclose(ml.presets.get("hermans")(x, y), hermans.item(), rtol=1e-4)
  for reducer, reduction in ((reducers.AvgNonZeroReducer(), "mean_nonzero"),
                             (reducers.MeanReducer(), "mean")):
    want = losses.TripletMarginLoss(margin=0.3, distance=plain, reducer=reducer)(emb, lab)
    got = ml.batch_all_triplet_loss(x, y, margin=0.3, reduction=reduction)
    np.testing.assert_allclose(got, want.item(), rtol=1e-4)
  del pml


def test_pml_npair_l2_penalty_is_on_the_raw_rows():
  """PML's LpRegularizer(power=2) sees the raw embeddings: λ mean ||x_i||^2, not λ."""
  import jax
  import jax.numpy as jnp
  preset = ml.presets.get("pml_npair")
  x, y = _pk(1, batch=8, dim=5, scale=2.0)
  x64 = x.astype(np.float64)
  sq = np.sum(x64 * x64, axis=1)
  assert not np.allclose(sq, 1.0)
  for lam in (0.5, 2.0):
    base = preset(x, y)
    np.testing.assert_allclose(preset(x, y, l2_penalty=lam) - base, lam * np.mean(sq),
                               rtol=1e-4)
    g0 = jax.grad(lambda e: preset(e, y))(jnp.asarray(x))
    g = jax.grad(lambda e, lam=lam: preset(e, y, l2_penalty=lam))(jnp.asarray(x))
    np.testing.assert_allclose(g - g0, 2 * lam * x64 / len(x), rtol=1e-4, atol=1e-6)
  # The loss term itself still sees the normalised rows, padding rows take no part,
  # and "none" adds the penalty to every row, as npair_loss does.
  np.testing.assert_allclose(preset(x, y, l2_penalty=0.0), preset(x, y), rtol=1e-6)
  w = np.ones(8, bool)
  w[-1] = False
  padded = x.copy()
  padded[-1] = np.nan
  np.testing.assert_allclose(
      preset(padded, y, where=w, l2_penalty=1.0) - preset(padded, y, where=w),
      np.mean(sq[:-1]), rtol=1e-4)
  np.testing.assert_allclose(
      preset(x, y, reduction="none", l2_penalty=1.0) - preset(x, y, reduction="none"),
      np.full(8, np.mean(sq)), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError):
    preset(x, y, l2_penalty=-1.0)
