"""Loaders on small generated files in each layout; PK sampling; padded batches."""

import os

import numpy as np
import pytest
from PIL import Image

from metric_learning import data


def _png(path, value, size=(5, 7)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)


def test_digits_split_is_class_disjoint_and_stratified():
  splits = data.class_disjoint_split(data.digits(), seen_classes=(0, 1, 2, 3, 4),
                                     test_fraction=0.3, seed=0)
  assert set(np.unique(splits["train"].labels)) == {0, 1, 2, 3, 4}
  assert set(np.unique(splits["unseen"].labels)) == {5, 6, 7, 8, 9}
  assert len(splits["train"]) + len(splits["seen"]) + len(splits["unseen"]) == 1797
  assert splits["seen"].inputs.shape[1:] == (8, 8, 1)
  assert 0.28 < len(splits["seen"]) / (len(splits["seen"]) + len(splits["train"])) < 0.32
  with pytest.raises(ValueError, match="seen_classes"):
    data.class_disjoint_split(data.digits(), seen_classes=(42,), test_fraction=0.3, seed=0)


def test_npz_loader_and_its_errors(tmp_path):
  path = str(tmp_path / "d.npz")
  np.savez(path, inputs=np.zeros((4, 6, 6), np.uint8) + 255, labels=np.array([0, 0, 1, 1]))
  d = data.load_npz(path)
  assert d.inputs.shape == (4, 6, 6, 1) and d.inputs.max() == 1.0
  assert d.labels.dtype == np.int32
  bad = str(tmp_path / "pickled.npz")
  np.savez(bad, inputs=np.array([{"a": 1}], dtype=object), labels=np.array([0]))
  with pytest.raises(ValueError, match="pickled objects"):
    data.load_npz(bad)
  with pytest.raises(FileNotFoundError, match="expected a .npz file"):
    data.load_npz(str(tmp_path / "missing.npz"))
  np.savez(path, x=np.zeros((2, 3)), labels=np.array([0, 1]))
  with pytest.raises(ValueError, match="lacks arrays"):
    data.load_npz(path)
  np.savez(path, inputs=np.zeros((2, 3)), labels=np.array([0.5, 1.0]))
  with pytest.raises(ValueError, match="integer"):
    data.load_npz(path)


def test_class_names_survive_subset_and_split_and_round_trip(tmp_path):
  digits = data.digits()
  assert digits.class_names == tuple("0123456789")
  splits = data.class_disjoint_split(digits, seen_classes=(0, 1, 2, 3, 4),
                                     test_fraction=0.3, seed=0)
  assert splits["unseen"].class_names == digits.class_names
  assert splits["unseen"].label_names() == {i: str(i) for i in range(5, 10)}
  named = data.Dataset(np.zeros((3, 2)), np.array([2, 0, 2]), name="toy",
                       class_names=["zero", "one", "two"])
  assert named.class_names == ("zero", "one", "two")            # stored as a tuple
  sub = named.subset(named.labels == 2, "twos")
  assert sub.class_names == named.class_names and sub.label_names() == {2: "two"}
  assert data.Dataset(np.zeros((2, 1)), np.array([3, 4])).label_names() == {3: "3", 4: "4"}
  path = str(tmp_path / "meta" / "label_names.json")
  names = {0: "zero", 2: "two", 10: "ten ✓"}
  data.save_label_names(path, names)
  assert data.load_label_names(path) == names
  with pytest.raises(ValueError, match="class_names has 2 names"):
    data.Dataset(np.zeros((2, 1)), np.array([0, 2]), class_names=("a", "b"))
  (tmp_path / "list.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="JSON object"):
    data.load_label_names(str(tmp_path / "list.json"))
  (tmp_path / "keys.json").write_text('{"cat": "x"}')
  with pytest.raises(ValueError, match="integer label"):
    data.load_label_names(str(tmp_path / "keys.json"))
  with pytest.raises(TypeError, match="mapping"):
    data.save_label_names(path, ["a", "b"])


def test_pk_sampler_is_deterministic_and_balanced():
  labels = np.array([0] * 10 + [1] * 3 + [2] * 5 + [3] * 1 + [4] * 6)
  s = data.PKSampler(labels, p=3, k=4, seed=1)
  b = s.batch(7)
  assert b.shape == (12,) and np.array_equal(b, s.batch(7))
  assert not np.array_equal(b, s.batch(8))
  for step in range(50):
    lab = labels[s.batch(step)]
    classes, counts = np.unique(lab, return_counts=True)
    assert len(classes) == 3 and np.all(counts == 4)
    assert 3 not in classes                    # a singleton class is never drawn
    for c in classes:                          # without replacement when possible
      idx = s.batch(step)[lab == c]
      if (labels == c).sum() >= 4:
        assert len(set(idx.tolist())) == 4
  with pytest.raises(ValueError, match="only 4 classes"):
    data.PKSampler(labels, p=5, k=2, seed=0)
  with pytest.raises(ValueError, match="k >= 2"):
    data.PKSampler(labels, p=2, k=1, seed=0)


def test_padded_batches_cover_everything_once_with_static_shapes():
  seen = []
  for index, where in data.padded_batches(10, 4):
    assert index.shape == where.shape == (4,)
    seen += index[where].tolist()
  assert seen == list(range(10))


def test_prefetch_and_augment():
  assert list(data.prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]
  rng = np.random.default_rng(0)
  im = np.zeros((1, 5, 5, 1), np.float32)
  im[0, 2, 2] = 1
  out = data.augment(rng, im, max_shift=1)
  assert out.shape == im.shape and out.sum() == 1
