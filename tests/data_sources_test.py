"""metric_learning.data.sources: arrays and image files behind one interface."""

import ast
import inspect
import pathlib

import numpy as np
import pytest

from cases import write_noise_images

from metric_learning import data
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
    want = data.augment(np.random.default_rng([5, step, 1]), arrays.inputs[index],
                        max_shift=1, flip=True)
    np.testing.assert_array_equal(batch["inputs"], want)
    assert batch["where"].all()
  plain = sources.source(arrays).batch(sampler, 1, seed=5)
  np.testing.assert_array_equal(plain["inputs"], arrays.inputs[sampler.batch(1)])
  assert src.input_shape == (6, 5, 1) and not src.local_rows


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


@pytest.mark.parametrize("kind,augment,match", [
    (sources.Arrays, {"max_shfit": 1}, r"augment.max_shfit is not an argument of the augmentation "
                                       r"of in-memory data.*did you mean augment.max_shift"),
    (sources.Arrays, {"max_shift": -1}, r"augment.max_shift must be an int >= 0"),
    (sources.Arrays, {"max_shift": 1.5}, r"augment.max_shift must be an int >= 0"),
    (sources.Arrays, {"flip": "yes"}, r"augment.flip must be True or False"),
    (sources.Arrays, {"size": (8, 8)}, r"augment.size is not an argument of the augmentation of in-memory data"),
    (sources.Files, {"max_shift": 2}, r"augment.max_shift is not an argument of the augmentation of image-file "
                                      r"data"),
    (sources.Files, {"size": (8, 8), "erasing": 2.0}, r"^augment: Transform.erasing"),
])
def test_bad_augment_settings_name_the_field(kind, augment, match):
  with pytest.raises(ValueError, match=match):
    kind.check_augment(augment)


def test_defaults_are_every_setting_in_effect():
  for kind in sources.KINDS:
    assert kind.check_augment({}) == kind.augment_defaults()
  assert sources.Arrays.augment_defaults() == {"max_shift": 0, "flip": False}
  assert sources.Files.make_transform({"size": [4, 3]}) == Transform(size=(4, 3))


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
