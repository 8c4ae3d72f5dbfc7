"""Loaders on small generated files in each layout; PK sampling; padded batches;
the header check of image files (refuse or skip bad files)."""

import logging
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from metric_learning import data
from metric_learning.data import files as files_lib
from metric_learning.data import registry as data_registry
from tests import protocol_fixtures as fx


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
  # test_fraction=0: every sample of the seen classes trains, "seen" is empty.
  whole = data.class_disjoint_split(data.digits(), seen_classes=(0, 1, 2, 3, 4),
                                    test_fraction=0.0, seed=0)
  assert len(whole["seen"]) == 0 and whole["seen"].inputs.shape[1:] == (8, 8, 1)
  assert len(whole["train"]) == len(splits["train"]) + len(splits["seen"])
  with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\); got 1.0"):
    data.class_disjoint_split(data.digits(), seen_classes=(0,), test_fraction=1.0, seed=0)


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


# ------------------------------------------------------- bad image files


def _png_header(width, height):
  """A PNG whose IHDR claims ``width × height`` pixels, with no pixel data at all."""
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)   # 8-bit RGB
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


BAD = {   # file name -> what check_images must say
    "empty.png": "empty file",
    "truncated.png": "truncated or corrupt",
    "text.png": "not an image Pillow can read",
    "huge.png": "900,000,000 pixels, over Pillow's decompression-bomb limit",
}


def _bad_files(folder):
  """Writes the four BAD files into ``folder``: the paths, in BAD's order."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  good = os.path.join(folder, "source.png")
  Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(good)
  png = open(good, "rb").read()
  os.remove(good)
  content = {"empty.png": b"", "truncated.png": png[:len(png) // 2],
             "text.png": b"a note saved with an image extension\n",
             "huge.png": _png_header(30000, 30000)}
  paths = []
  for name in BAD:
    paths.append(os.path.join(folder, name))
    with open(paths[-1], "wb") as f:
      f.write(content[name])
  return paths


def test_check_images_reads_headers_and_names_each_problem(tmp_path):
  bad = _bad_files(str(tmp_path / "bad"))
  ok = str(tmp_path / "ok.png")
  _png(ok, 9, size=(30, 40))                                  # 40x30 = 1,200 pixels
  appended = str(tmp_path / "appended.jpg")                   # data after JPEG's end marker
  Image.new("RGB", (8, 8)).save(appended)
  with open(appended, "ab") as f:
    f.write(b"\x00" * 10000)
  missing = str(tmp_path / "gone.png")
  paths = [ok, bad[0], appended, *bad[1:], missing, bad[0]]   # a repeated path counts once
  problems = files_lib.check_images(paths)
  assert [p for p, _ in problems] == [*bad, missing]
  for (path, why), expected in zip(problems, [*BAD.values(), "missing"]):
    assert why.startswith(expected), (path, why)
  # The huge image is judged on its header: 30000x30000 RGB would need 2.7 GB decoded.
  assert files_lib.check_images(data.ImageFiles([ok], [0]), max_pixels=1199) == [
      (ok, "40x30 = 1,200 pixels, over the limit of 1,199")]
  assert files_lib.check_images([ok], max_pixels=1200, threads=1) == []
  big = str(tmp_path / "big.png")                             # over Pillow's limit, under 2x
  side = int(np.ceil(np.sqrt(1.5 * Image.MAX_IMAGE_PIXELS)))
  with open(big, "wb") as f:
    f.write(_png_header(side, side))
  (why,) = [w for _, w in files_lib.check_images([big])]
  assert why.startswith(f"{side}x{side} = ") and "over the limit" in why
  for bad_setting in ({"max_pixels": 0}, {"threads": 0}):
    with pytest.raises(ValueError, match=next(iter(bad_setting))):
      files_lib.check_images([ok], **bad_setting)


def test_check_images_costs_well_under_a_second_per_thousand_files(tmp_path):
  paths = []
  for i in range(300):
    paths.append(str(tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"))
    Image.new("RGB", (16 + i % 9, 12), (i % 256, 0, 0)).save(paths[-1])
  files_lib.check_images(paths)                               # warm the page cache
  start = time.perf_counter()
  assert files_lib.check_images(paths) == []
  assert (time.perf_counter() - start) / len(paths) * 1000 < 0.5   # seconds per 1000 files


def _folder_with_bad_files(root):
  """An image folder of 3 classes (fixtures) with the four BAD files in the first class."""
  root = fx.make_image_folder(root, classes=3, per_class=4)
  bad = _bad_files(os.path.dirname(root.manifest["splits"]["all"]["paths"][0]))
  return root, bad


def test_an_image_dataset_with_bad_files_is_refused_in_one_line(tmp_path):
  root, bad = _folder_with_bad_files(str(tmp_path))
  with pytest.raises(ValueError) as error:
    data_registry.create("image_folder", path=root)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("4 of 13 image files of 'image_folder' cannot be decoded: ")
  assert message.endswith("; set data.skip_bad_files=True to leave them out.")
  for path, why in zip(bad, BAD.values()):
    assert f"{path!r} ({why}" in message
  with pytest.raises(ValueError, match="skip_bad_files must be True or False"):
    data_registry.create("image_folder", path=root, skip_bad_files="yes")


def test_skip_bad_files_leaves_them_out_of_every_split_and_counts_them(tmp_path, caplog):
  root, bad = _folder_with_bad_files(str(tmp_path))
  assert data_registry.arguments("image_folder")["skip_bad_files"] is False
  assert all("skip_bad_files" in data_registry.arguments(n) for n in data_registry.STREAMED)
  assert "skip_bad_files" not in data_registry.arguments("digits")
  with caplog.at_level(logging.WARNING):
    splits = data_registry.create("image_folder", path=root, skip_bad_files=True)
  assert data_registry.skipped_files(splits) == 4
  kept = np.concatenate([s.paths for s in splits.values()])
  assert sorted(kept.tolist()) == sorted(root.manifest["splits"]["all"]["paths"])
  expected = dict(zip(root.manifest["splits"]["all"]["paths"],
                      root.manifest["splits"]["all"]["labels"]))
  for split in splits.values():
    assert [expected[p] for p in split.paths] == split.labels.tolist()
  assert sorted(p for s in splits.values() for p in s.left_out) == sorted(bad)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "left out 4 image files" in warnings[0]
  assert all(os.path.basename(p) in warnings[0] for p in bad)
  # Good files only: nothing is left out, in-memory datasets count 0.
  clean = fx.make_image_folder(str(tmp_path / "clean"))
  assert data_registry.skipped_files(data_registry.create("image_folder", path=clean)) == 0
  assert data_registry.skipped_files(data_registry.create("digits")) == 0


def test_skip_bad_files_drops_the_verification_pairs_that_use_them(tmp_path):
  root = fx.make_lfw(str(tmp_path / "lfw"))
  train = fx.make_image_folder(str(tmp_path / "train"))
  whole = data_registry.create("lfw", path=root, train_path=train)["test"]
  gone = whole.paths[whole.pairs.first[0]]
  with open(gone, "r+b") as f:                                 # cut off the JPEG's end
    f.truncate(os.path.getsize(gone) - 100)
  with pytest.raises(ValueError, match=r"1 of \d+ image files of 'lfw' .*truncated"):
    data_registry.create("lfw", path=root, train_path=train)
  test = data_registry.create("lfw", path=root, train_path=train, skip_bad_files=True)["test"]
  assert test.left_out == (gone,) and gone not in test.paths
  old = [(whole.paths[a], whole.paths[b], s, f) for a, b, s, f in zip(
      whole.pairs.first, whole.pairs.second, whole.pairs.same, whole.pairs.fold)]
  new = [(test.paths[a], test.paths[b], s, f) for a, b, s, f in zip(
      test.pairs.first, test.pairs.second, test.pairs.same, test.pairs.fold)]
  assert new == [pair for pair in old if gone not in pair[:2]] and len(new) < len(old)


def test_resize_of_in_memory_images_is_bilinear_and_antialiased():
  rng = np.random.default_rng(0)
  x = rng.random((3, 7, 5, 2), dtype=np.float32)
  d = data.Dataset(x, np.arange(3, dtype=np.int32), name="toy")
  up = d.resized((14, 10))
  assert up.inputs.shape == (3, 14, 10, 2) and up.inputs.dtype == np.float32
  np.testing.assert_array_equal(up.labels, d.labels)
  # Upsampling: half-pixel-centred bilinear interpolation, written out per pixel.
  def bilinear(image, oy, ox):
    fy, fx = (oy + 0.5) * 7 / 14 - 0.5, (ox + 0.5) * 5 / 10 - 0.5
    y0, x0 = int(np.floor(fy)), int(np.floor(fx))
    wy, wx = fy - y0, fx - x0
    at = lambda i, j: image[min(max(i, 0), 6), min(max(j, 0), 4)]
    return ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1))
            + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)))
  for oy in range(14):
    for ox in range(10):
      np.testing.assert_allclose(up.inputs[1, oy, ox], bilinear(x[1], oy, ox), atol=1e-5)
  # Shrinking by 2 averages (antialiasing), not a sample of every other pixel.
  flat = data.Dataset(np.tile([[0.0], [1.0]], (4, 8)).reshape(1, 8, 8, 1).astype(np.float32),
                      np.zeros(1, np.int32))
  assert np.allclose(flat.resized((4, 4)).inputs[0, 1:-1, :, 0], 0.5, atol=0.1)
  assert d.resized((7, 5)) is d
  with pytest.raises(ValueError, match="resize needs images"):
    data.Dataset(np.zeros((2, 3), np.float32), np.zeros(2, np.int32)).resized((4, 4))


def test_data_resize_applies_to_every_split_of_an_in_memory_dataset():
  plain = data_registry.create("digits")
  big = data_registry.create("digits", resize=12)
  assert plain.keys() == big.keys()
  for key in plain:
    assert big[key].inputs.shape == (len(plain[key]), 12, 12, 1)
    np.testing.assert_array_equal(big[key].labels, plain[key].labels)
  assert data_registry.create("digits", resize=[12, 16])["seen"].inputs.shape[1:] == (12, 16, 1)
  assert data_registry.arguments("idx")["resize"] is None
  assert "resize" not in data_registry.arguments("cub200")
  for bad in (0, -3, (4,), (4, 4, 4), "64", 2.5, True):
    with pytest.raises(ValueError, match="data.resize must be"):
      data_registry.create("digits", resize=bad)
