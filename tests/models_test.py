"""Encoders: shapes, normalisation, registry, features → head, architecture sizes, and
local initial weights. (Pretrained-weight parity: pretrained_test.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metric_learning import models


@pytest.mark.parametrize("name,shape,kwargs", [
    ("mlp", (8, 8, 1), dict(hidden=(16, 8), embedding_dim=5)),
    ("cnn", (8, 8, 1), dict(widths=(4, 8), embedding_dim=5)),
    ("resnet18", (16, 16, 3), dict(base_width=4, embedding_dim=5, small_inputs=True)),
    ("resnet34", (16, 16, 3), dict(base_width=2, embedding_dim=5, small_inputs=True)),
    ("resnet50", (32, 32, 3), dict(base_width=2, embedding_dim=5)),
])
def test_models_map_inputs_to_embeddings(name, shape, kwargs):
  m = models.create(name, shape, **kwargs, normalize=True)
  out = m(jnp.ones((3,) + shape))
  assert out.shape == (3, 5)
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match="model name: unknown model 'vit'; did you mean 'vit_[sb]16'"):
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


def _tiny(name):
  if name == "vit":
    return models.VisionTransformer((8, 8, 3), dim=8, depth=1, num_heads=2, patch_size=4,
                                    embedding_dim=3, head_hidden=(4,), rngs=nnx.Rngs(0))
  shapes = {"mlp": (8, 8, 3), "cnn": (8, 8, 3), "resnet18": (8, 8, 3)}
  settings = {"mlp": dict(hidden=(6,)), "cnn": dict(widths=(4, 6)),
              "resnet18": dict(base_width=2, small_inputs=True)}
  return models.create(name, shapes[name], embedding_dim=3, head_batch_norm=True,
                       **settings[name])


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18", "vit"])
def test_call_is_the_head_of_the_pooled_features(name):
  m = _tiny(name)
  m.eval()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  wrapped = models.EncoderWithProxies(m, 4, 3, rngs=nnx.Rngs(1))
  features, embeddings, by_wrapper = nnx.jit(
      lambda w, x: (w.encoder.features(x), w.encoder(x), w.features(x)))(wrapped, x)
  assert features.ndim == 2 and features.dtype == jnp.float32
  np.testing.assert_allclose(embeddings, m.head(features), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(by_wrapper, features)


def test_every_model_takes_the_shared_settings():
  shared = {"embedding_dim", "normalize", "head_batch_norm", "head_hidden", "input_norm",
            "dtype", "freeze_batch_norm", "weights"}
  for name in models.MODELS:
    args = models.arguments(name)
    assert shared <= set(args), (name, shared - set(args))
    assert args["input_norm"] == ("imagenet" if name.startswith(("resnet", "vit")) else None)
    assert args["dtype"] == "float32" and args["freeze_batch_norm"] is False


# torchvision / timm parameter counts without the 1000-way classifier.
@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000),
    ("resnet50", 25_557_032 - 2_049_000), ("vit_s16", 22_050_664 - 385_000),
    ("vit_b16", 86_567_656 - 769_000),
])
def test_backbones_have_the_source_architectures_parameter_count(name, count):
  model = nnx.eval_shape(lambda: models.create(name, (224, 224, 3), embedding_dim=7))
  params = nnx.state(model, nnx.Param)
  backbone = sum(v.size for p, v in nnx.to_flat_state(params) if p[0] != "head")
  assert backbone == count
  shapes = {".".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(params)}
  if name == "resnet50":       # v1.5: the stride is on the bottleneck's 3×3 conv
    assert shapes["layer2.0.conv2.kernel"] == (3, 3, 128, 128)
    assert shapes["layer2.0.downsample.0.kernel"] == (1, 1, 256, 512)


def test_resnet_padding_is_torchs_not_same():
  m = models.create("resnet18", (32, 32, 3), base_width=2)
  assert m.conv1.padding == ((3, 3), (3, 3))
  assert m.layer2[0].conv1.padding == ((1, 1), (1, 1))
  assert m.layer2[0].conv1.strides == 2
