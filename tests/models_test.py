"""Encoders: shapes, normalisation, registry, and local initial weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_learning import models


@pytest.mark.parametrize("name,shape,kwargs", [
    ("mlp", (8, 8, 1), dict(hidden=(16, 8), embedding_dim=5)),
    ("cnn", (8, 8, 1), dict(widths=(4, 8), embedding_dim=5)),
    ("resnet18", (16, 16, 3), dict(base_width=4, embedding_dim=5, small_inputs=True)),
    ("resnet50", (32, 32, 3), dict(base_width=2, embedding_dim=5)),
])
def test_models_map_inputs_to_embeddings(name, shape, kwargs):
  m = models.create(name, shape, **kwargs, normalize=True)
  out = m(jnp.ones((3,) + shape))
  assert out.shape == (3, 5)
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match="model name must be one of.*'mlp'.*got 'vit'"):
    models.create("vit", (8, 8, 1))


def test_weights_round_trip_through_a_local_checkpoint(tmp_path):
  a = models.create("mlp", (4,), hidden=(8,), embedding_dim=3, seed=1)
  b = models.create("mlp", (4,), hidden=(8,), embedding_dim=3, seed=2)
  x = jax.random.normal(jax.random.key(0), (2, 4))
  assert not np.allclose(a(x), b(x))
  models.save_weights(a, str(tmp_path / "w"))
  b = models.load_weights(b, str(tmp_path / "w"))
  np.testing.assert_allclose(a(x), b(x))
  with pytest.raises(FileNotFoundError, match="initial weights not found"):
    models.load_weights(b, str(tmp_path / "missing"))


@pytest.mark.parametrize("seed", [0, 1])
def test_head_batch_norm_spreads_the_initial_embeddings(seed):
  import metric_learning as ml
  from metric_learning import data
  d = data.digits()
  x, y = jnp.asarray(d.inputs[:160]), jnp.asarray(d.labels[:160])
  negatives = []
  for head_batch_norm in (False, True):
    m = models.create("cnn", (8, 8, 1), widths=(32, 64, 128), normalize=True,
                      head_batch_norm=head_batch_norm, seed=seed)
    m.train()
    negatives.append(float(ml.triplet_statistics(m(x), y)["hardest_negative_mean"]))
  assert negatives[1] > 2 * negatives[0], negatives
