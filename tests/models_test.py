"""Encoders: shapes, normalisation, registry, features → head, architecture sizes, and
local initial weights. (Pretrained-weight parity: pretrained_test.py.)"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metric_learning import models
from metric_learning import training
from metric_learning.losses import registry
from metric_learning.training import state as state_lib


@pytest.mark.parametrize("name,shape,kwargs", [
    ("mlp", (8, 8, 1), dict(hidden=(16, 8), embedding_dim=5)),
    ("cnn", (8, 8, 1), dict(widths=(4, 8), embedding_dim=5)),
    ("resnet18", (16, 16, 3), dict(base_width=4, embedding_dim=5, small_inputs=True)),
    ("resnet34", (16, 16, 3), dict(base_width=2, embedding_dim=5, small_inputs=True)),
    ("resnet50", (32, 32, 3), dict(base_width=2, embedding_dim=5)),
    # 48×48: a 2×2 last map. At 1×1, training-mode BatchNorm of a batch of identical
    # inputs zeroes the (ReLU6, not residual) head: embeddings of norm 0.
    ("efficientnet_lite0", (48, 48, 3), dict(width_multiplier=0.125, embedding_dim=5)),
])
@pytest.mark.values_only      # one call of each model: compiling, not running (conftest.py)
def test_models_map_inputs_to_embeddings(name, shape, kwargs):
  m = models.create(name, shape, **kwargs, normalize=True)
  out = nnx.jit(lambda m, x: m(x))(m, jnp.ones((3,) + shape))
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
  shapes = {"mlp": (8, 8, 3), "cnn": (8, 8, 3), "resnet18": (8, 8, 3),
            "efficientnet_lite0": (8, 8, 3)}
  settings = {"mlp": dict(hidden=(6,)), "cnn": dict(widths=(4, 6)),
              "resnet18": dict(base_width=2, small_inputs=True),
              "efficientnet_lite0": dict(width_multiplier=0.125)}
  return models.create(name, shapes[name], embedding_dim=3, head_batch_norm=True,
                       **settings[name])


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18", "vit", "efficientnet_lite0"])
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
    # Each pretrained family defaults to its weights' input scaling.
    default = ("imagenet" if name.startswith(("resnet", "vit")) else
               "inception" if name.startswith("efficientnet") else None)
    assert args["input_norm"] == default
    assert args["dtype"] == "float32" and args["freeze_batch_norm"] is False


# torchvision / timm / efficientnet_lite_pytorch parameter counts without the 1000-way
# classifier.
@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000),
    ("resnet50", 25_557_032 - 2_049_000), ("vit_s16", 22_050_664 - 385_000),
    ("vit_b16", 86_567_656 - 769_000), ("efficientnet_lite0", 4_652_008 - 1_281_000),
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
  if name == "efficientnet_lite0":   # depthwise: [k, k, 1, channels], 6 × 24 channels
    assert shapes["_blocks.3._depthwise_conv.kernel"] == (5, 5, 1, 144)


def test_resnet_padding_is_torchs_not_same():
  m = models.create("resnet18", (32, 32, 3), base_width=2)
  assert m.conv1.padding == ((3, 3), (3, 3))
  assert m.layer2[0].conv1.padding == ((1, 1), (1, 1))
  assert m.layer2[0].conv1.strides == 2


def test_efficientnet_pads_like_tensorflow_same_and_joins_blocks_within_stages():
  m = models.create("efficientnet_lite0", (32, 32, 3), width_multiplier=0.125)
  assert m._conv_stem.padding == "SAME" and m._conv_stem.strides == 2   # pylint: disable=protected-access
  blocks = m._blocks                                                     # pylint: disable=protected-access
  assert [b.skip for b in blocks] == [False, False, True, False, True, False, True, True,
                                      False, True, True, False, True, True, True, False]
  # A narrow net rounds stages 4 and 5 to one width: stage 5's first block still has
  # no residual (the efficientnet_lite_pytorch package's rule).
  from metric_learning.models import efficientnet  # pylint: disable=import-outside-toplevel
  assert efficientnet.round_width(80, 0.125) == efficientnet.round_width(112, 0.125) == 16
  assert blocks[8]._project_conv.out_features == 16 and not blocks[8].skip  # pylint: disable=protected-access
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  features = lambda m, x: m.features(x)
  assert nnx.eval_shape(features, m, x).shape == (1, 1280)
  assert nnx.eval_shape(features, m, x[:, :17, :23]).shape == (1, 1280)  # "SAME" padding
  with pytest.raises(ValueError, match="width_multiplier must be a positive number"):
    models.create("efficientnet_lite0", (32, 32, 3), width_multiplier=0)


@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 1, "SAME"), (5, 2, "SAME"), (3, 2, ((1, 1), (0, 2))), (5, 1, "VALID")])
def test_depthwise_convolutions_as_shifted_slices_equal_xla(kernel, stride, padding):
  from jax import lax  # pylint: disable=import-outside-toplevel
  from metric_learning.models import base  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 4))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 4))
  numbers = lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))

  def total(conv, x, k):
    out = conv(x, k, (stride, stride), padding, dimension_numbers=numbers,
               feature_group_count=4, precision=lax.Precision.HIGHEST)
    return jnp.sum(jnp.sin(out)), out

  (_, ours), grads = jax.value_and_grad(functools.partial(total, base.conv_general_dilated),
                                        argnums=(0, 1), has_aux=True)(x, k)
  (_, xla), expected = jax.value_and_grad(functools.partial(total, lax.conv_general_dilated),
                                          argnums=(0, 1), has_aux=True)(x, k)
  assert ours.shape == xla.shape
  np.testing.assert_allclose(ours, xla, atol=1e-5, rtol=0)
  for g, e in zip(grads, expected):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
  if jax.default_backend() == "cpu":      # the shifted slices, not a grouped convolution
    jaxpr = str(jax.make_jaxpr(lambda x, k: total(base.conv_general_dilated, x, k))(x, k))
    assert "conv_general_dilated" not in jaxpr


def _params(model, kind):
  return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(
      nnx.state(model, kind))}


def test_freeze_backbone_trains_the_head_alone_and_keeps_batch_norm_statistics():
  model = models.create("cnn", (8, 8, 1), widths=(4, 8), embedding_dim=4, seed=0,
                        freeze_backbone=True, freeze_batch_norm=True)
  backbone = _params(model, models.base.FrozenParam)
  stats = _params(model, nnx.BatchStat)
  assert backbone and stats and all(not k.startswith("head/") for k in backbone)
  tx = training.make_optimizer("adamw", 0.1, weight_decay=0.5)   # decay would move them
  graphdef, state = training.init_state(model, tx, 0)
  assert {p[0] for p, _ in nnx.to_flat_state(state.params)} == {"head"}
  loss = registry.create("batch_hard_triplet_loss")
  step = jax.jit(state_lib.make_train_step(graphdef, tx, lambda e, y, w: loss(e, y, where=w)))
  rng = np.random.default_rng(0)
  for _ in range(2):
    batch = {"inputs": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
             "labels": np.repeat(np.arange(4), 2), "where": np.ones(8, bool)}
    state, _ = step(state, batch)
  trained = nnx.merge(graphdef, state.params, state.model_state)
  for kind, before in ((models.base.FrozenParam, backbone), (nnx.BatchStat, stats)):
    after = _params(trained, kind)
    assert after.keys() == before.keys()
    for k in before:
      np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  head_before = _params(model.head, nnx.Param)
  head_after = _params(trained.head, nnx.Param)
  assert any(not np.array_equal(head_after[k], head_before[k]) for k in head_before)


def test_freeze_backbone_settings_are_checked():
  with pytest.raises(ValueError, match="freeze_batch_norm=True"):
    models.create("cnn", (8, 8, 1), freeze_backbone=True)
  with pytest.raises(ValueError, match="freeze_backbone must be True or False"):
    models.create("cnn", (8, 8, 1), freeze_backbone=1, freeze_batch_norm=True)
  assert models.arguments("resnet18")["freeze_backbone"] is False


@pytest.mark.parametrize("name,shape,kwargs", [
    ("mlp", (8, 8, 1), dict(hidden=(16,), embedding_dim=16)),
    ("cnn", (8, 8, 1), dict(widths=(4, 8), embedding_dim=8)),
    ("efficientnet_lite0", (32, 32, 1), dict(width_multiplier=0.25, embedding_dim=1280)),
])
def test_identity_head_starts_from_the_normalised_features(name, shape, kwargs):
  model = models.create(name, shape, normalize=True, head_init="identity", **kwargs)
  model.eval()
  x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
  embeddings, features = nnx.jit(lambda m, x: (m(x), m.features(x)))(model, x)
  np.testing.assert_allclose(embeddings, features / np.linalg.norm(features, axis=1,
                                                                 keepdims=True), atol=1e-6)
  assert models.arguments(name)["head_init"] == "lecun_normal"


def test_identity_head_settings_are_checked():
  for kwargs, match in ((dict(embedding_dim=5), "embedding_dim equal to the features' width"),
                        (dict(head_hidden=(8,)), "no head_hidden"),
                        (dict(head_batch_norm=True), "head_batch_norm=False"),
                        (dict(head_init="zeros"), "head_init must be one of")):
    with pytest.raises(ValueError, match=match):
      models.create("cnn", (8, 8, 1), **{"widths": (4, 8), "embedding_dim": 8,
                                         "head_init": "identity", **kwargs})
