"""Benchmark protocols on tiny trees in the real layouts (tests/protocol_fixtures.py).

Every expectation comes from the builders' manifests (what they wrote), never
from the parser under test.
"""

import gzip
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from metric_learning.data import Dataset
from metric_learning.data import protocols
from metric_learning.data.files import ImageFiles
from tests import protocol_fixtures as fx


def _check(splits, manifest, *, cameras=False):
  """Each split equals the manifest's: paths (absolute, on disk), labels, cameras."""
  assert sorted(splits) == sorted(manifest)
  for name, split in splits.items():
    expected = manifest[name]
    assert isinstance(split, ImageFiles)
    assert split.paths.tolist() == expected["paths"], name
    assert split.labels.dtype == np.int32
    assert split.labels.tolist() == expected["labels"], name
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in split.paths), name
    if cameras:
      assert split.cameras.tolist() == expected["cameras"], name
    else:
      assert split.cameras is None


def _replace_line(path, number, text):
  with open(path) as f:
    lines = f.read().splitlines()
  lines[number - 1] = text
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------- CUB, Cars, SOP, In-shop


def test_cub200_class_disjoint_halves(tmp_path):
  root = fx.make_cub200(str(tmp_path))
  splits = protocols.cub200(root)
  _check(splits, root.manifest["splits"])
  assert len(splits["train"]) == 9 and len(splits["test"]) == 7    # 3+3+3 | 3+3+1
  assert np.unique(splits["train"].labels).tolist() == [0, 1, 2]
  assert np.unique(splits["test"].labels).tolist() == [100, 101, 102]
  for split in splits.values():
    assert split.class_names == tuple(root.manifest["class_names"])
    assert len(split.class_names) == 200
  assert splits["test"].label_names()[100] == "101.Bird_101"
  assert splits["train"].label_names()[0] == "001.Black_footed_Albatross"


def test_cub200_names_from_folders_without_classes_txt(tmp_path):
  root = fx.make_cub200(str(tmp_path))
  os.remove(os.path.join(root, "classes.txt"))
  names = protocols.cub200(root)["test"].class_names
  assert len(names) == 103 and names[0] == "001.Black_footed_Albatross"
  assert names[100] == "101.Bird_101" and names[50] == "51"   # no image, no name: the id


def test_cub200_errors(tmp_path):
  root = fx.make_cub200(str(tmp_path))
  labels = os.path.join(root, "image_class_labels.txt")
  _replace_line(labels, 4, "4 oops")
  with pytest.raises(ValueError, match=r"image_class_labels.txt', line 4: the class id"):
    protocols.cub200(root)
  _replace_line(labels, 4, "4 1 extra")
  with pytest.raises(ValueError, match="line 4: expected 2 fields"):
    protocols.cub200(root)
  os.remove(labels)
  with pytest.raises(FileNotFoundError, match=r"image_class_labels.txt.*CUB_200_2011.tgz"):
    protocols.cub200(root)
  with pytest.raises(FileNotFoundError, match="images.txt"):
    protocols.cub200(str(tmp_path / "nowhere"))


def test_cars196_class_disjoint_halves_from_the_mat_file(tmp_path):
  root = fx.make_cars196(str(tmp_path))
  splits = protocols.cars196(root)
  _check(splits, root.manifest["splits"])
  assert len(splits["train"]) == 9 and len(splits["test"]) == 7
  assert np.unique(splits["train"].labels).tolist() == [0, 1, 2]
  assert np.unique(splits["test"].labels).tolist() == [98, 99, 100]
  assert splits["train"].class_names == tuple(root.manifest["class_names"])
  assert splits["train"].class_names[0] == "AM General Hummer SUV 2000"
  assert len(splits["test"].class_names) == 196


def test_cars196_errors(tmp_path):
  from scipy import io
  root = fx.make_cars196(str(tmp_path))
  mat_path = os.path.join(root, "cars_annos.mat")
  mat = io.loadmat(mat_path)
  mat["annotations"][0, 3]["class"] = np.array([[0]], np.uint8)
  io.savemat(mat_path, {k: v for k, v in mat.items() if not k.startswith("__")})
  with pytest.raises(ValueError, match=r"cars_annos.mat', annotation 4: class"):
    protocols.cars196(root)
  io.savemat(mat_path, {"class_names": mat["class_names"]})
  with pytest.raises(ValueError, match="no 'annotations'"):
    protocols.cars196(root)
  with open(mat_path, "w") as f:
    f.write("not a mat file")
  with pytest.raises(ValueError, match="not a readable MATLAB file"):
    protocols.cars196(root)
  os.remove(mat_path)
  with pytest.raises(FileNotFoundError, match=r"cars_annos.mat.*car_ims"):
    protocols.cars196(root)


def test_sop_splits_and_labels_as_given(tmp_path):
  root = fx.make_sop(str(tmp_path))
  splits = protocols.sop(root)
  _check(splits, root.manifest["splits"])
  assert np.unique(splits["train"].labels).tolist() == [0, 1, 2]
  assert np.unique(splits["test"].labels).tolist() == [3, 4, 5]   # not renumbered
  assert len(splits["test"]) == 7 and splits["train"].class_names is None


def test_sop_errors(tmp_path):
  root = fx.make_sop(str(tmp_path))
  test_txt = os.path.join(root, "Ebay_test.txt")
  _replace_line(test_txt, 3, "2 x 1 chair_final/1_0.JPG")
  with pytest.raises(ValueError, match=r"Ebay_test.txt', line 3: class_id"):
    protocols.sop(root)
  _replace_line(test_txt, 1, "1 4 4 fan_final/1_0.JPG")
  with pytest.raises(ValueError, match="line 1: expected the header"):
    protocols.sop(root)
  os.remove(os.path.join(root, "Ebay_train.txt"))
  with pytest.raises(FileNotFoundError, match=r"Ebay_train.txt.*Stanford_Online_Products"):
    protocols.sop(root)


def test_inshop_train_query_gallery(tmp_path):
  root = fx.make_inshop(str(tmp_path))
  splits = protocols.inshop(root)
  _check(splits, root.manifest["splits"])
  assert [len(splits[s]) for s in ("train", "query", "gallery")] == [9, 3, 5]
  assert np.unique(splits["train"].labels).tolist() == [2, 7, 12]
  assert set(splits["query"].labels) == set(splits["gallery"].labels) == {17, 22, 27}
  # the file as distributed, in Eval/
  os.makedirs(os.path.join(root, "Eval"))
  shutil.move(os.path.join(root, "list_eval_partition.txt"), os.path.join(root, "Eval"))
  _check(protocols.inshop(root), root.manifest["splits"])


def test_inshop_errors(tmp_path):
  root = fx.make_inshop(str(tmp_path))
  path = os.path.join(root, "list_eval_partition.txt")
  _replace_line(path, 1, "16")
  with pytest.raises(ValueError, match="line 1: announces 16 images but 17"):
    protocols.inshop(root)
  _replace_line(path, 1, "17")
  _replace_line(path, 5, "img/MEN/x/id_00000007/01_1_front.jpg id_00000007 validation")
  with pytest.raises(ValueError, match="line 5: evaluation_status"):
    protocols.inshop(root)
  _replace_line(path, 5, "img/MEN/x/id_00000007/01_1_front.jpg 7 train")
  with pytest.raises(ValueError, match="line 5: item_id"):
    protocols.inshop(root)
  os.remove(path)
  with pytest.raises(FileNotFoundError, match=r"list_eval_partition.txt.*img/"):
    protocols.inshop(root)


# --------------------------------------------------------------------- re-identification


@pytest.mark.parametrize("make,protocol", [(fx.make_market1501, protocols.market1501),
                                           (fx.make_dukemtmc, protocols.dukemtmc)])
def test_reid_folders(tmp_path, make, protocol):
  root = make(str(tmp_path))
  splits = protocol(root)
  _check(splits, root.manifest["splits"], cameras=True)
  assert splits["train"].labels.min() > 0                  # junk and distractors dropped
  assert len(splits["train"]) == 7 and len(splits["query"]) == 3
  assert np.unique(splits["train"].labels).tolist() == [2, 7, 12]
  assert set(splits["train"].cameras.tolist()) == {1, 2, 3}
  assert set(splits["query"].cameras.tolist()) == {1}
  assert not set(splits["query"].labels) & set(splits["train"].labels)


def test_market1501_gallery_keeps_junk_and_distractors(tmp_path):
  root = fx.make_market1501(str(tmp_path))
  gallery = protocols.market1501(root)["gallery"]
  assert (gallery.labels == -1).sum() == 2 and (gallery.labels == 0).sum() == 2
  assert len(gallery) == 3 * 2 + 4
  names = [os.path.basename(p) for p in gallery.paths]
  assert names == sorted(names) and names[0].startswith("-1_c1s1")
  assert not any(n.startswith(".") or n == "Thumbs.db" for n in names)


def test_dukemtmc_gallery_distractors(tmp_path):
  root = fx.make_dukemtmc(str(tmp_path))
  splits = protocols.dukemtmc(root)
  assert set(splits["gallery"].labels) - set(splits["query"].labels) == {7000, 7001, 7002}


def test_reid_errors(tmp_path):
  root = fx.make_market1501(str(tmp_path))
  fx._Writer(root, None, 0).image("query/person3.jpg")
  with pytest.raises(ValueError, match=r"person3.jpg'.*0002_c1s1_000451_03.jpg"):
    protocols.market1501(root)
  os.remove(os.path.join(root, "query", "person3.jpg"))
  shutil.rmtree(os.path.join(root, "bounding_box_test"))
  with pytest.raises(FileNotFoundError, match=r"bounding_box_test.*Market-1501"):
    protocols.market1501(root)


def test_msmt17_lists(tmp_path):
  root = fx.make_msmt17(str(tmp_path))
  splits = protocols.msmt17(root)
  _check(splits, root.manifest["splits"], cameras=True)
  assert [len(splits[s]) for s in ("train", "query", "gallery")] == [12, 3, 6]
  assert set(splits["train"].cameras.tolist()) == {1, 2, 12}
  assert np.unique(splits["query"].labels).tolist() == [0, 1, 2]   # test ids restart at 0
  without_val = protocols.msmt17(root, use_val=False)
  _check({"train": without_val["train"]}, {"train": root.manifest["train_only"]}, cameras=True)
  with pytest.raises(TypeError, match="use_val"):
    protocols.msmt17(root, use_val="yes")


def test_msmt17_errors(tmp_path):
  root = fx.make_msmt17(str(tmp_path))
  query = os.path.join(root, "list_query.txt")
  _replace_line(query, 2, "0001/0001_000_xx_0303morning_0015_0.jpg 1")
  with pytest.raises(ValueError, match=r"list_query.txt', line 2: expected a file name"):
    protocols.msmt17(root)
  _replace_line(query, 2, "0001/0001_000_01_0303morning_0015_0.jpg one")
  with pytest.raises(ValueError, match="line 2: the person id"):
    protocols.msmt17(root)
  _replace_line(query, 2, "0001/0001_000_01_0303morning_0015_0.jpg 1")
  os.remove(os.path.join(root, "list_gallery.txt"))
  with pytest.raises(FileNotFoundError, match=r"list_gallery.txt.*MSMT17_V1"):
    protocols.msmt17(root)


# --------------------------------------------------------------------- LFW


@pytest.mark.parametrize("nested", [True, False])
def test_lfw_pairs_exactly_as_written(tmp_path, nested):
  root = fx.make_lfw(str(tmp_path), nested=nested)
  test = protocols.lfw(root)["test"]
  written = root.manifest["pairs"]
  # the independent expectation: every referenced image once, sorted by (name, number)
  images = sorted({(n, i) for n1, i1, n2, i2, _, _ in written for n, i in ((n1, i1), (n2, i2))})
  names = sorted({n for n, _ in images})
  assert test.class_names == tuple(names) and "Unused_Person" not in names
  assert test.paths.tolist() == [os.path.join(root.manifest["image_folder"], n, f"{n}_{i:04d}.jpg")
                                 for n, i in images]
  assert all(os.path.isfile(p) for p in test.paths)
  assert test.labels.tolist() == [names.index(n) for n, _ in images]
  pairs = test.pairs
  assert pairs.first.tolist() == [images.index((n1, i1)) for n1, i1, _, _, _, _ in written]
  assert pairs.second.tolist() == [images.index((n2, i2)) for _, _, n2, i2, _, _ in written]
  assert pairs.same.tolist() == [s for *_, s, _ in written]
  assert pairs.fold.tolist() == [f for *_, f in written] == [0] * 6 + [1] * 6
  assert (test.labels[pairs.first] == test.labels[pairs.second]).tolist() == pairs.same.tolist()


def test_lfw_errors(tmp_path):
  root = fx.make_lfw(str(tmp_path))
  pairs_txt = os.path.join(root, "pairs.txt")
  with open(pairs_txt) as f:
    original = f.read()
  for number, text, message in (
      (5, "Zico\t1\tAdam_Sandler", r"pairs.txt', line 5: expected a mismatched"),
      (2, "Abel_Pacheco\t1\tx", "line 2: the image number"),
      (1, "3\t3", r"line 1: announces 3 folds.*18 lines\) but 12"),
      (1, "10", r"line 1: expected '<folds>")):
    _replace_line(pairs_txt, number, text)
    with pytest.raises(ValueError, match=message):
      protocols.lfw(root)
    with open(pairs_txt, "w") as f:
      f.write(original)
  shutil.rmtree(os.path.join(root, "lfw"))
  with pytest.raises(FileNotFoundError, match="no image folder"):
    protocols.lfw(root)
  os.remove(pairs_txt)
  with pytest.raises(FileNotFoundError, match=r"pairs.txt.*lfw.tgz"):
    protocols.lfw(root)


# --------------------------------------------------------------------- IDX, image folder


def test_idx_gz_and_plain_are_identical(tmp_path):
  gz = fx.make_idx(str(tmp_path / "gz"), gz=True)
  plain = fx.make_idx(str(tmp_path / "plain"), gz=False)
  assert os.path.isfile(os.path.join(gz, "train-images-idx3-ubyte.gz"))
  assert os.path.isfile(os.path.join(plain, "t10k-labels-idx1-ubyte"))
  for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    a = protocols.read_idx(os.path.join(gz, name + ".gz"))
    b = protocols.read_idx(os.path.join(plain, name))
    assert a.dtype == b.dtype == np.uint8
    np.testing.assert_array_equal(a, b, strict=True)
  np.testing.assert_array_equal(protocols.read_idx(os.path.join(gz, "train-images-idx3-ubyte.gz")),
                                gz.manifest["train_images"], strict=True)
  a, b = protocols.idx(gz), protocols.idx(plain)
  for split in ("train", "seen", "unseen"):
    np.testing.assert_array_equal(a[split].inputs, b[split].inputs, strict=True)
    np.testing.assert_array_equal(a[split].labels, b[split].labels, strict=True)


def test_idx_class_disjoint_splits(tmp_path):
  root = fx.make_idx(str(tmp_path))
  m = root.manifest
  splits = protocols.idx(root)
  assert sorted(splits) == ["seen", "train", "unseen"]
  for split in splits.values():
    assert isinstance(split, Dataset) and split.inputs.dtype == np.float32
    assert split.inputs.shape[1:] == (28, 28, 1) and split.labels.dtype == np.int32
    assert split.class_names == tuple("0123456789")
  train_mask = m["train_labels"] < 5
  np.testing.assert_array_equal(splits["train"].labels, m["train_labels"][train_mask])
  np.testing.assert_allclose(splits["train"].inputs[..., 0],
                             m["train_images"][train_mask] / np.float32(255), rtol=1e-6)
  np.testing.assert_array_equal(splits["seen"].labels, m["test_labels"][m["test_labels"] < 5])
  np.testing.assert_array_equal(splits["unseen"].labels, m["test_labels"][m["test_labels"] >= 5])
  assert len(splits["train"]) == 15 and len(splits["seen"]) == len(splits["unseen"]) == 10
  custom = protocols.idx(root, seen_classes=(1, 3))
  assert np.unique(custom["train"].labels).tolist() == [1, 3]
  assert len(custom["unseen"]) == 16
  with pytest.raises(ValueError, match="seen_classes"):
    protocols.idx(root, seen_classes=range(10))
  with pytest.raises(ValueError, match="seen_classes"):
    protocols.idx(root, seen_classes=(42,))


def test_idx_unseen_from_all_uses_every_image(tmp_path):
  root = fx.make_idx(str(tmp_path))          # gzipped, like Debian's dataset-fashion-mnist
  m = root.manifest
  splits = protocols.idx(root, unseen_from="all")
  images = np.concatenate([m["train_images"], m["test_images"]])
  labels = np.concatenate([m["train_labels"], m["test_labels"]])
  np.testing.assert_array_equal(splits["unseen"].labels, labels[labels >= 5].astype(np.int32),
                                strict=True)
  np.testing.assert_allclose(splits["unseen"].inputs[..., 0],
                             images[labels >= 5] / np.float32(255), rtol=1e-6)
  default = protocols.idx(root)
  for split in ("train", "seen"):              # only ``unseen`` changes
    np.testing.assert_array_equal(splits[split].labels, default[split].labels, strict=True)
  assert sum(len(s) for s in splits.values()) == len(labels) == 50
  with pytest.raises(ValueError, match="unseen_from"):
    protocols.idx(root, unseen_from="train")


def test_idx_classes_keep_a_subset_for_a_class_disjoint_validation_split(tmp_path):
  """``classes`` = the training classes, ``seen_classes`` = some of them: the rest stand in
  for unseen classes, and no image of another class enters any split."""
  root = fx.make_idx(str(tmp_path))
  m = root.manifest
  splits = protocols.idx(root, classes=(0, 1, 2, 3, 4), seen_classes=(0, 1, 2),
                         unseen_from="all")
  images = np.concatenate([m["train_images"], m["test_images"]])
  labels = np.concatenate([m["train_labels"], m["test_labels"]])
  stand_in = np.isin(labels, (3, 4))
  np.testing.assert_array_equal(splits["unseen"].labels, labels[stand_in].astype(np.int32),
                                strict=True)
  np.testing.assert_allclose(splits["unseen"].inputs[..., 0], images[stand_in] / np.float32(255),
                             rtol=1e-6)
  train = m["train_labels"] < 3
  np.testing.assert_array_equal(splits["train"].labels, m["train_labels"][train])
  np.testing.assert_array_equal(splits["seen"].labels, m["test_labels"][m["test_labels"] < 3])
  assert np.isin(labels[stand_in], (3, 4)).all() and len(splits["unseen"]) == stand_in.sum() > 0
  with pytest.raises(ValueError, match="classes"):
    protocols.idx(root, classes=(0, 42))
  with pytest.raises(ValueError, match="seen_classes"):          # 7 was filtered out
    protocols.idx(root, classes=(0, 1, 2), seen_classes=(0, 7))


def test_idx_prefixes_and_errors(tmp_path):
  root = fx.make_idx(str(tmp_path), gz=False, prefix_train="emnist-train",
                     prefix_test="emnist-test")
  assert len(protocols.idx(root, prefix_train="emnist-train", prefix_test="emnist-test")[
      "unseen"]) == 10
  with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*Fashion-MNIST"):
    protocols.idx(root)
  path = os.path.join(root, "emnist-test-labels-idx1-ubyte")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(b"\x00\x00\x07\x01" + data[4:])                  # unknown type code
  with pytest.raises(ValueError, match=r"not an IDX file: magic 00000701"):
    protocols.read_idx(path)
  with open(path, "wb") as f:
    f.write(data[:-1])                                       # truncated
  with pytest.raises(ValueError, match="announces shape"):
    protocols.read_idx(path)
  images = os.path.join(root, "emnist-test-images-idx3-ubyte")
  with open(path, "wb") as f, open(images, "rb") as g:
    f.write(g.read())                                        # images where labels belong
  with pytest.raises(ValueError, match=r"labels-idx1-ubyte'.*0x00000801"):
    protocols.idx(root, prefix_train="emnist-train", prefix_test="emnist-test")
  with gzip.open(str(tmp_path / "broken.gz"), "wb") as f:
    f.write(b"\x00\x00")
  with pytest.raises(ValueError, match="not an IDX file"):
    protocols.read_idx(str(tmp_path / "broken.gz"))
  with pytest.raises(FileNotFoundError, match="IDX file not found"):
    protocols.read_idx(str(tmp_path / "missing"))


def test_image_folder_skips_hidden_entries(tmp_path):
  root = fx.make_image_folder(str(tmp_path / "folder"))
  splits = protocols.image_folder(root)
  _check(splits, root.manifest["splits"])
  assert splits["all"].class_names == tuple(root.manifest["class_names"])
  assert splits["all"].labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
  with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
    protocols.image_folder(str(tmp_path / "missing"))
  os.makedirs(tmp_path / "empty" / "cls")
  with pytest.raises(ValueError, match="no images found"):
    protocols.image_folder(str(tmp_path / "empty"))


def test_fixture_images_are_real_jpegs_of_varied_sizes(tmp_path):
  root = fx.make_cub200(str(tmp_path / "varied"))
  sizes = set()
  for path in root.manifest["splits"]["train"]["paths"]:
    with Image.open(path) as im:
      assert im.format == "JPEG" and im.mode == "RGB"
      sizes.add(im.size)
  assert len(sizes) == 3
  fixed = fx.make_sop(str(tmp_path / "fixed"), size=(12, 10))
  for path in fixed.manifest["splits"]["test"]["paths"]:
    with Image.open(path) as im:
      assert im.size == (12, 10)
