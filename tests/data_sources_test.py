"""metric_learning.data.sources: arrays and image files behind one interface."""

import ast
import dataclasses
import inspect
import pathlib

import numpy as np
import pytest
from cases import write_noise_images

from metric_learning import data
from metric_learning.data import image_ops
from metric_learning.data import pipeline
from metric_learning.data import registry as data_registry
from metric_learning.data import sources
from metric_learning.data.transforms import Transform
from metric_learning.data.transforms import decode

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEMBERS = ("labels", "input_shape", "train_batches", "embed", "images", "local_rows",
           "augment", "split", "check_augment", "augment_defaults")


@pytest.fixture(scope="module")
def arrays():
  rng = np.random.default_rng(0)
  return data.Dataset(rng.random((12, 6, 5, 1), np.float32), np.arange(12) % 4, name="arr")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  paths = write_noise_images(tmp_path_factory.mktemp("pngs"),
                             [(10 + i, 9 + i) for i in range(8)], suffix="png", seed=1)
  return data.ImageFiles(np.array(paths), np.arange(8) % 4, name="pngs")


FILE_AUGMENT = {"size": (6, 5), "resize": (8, 7), "flip": True, "tta": "flip"}


def test_both_kinds_offer_the_same_interface(arrays, files):
  for src in (sources.source(arrays), sources.source(files, FILE_AUGMENT)):
    for name in MEMBERS:
      assert hasattr(src, name), (type(src).__name__, name)
  for method in ("train_batches", "embed", "images"):
    sig = lambda cls: list(inspect.signature(getattr(cls, method)).parameters)
    assert sig(sources.Arrays) == sig(sources.Files), method
  for name in sources.Source.__annotations__:
    assert name in MEMBERS


def test_arrays_batches_are_rows_of_a_resumable_function_of_seed_and_step(arrays):
  src = sources.source(arrays, {"max_shift": 1, "flip": True})
  sampler = data.PKSampler(arrays.labels, p=2, k=2, seed=3)
  run = lambda start: list(src.train_batches(sampler, seed=5, start_step=start, num_steps=4))
  full, resumed = run(0), run(2)
  assert len(full) == 4 and len(resumed) == 2
  for a, b in zip(full[2:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], strict=True)
  for step, batch in enumerate(full):
    index = sampler.batch(step)
    np.testing.assert_array_equal(batch["labels"], arrays.labels[index])
    want = _shift_flip_reference(np.random.default_rng([5, step, 1]), arrays.inputs[index],
                                 max_shift=1, flip=True)
    np.testing.assert_array_equal(batch["inputs"], want, strict=True)
    np.testing.assert_array_equal(data.augment(np.random.default_rng([5, step, 1]),
                                               arrays.inputs[index], max_shift=1, flip=True),
                                  want, strict=True)
    assert batch["where"].all()
  plain = sources.source(arrays).batch(sampler, 1, seed=5)
  np.testing.assert_array_equal(plain["inputs"], arrays.inputs[sampler.batch(1)])
  assert src.input_shape == (6, 5, 1) and not src.local_rows


def _shift_flip_reference(rng, images, *, max_shift, flip):
  """The in-memory augmentation as recipes have always had it, pixel by pixel: per
  image, offsets (dy, dx) drawn together, zero fill, then the flip's coin."""
  out = np.zeros_like(images)
  n, h, w, _ = images.shape
  for i in range(n):
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2) if max_shift else (0, 0)
    for y in range(h):
      for x in range(w):
        if 0 <= y - dy < h and 0 <= x - dx < w:
          out[i, y, x] = images[i, y - dy, x - dx]
    if flip and rng.random() < 0.5:
      out[i] = out[i, :, ::-1].copy()
  return out


def test_arrays_take_every_transform_setting_in_float32(arrays):
  augment = {"size": (8, 7), "resize": (10, 9), "max_shift": 1, "flip": True, "erasing": 0.5,
             "eval_resize": (9, 8), "tta": "flip"}
  src = sources.source(arrays, augment)
  transform = Transform(**augment)
  assert src.transform == transform and src.input_shape == (8, 7, 1)
  assert src.augment == sources.Files(data.ImageFiles(np.array(["x.png"]), np.array([0])),
                                      augment).augment          # one schema, one resolution
  sampler = data.PKSampler(arrays.labels, p=2, k=2, seed=3)
  batch = src.batch(sampler, 2, seed=5)
  rng = np.random.default_rng([5, 2, 1])
  want = np.stack([transform.train(row, rng) for row in arrays.inputs[sampler.batch(2)]])
  np.testing.assert_array_equal(batch["inputs"], want, strict=True)
  assert batch["inputs"].shape == (4, 8, 7, 1) and batch["inputs"].dtype == np.float32
  np.testing.assert_array_equal(src.batch(sampler, 2, seed=5)["inputs"], batch["inputs"])
  first = lambda x: x.reshape(len(x), -1)[:, :2]
  views = np.stack([transform.eval_views(row) for row in arrays.inputs])   # [12, 2, 8, 7, 1]
  np.testing.assert_allclose(src.embed(first, batch_size=5),
                             views.reshape(12, 2, -1)[:, :, :2].mean(axis=1), rtol=1e-6)
  np.testing.assert_array_equal(src.images(np.array([4, 1])), views[[4, 1], 0])


def test_an_arrays_size_alone_resizes_training_and_evaluation_alike(arrays):
  src = sources.source(arrays, {"size": (3, 4)})
  assert src.input_shape == (3, 4, 1)
  sampler = data.PKSampler(arrays.labels, p=2, k=2, seed=0)
  index = sampler.batch(0)
  resized = np.stack([image_ops.resize(row, (3, 4)) for row in arrays.inputs])
  np.testing.assert_allclose(src.batch(sampler, 0, seed=0)["inputs"], resized[index])
  np.testing.assert_allclose(src.embed(lambda x: x.reshape(len(x), -1), batch_size=4),
                             resized.reshape(12, -1))


def test_augmenting_arrays_that_are_not_images_is_refused():
  flat = data.Dataset(np.zeros((4, 6), np.float32), np.arange(4), name="vectors")
  assert sources.source(flat).input_shape == (6,)
  with pytest.raises(ValueError, match=r"augment: vectors holds inputs of shape \[6\], not "
                                       r"images \[h, w, c\]"):
    sources.source(flat, {"flip": True})


def test_arrays_embed_and_images(arrays):
  src = sources.source(arrays)
  calls = []

  def embed(x):
    calls.append(x.shape)
    return x.reshape(len(x), -1)[:, :3] * 2

  out = src.embed(embed, batch_size=5)
  np.testing.assert_allclose(out, arrays.inputs.reshape(12, -1)[:, :3] * 2)
  assert set(calls) == {(5, 6, 5, 1)}                 # padded: one shape, one compile
  np.testing.assert_array_equal(src.images(np.array([3, 0])), arrays.inputs[[3, 0]])


def test_files_delegate_to_the_pipeline_and_decode_only_what_is_shown(files):
  src = sources.source(files, FILE_AUGMENT)
  transform = Transform(**FILE_AUGMENT)
  assert src.transform == transform and src.input_shape == (6, 5, 3) and src.local_rows
  sampler = data.PKSampler(files.labels, p=2, k=2, seed=0)
  got = list(src.train_batches(sampler, seed=2, start_step=1, num_steps=3,
                               process_index=1, process_count=2))
  want = list(pipeline.train_batches(files, sampler, transform, seed=2, start_step=1,
                                     num_steps=3, process_index=1, process_count=2))
  assert len(got) == 2
  for a, b in zip(got, want):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], strict=True)
  red = lambda x: x[..., :1].mean(axis=(1, 2)).astype(np.float32)
  np.testing.assert_allclose(src.embed(red, batch_size=3),
                             pipeline.embed_files(red, files, transform, 3))
  shown = src.images(np.array([5, 2]))
  np.testing.assert_array_equal(shown[0], transform.eval_views(decode(files.paths[5]))[0])
  assert shown.shape == (2, 6, 5, 3) and shown.dtype == np.uint8


@pytest.mark.parametrize("kind", sources.KINDS)
@pytest.mark.parametrize("augment,match", [
    ({"max_shfit": 1}, r"^augment.max_shfit is not an argument of the augmentation \(a "
                       r"data.transforms.Transform\); did you mean augment.max_shift\?"),
    ({"max_shift": -1}, r"^augment: Transform.max_shift must be an int >= 0; got -1"),
    ({"max_shift": 1.5}, r"^augment: Transform.max_shift must be an int >= 0"),
    ({"flip": "yes"}, r"^augment: Transform.flip must be a bool"),
    ({"erasing": 2.0}, r"^augment: Transform.erasing"),
    ({"tta": "five_crop_flip", "eval_resize": 9}, r"^augment: Transform.tta='five_crop_flip' "
                                                  r"needs Transform.size"),
])
def test_one_schema_one_message_for_both_kinds(kind, augment, match):
  with pytest.raises(ValueError, match=match):
    kind.check_augment({"size": (8, 8), **augment} if "tta" not in augment else augment)


@pytest.mark.parametrize("kind,augment,match", [
    (sources.Arrays, {"color_jitter": 0.4}, r"^augment.color_jitter needs RGB image files "
                                            r"\(uint8\); in-memory arrays are float32"),
    (sources.Arrays, {"hue": 0.1}, r"^augment.hue needs RGB image files"),
    (sources.Files, {"flip": True}, r"^augment.size is required for image files"),
])
def test_bad_augment_settings_name_the_field(kind, augment, match):
  with pytest.raises(ValueError, match=match):
    kind.check_augment(augment)


def test_defaults_are_every_setting_in_effect():
  defaults = sources.augment_defaults()
  assert set(defaults) == {f.name for f in dataclasses.fields(Transform)}
  for kind in sources.KINDS:
    assert kind.augment_defaults() == defaults
    assert kind.check_augment({"size": (4, 3)}) == {**defaults, "size": (4, 3)}
  assert sources.Arrays.check_augment({}) == defaults
  assert Transform().changes_training is False and Transform().changes_evaluation is False
  assert sources.Files.make_transform({"size": [4, 3]}) == Transform(size=(4, 3))


def test_recorded_file_runs_without_a_size_had_224():
  assert sources.upgrade_augment("cub200", {"flip": True}) == {"flip": True, "size": [224, 224]}
  assert sources.upgrade_augment("cub200", {"size": [5, 5]}) == {"size": [5, 5]}
  assert sources.upgrade_augment("digits", {"flip": True}) == {"flip": True}


def test_kind_follows_the_registry_and_source_refuses_other_types(arrays):
  for name in data_registry.DATASETS:
    want = sources.Files if name in data_registry.STREAMED else sources.Arrays
    assert sources.kind(name) is want, name
  with pytest.raises(TypeError, match="data.Dataset or data.ImageFiles; got ndarray"):
    sources.source(arrays.inputs)


def test_the_trainer_and_tools_never_ask_which_kind_a_split_is():
  # The one place that branches is sources.source / sources.kind.
  asked = []
  for path in sorted((ROOT / "experiments").rglob("*.py")):
    if "benchmarks" in path.parts:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      name = node.id if isinstance(node, ast.Name) else \
          node.attr if isinstance(node, ast.Attribute) else None
      if name in ("ImageFiles", "STREAMED", "Dataset", "embed_files", "train_batch"):
        asked.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
  assert not asked, asked
