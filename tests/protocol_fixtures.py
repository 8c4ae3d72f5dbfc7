"""Tiny benchmark trees in the real layouts and file formats, for protocol and recipe tests.

Each ``make_<protocol>(root, ...)`` writes a few real JPEGs (Pillow, a random
colour per image, varied sizes unless ``size=(width, height)`` is given) and
the dataset's real index files (text tables, MATLAB ``.mat``, IDX), with the
quirks the real archives have: hidden files (``.DS_Store``, ``._x.jpg``),
``Thumbs.db``, re-ID junk (-1) and distractor (0) ids, a class with a single
image. Each returns the root as a :class:`FixtureRoot`: a ``str`` whose
``manifest`` records what was written and what the protocol must return,
computed here from the generated rows, not by the parser under test:

``manifest["splits"][split]`` holds ``"paths"`` (absolute, in the protocol's
order), ``"labels"`` and, for re-ID, ``"cameras"``; plus ``"class_names"``
(CUB, Cars, image folder) and ``"pairs"`` (LFW: ``(name1, i, name2, j, same,
fold)`` in file order).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
from PIL import Image

_SIZES = ((20, 16), (24, 18), (16, 20))      # varied (width, height), as in real datasets


class FixtureRoot(str):
  """A fixture's root folder (use it as a path) with ``manifest``: what was written."""
  manifest: dict

  def __new__(cls, root: str, manifest: dict):
    self = super().__new__(cls, root)
    self.manifest = manifest
    return self


class _Writer:
  """Writes distinct small JPEGs under ``root`` and records the paths written."""

  def __init__(self, root: str, size, seed: int):
    self.root, self.size, self.count = str(root), size, 0
    self.rng = np.random.default_rng(seed)

  def image(self, relative: str) -> str:
    path = os.path.join(self.root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = self.size or _SIZES[self.count % len(_SIZES)]
    colour = self.rng.integers(30, 226, 3)
    noise = self.rng.integers(-25, 26, (height, width, 3))
    Image.fromarray((colour + noise).astype(np.uint8)).save(path, "JPEG", quality=90)
    self.count += 1
    return path

  def text(self, relative: str, lines) -> str:
    path = os.path.join(self.root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write("".join(f"{line}\n" for line in lines))
    return path

  def junk(self, relative: str, content: bytes = b"\x00\x05Bud1 junk") -> None:
    """A hidden or non-image file (``.DS_Store``, ``Thumbs.db``, ``._x.jpg``)."""
    path = os.path.join(self.root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)


def _split(paths, labels, cameras=None) -> dict:
  out = {"paths": list(paths), "labels": list(labels)}
  if cameras is not None:
    out["cameras"] = list(cameras)
  return out


def _disjoint_ids(classes: int, first_test: int) -> list[int]:
  """``classes`` ids across both halves: 1, 2, ... then first_test, first_test + 1, ..."""
  if classes < 2:
    raise ValueError(f"classes must be >= 2 (one per half); got {classes}.")
  train = (classes + 1) // 2
  return list(range(1, train + 1)) + list(range(first_test, first_test + classes - train))


_BIRDS = ("Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani",
          "Crested_Auklet", "Least_Auklet", "Parakeet_Auklet", "Rhinoceros_Auklet")


def make_cub200(root: str, *, classes: int = 6, per_class: int = 3, size=None,
                seed: int = 0) -> FixtureRoot:
  """CUB-200-2011 (``CUB_200_2011/``): ``images.txt``, ``image_class_labels.txt``,
  ``classes.txt`` (all 200 classes), ``train_test_split.txt``,
  ``bounding_boxes.txt`` and ``images/NNN.Name/Name_XXXX_YYYY.jpg``.

  Images exist for ``classes`` class ids spanning both halves (1, 2, 3, 101,
  102, 103 by default); the last class has one image.
  """
  w = _Writer(root, size, seed)
  names = {c: f"{c:03d}.{_BIRDS[(c - 1) % len(_BIRDS)] if c <= 100 else f'Bird_{c}'}"
           for c in range(1, 201)}
  ids = _disjoint_ids(classes, 101)
  images, labels, splits = [], [], {"train": ([], []), "test": ([], [])}
  for k, cid in enumerate(ids):
    for j in range(1 if k == len(ids) - 1 else per_class):
      species = names[cid].split(".", 1)[1].title()
      rel = f"{names[cid]}/{species}_{1000 + 7 * j:04d}_{100 + j}.jpg"
      path = w.image(f"images/{rel}")
      images.append(rel)
      labels.append(cid)
      part = splits["train" if cid <= 100 else "test"]
      part[0].append(path)
      part[1].append(cid - 1)
  w.junk("images/.DS_Store")
  n = range(1, len(images) + 1)
  w.text("images.txt", [f"{i} {rel}" for i, rel in zip(n, images)])
  w.text("image_class_labels.txt", [f"{i} {cid}" for i, cid in zip(n, labels)])
  w.text("classes.txt", [f"{c} {names[c]}" for c in range(1, 201)])
  w.text("train_test_split.txt", [f"{i} {i % 2}" for i in n])
  w.text("bounding_boxes.txt", [f"{i} 1.0 2.0 10.0 8.0" for i in n])
  return FixtureRoot(root, {"splits": {s: _split(*v) for s, v in splits.items()},
                            "class_names": [names[c] for c in range(1, 201)]})


_CARS = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
         "Acura TL Type-S 2008", "Acura TSX Sedan 2012")


def make_cars196(root: str, *, classes: int = 6, per_class: int = 3, size=None,
                 seed: int = 0) -> FixtureRoot:
  """Cars196: ``cars_annos.mat`` (struct array ``annotations`` with
  ``relative_im_path``, ``bbox_x1..bbox_y2``, ``class``, ``test``; cell array
  ``class_names`` of 196) and ``car_ims/000001.jpg`` ...

  Images exist for ``classes`` class ids spanning both halves (1, 2, 3, 99,
  100, 101 by default); the last class has one image; the ``test`` flag
  alternates (it is not the metric-learning split).
  """
  from scipy import io  # pylint: disable=import-outside-toplevel
  w = _Writer(root, size, seed)
  class_names = [_CARS[c - 1] if c <= len(_CARS) else f"Make{c} Model {2000 + c % 13}"
                 for c in range(1, 197)]
  records, splits = [], {"train": ([], []), "test": ([], [])}
  ids = _disjoint_ids(classes, 99)
  for k, cid in enumerate(ids):
    for _ in range(1 if k == len(ids) - 1 else per_class):
      rel = f"car_ims/{len(records) + 1:06d}.jpg"
      path = w.image(rel)
      records.append((rel, cid, len(records) % 2))
      part = splits["train" if cid <= 98 else "test"]
      part[0].append(path)
      part[1].append(cid - 1)
  fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
  annotations = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
  for i, (rel, cid, test) in enumerate(records):
    box = [np.array([[v]], np.uint16) for v in (1, 2, 15, 12)]
    annotations[0, i] = (np.array([rel]), *box, np.array([[cid]], np.uint8),
                         np.array([[test]], np.uint8))
  names = np.empty((1, len(class_names)), dtype=object)
  for i, name in enumerate(class_names):
    names[0, i] = np.array([name])
  io.savemat(os.path.join(root, "cars_annos.mat"),
             {"annotations": annotations, "class_names": names})
  w.junk("car_ims/.DS_Store")
  return FixtureRoot(root, {"splits": {s: _split(*v) for s, v in splits.items()},
                            "class_names": class_names})


_PRODUCTS = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug",
             "sofa", "stapler", "table", "toaster")
_SOP_HEADER = "image_id class_id super_class_id path"


def make_sop(root: str, *, classes: int = 6, per_class: int = 3, size=None,
             seed: int = 0) -> FixtureRoot:
  """Stanford Online Products: ``Ebay_train.txt`` (class ids 1..ceil(classes/2)),
  ``Ebay_test.txt`` (the following ids), ``Ebay_info.txt`` and
  ``SUPER_final/PRODUCT_k.JPG``; image ids restart at 1 in each file as in the
  real one; the last test class has one image.
  """
  w = _Writer(root, size, seed)
  train = (classes + 1) // 2
  rows, info, splits = {"train": [], "test": []}, [], {"train": ([], []), "test": ([], [])}
  for cid in range(1, classes + 1):
    split = "train" if cid <= train else "test"
    super_id = (cid - 1) % len(_PRODUCTS) + 1
    product = 111085122871 + 977 * cid
    for j in range(1 if cid == classes else per_class):
      rel = f"{_PRODUCTS[super_id - 1]}_final/{product}_{j}.JPG"
      path = w.image(rel)
      rows[split].append(f"{len(rows[split]) + 1} {cid} {super_id} {rel}")
      info.append(f"{len(info) + 1} {cid} {super_id} {rel}")
      splits[split][0].append(path)
      splits[split][1].append(cid - 1)
  w.text("Ebay_train.txt", [_SOP_HEADER] + rows["train"])
  w.text("Ebay_test.txt", [_SOP_HEADER] + rows["test"])
  w.text("Ebay_info.txt", [_SOP_HEADER] + info)
  w.junk("bicycle_final/.DS_Store")
  return FixtureRoot(root, {"splits": {s: _split(*v) for s, v in splits.items()}})


_VIEWS = ("1_front", "2_side", "3_back", "4_full", "7_additional")


def make_inshop(root: str, *, train_items: int = 3, test_items: int = 3, per_item: int = 3,
                size=None, seed: int = 0) -> FixtureRoot:
  """In-shop Clothes Retrieval: ``list_eval_partition.txt`` (count line, header,
  space-padded rows) and ``img/{WOMEN,MEN}/CATEGORY/id_NNNNNNNN/02_1_front.jpg``.

  Item numbers have gaps (2, 7, 12, ...); each test item has its first image in
  ``query`` and the rest in ``gallery`` (the last test item has only two).
  """
  w = _Writer(root, size, seed)
  rows, splits = [], {"train": ([], []), "query": ([], []), "gallery": ([], [])}
  for k in range(train_items + test_items):
    item = 2 + 5 * k
    folder = (f"img/{'WOMEN' if k % 2 == 0 else 'MEN'}/"
              f"{('Dresses', 'Denim', 'Tees_Tanks')[k % 3]}/id_{item:08d}")
    count = 2 if k == train_items + test_items - 1 else per_item
    for j in range(count):
      rel = f"{folder}/{j + 1:02d}_{_VIEWS[j % len(_VIEWS)]}.jpg"
      path = w.image(rel)
      status = "train" if k < train_items else ("query" if j == 0 else "gallery")
      rows.append(f"{rel:<60}id_{item:08d}         {status}")
      splits[status][0].append(path)
      splits[status][1].append(item)
  w.text("list_eval_partition.txt",
         [str(len(rows)), "image_name item_id evaluation_status"] + rows)
  w.junk("img/.DS_Store")
  return FixtureRoot(root, {"splits": {s: _split(*v) for s, v in splits.items()}})


def _make_reid_folders(root, name, *, train_ids, test_ids, cameras, size, seed,
                       junk: bool) -> FixtureRoot:
  """Market-1501 / DukeMTMC-reID folders; ``name(pid, camera, k)`` is a file name."""
  if cameras < 2:
    raise ValueError(f"cameras must be >= 2 (query and gallery differ); got {cameras}.")
  w = _Writer(root, size, seed)
  files = {"bounding_box_train": [], "query": [], "bounding_box_test": []}
  for k in range(train_ids):
    pid = 2 + 5 * k
    shots = 1 if k == train_ids - 1 else cameras     # the last train id has one image
    files["bounding_box_train"] += [(pid, 1 + c, c) for c in range(shots)]
  for k in range(test_ids):
    pid = 3 + 5 * k
    files["query"].append((pid, 1, 0))
    files["bounding_box_test"] += [(pid, 1 + c, c) for c in range(1, cameras)]
  if junk:        # Market: junk -1 and distractors 0 in the gallery (and, as a quirk, in train)
    files["bounding_box_test"] += [(-1, 1, 0), (-1, 2, 1), (0, 1, 2), (0, 3, 3)]
    files["bounding_box_train"] += [(-1, 1, 5), (0, 2, 6)]
  else:           # Duke: distractor ids that appear in no query
    files["bounding_box_test"] += [(7000 + k, 1 + k % cameras, k) for k in range(3)]
  splits = {}
  for folder, split in (("bounding_box_train", "train"), ("query", "query"),
                        ("bounding_box_test", "gallery")):
    written = sorted((name(pid, cam, k), pid, cam) for pid, cam, k in files[folder])
    for file, _, _ in written:
      w.image(f"{folder}/{file}")
    kept = [(f, p, c) for f, p, c in written if split != "train" or p > 0]
    splits[split] = _split([os.path.join(str(root), folder, f) for f, _, _ in kept],
                           [p for _, p, _ in kept], [c for _, _, c in kept])
    w.junk(f"{folder}/Thumbs.db")
    w.junk(f"{folder}/.DS_Store")
    w.junk(f"{folder}/._{written[0][0]}")        # macOS AppleDouble shadow of an image
  return FixtureRoot(root, {"splits": splits})


def make_market1501(root: str, *, train_ids: int = 3, test_ids: int = 3, cameras: int = 3,
                    size=None, seed: int = 0) -> FixtureRoot:
  """Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` of
  ``PPPP_cCsS_FFFFFF_DD.jpg`` files, with junk (``-1_c...``) and distractors
  (``0000_c...``) in the gallery and, to test that they are dropped, in train;
  ``Thumbs.db``, ``.DS_Store`` and ``._*.jpg`` in every folder.
  """
  return _make_reid_folders(
      root, lambda pid, cam, k: f"{pid:04d}_c{cam}s{1 + k % 2}_{451 + 30 * k:06d}_0{k % 4}.jpg"
      if pid >= 0 else f"-1_c{cam}s1_{401 + 30 * k:06d}_0{k % 4}.jpg",
      train_ids=train_ids, test_ids=test_ids, cameras=cameras, size=size, seed=seed, junk=True)


def make_dukemtmc(root: str, *, train_ids: int = 3, test_ids: int = 3, cameras: int = 3,
                  size=None, seed: int = 0) -> FixtureRoot:
  """DukeMTMC-reID: the three folders of ``PPPP_cC_fFFFFFFF.jpg`` files, with
  gallery distractor ids (7000+) that no query shows, and the hidden files of
  :func:`make_market1501`.
  """
  return _make_reid_folders(
      root, lambda pid, cam, k: f"{pid:04d}_c{cam}_f{46182 + 97 * k:07d}.jpg",
      train_ids=train_ids, test_ids=test_ids, cameras=cameras, size=size, seed=seed, junk=False)


def make_msmt17(root: str, *, train_ids: int = 3, test_ids: int = 3, cameras: int = 3,
                size=None, seed: int = 0) -> FixtureRoot:
  """MSMT17 V1: ``list_{train,val,query,gallery}.txt`` (``PATH PID`` rows) and
  ``train/PPPP/PPPP_NNN_CC_0303morning_FFFF_K.jpg``, ``test/...``.

  Train and test ids are numbered separately from 0; every id has one image
  per camera, cameras ``1..cameras-1`` and 12 (two digits); ``list_val.txt``
  holds one more image of each train id. ``manifest["splits"]["train"]`` is
  train + val; ``manifest["train_only"]`` is ``list_train.txt`` alone.
  """
  w = _Writer(root, size, seed)
  cams = list(range(1, cameras)) + [12]

  def shot(folder, pid, n, cam):
    rel = f"{pid:04d}/{pid:04d}_{n:03d}_{cam:02d}_0303morning_{15 + 10 * n:04d}_{n % 2}.jpg"
    return rel, os.path.join(str(root), folder, rel), pid, cam

  lists = {"train": [], "val": [], "query": [], "gallery": []}
  for pid in range(train_ids):
    lists["train"] += [shot("train", pid, n, cam) for n, cam in enumerate(cams)]
    lists["val"].append(shot("train", pid, len(cams), cams[0]))
  for pid in range(test_ids):
    lists["query"].append(shot("test", pid, 0, cams[0]))
    lists["gallery"] += [shot("test", pid, n, cam) for n, cam in enumerate(cams[1:], 1)]
  for part, entries in lists.items():
    for rel, _, _, _ in entries:
      w.image(f"{'train' if part in ('train', 'val') else 'test'}/{rel}")
    w.text(f"list_{part}.txt", [f"{rel} {pid}" for rel, _, pid, _ in entries])

  def split(entries):
    return _split([e[1] for e in entries], [e[2] for e in entries], [e[3] for e in entries])

  return FixtureRoot(root, {"splits": {"train": split(lists["train"] + lists["val"]),
                                       "query": split(lists["query"]),
                                       "gallery": split(lists["gallery"])},
                            "train_only": split(lists["train"])})


_PEOPLE = (("Aaron_Peirsol", 4), ("Abdullah_Gul", 3), ("Abel_Pacheco", 2), ("Adam_Sandler", 1),
           ("Zico", 1), ("Zoran_Djindjic", 2), ("Unused_Person", 2))


def make_lfw(root: str, *, folds: int = 2, per_fold: int = 3, nested: bool = True, size=None,
             seed: int = 0) -> FixtureRoot:
  """LFW: ``pairs.txt`` (``folds\\tper_fold``, then per fold ``per_fold`` matched
  ``Name\\ti\\tj`` and ``per_fold`` mismatched ``Name1\\ti\\tName2\\tj`` lines) and
  ``lfw/Name/Name_0001.jpg`` (directly ``Name/...`` when ``nested`` is False).

  Seven people with 1 to 4 images; ``Unused_Person`` appears in no pair.
  ``manifest["pairs"]`` lists ``(name1, i, name2, j, same, fold)`` as written.
  """
  w = _Writer(root, size, seed)
  rng = np.random.default_rng(seed)
  base = "lfw/" if nested else ""
  for name, count in _PEOPLE:
    for i in range(1, count + 1):
      w.image(f"{base}{name}/{name}_{i:04d}.jpg")
  w.junk(f"{base}.DS_Store")
  used = [p for p in _PEOPLE if p[0] != "Unused_Person"]
  several = [p for p in used if p[1] >= 2]
  pairs, lines = [], [f"{folds}\t{per_fold}"]
  for fold in range(folds):
    for _ in range(per_fold):
      name, count = several[rng.integers(len(several))]
      i, j = sorted(rng.choice(np.arange(1, count + 1), 2, replace=False).tolist())
      pairs.append((name, i, name, j, True, fold))
      lines.append(f"{name}\t{i}\t{j}")
    for _ in range(per_fold):
      a, b = rng.choice(len(used), 2, replace=False)
      (n1, c1), (n2, c2) = used[min(a, b)], used[max(a, b)]
      i, j = int(rng.integers(1, c1 + 1)), int(rng.integers(1, c2 + 1))
      pairs.append((n1, i, n2, j, False, fold))
      lines.append(f"{n1}\t{i}\t{n2}\t{j}")
  w.text("pairs.txt", lines)
  return FixtureRoot(root, {"pairs": pairs, "image_folder": os.path.join(str(root), base)})


def _idx_bytes(array: np.ndarray) -> bytes:
  return struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape) + array.tobytes()


def make_idx(root: str, *, gz: bool = True, classes: int = 10, train_per_class: int = 3,
             test_per_class: int = 2, image_shape=(28, 28), prefix_train: str = "train",
             prefix_test: str = "t10k", seed: int = 0) -> FixtureRoot:
  """MNIST-format files ``{prefix}-images-idx3-ubyte`` / ``{prefix}-labels-idx1-ubyte``
  (``.gz`` when ``gz``) with uint8 images in shuffled class order.

  ``manifest`` holds the written uint8 arrays: ``train_images``,
  ``train_labels``, ``test_images``, ``test_labels``.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  manifest = {}
  for part, prefix, per in (("train", prefix_train, train_per_class),
                            ("test", prefix_test, test_per_class)):
    labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.uint8), per))
    images = rng.integers(0, 256, (len(labels), *image_shape), dtype=np.uint8)
    for kind, array, rank in (("images", images, 3), ("labels", labels, 1)):
      path = os.path.join(root, f"{prefix}-{kind}-idx{rank}-ubyte")
      if gz:
        with gzip.open(path + ".gz", "wb") as f:
          f.write(_idx_bytes(array))
      else:
        with open(path, "wb") as f:
          f.write(_idx_bytes(array))
    manifest[f"{part}_images"], manifest[f"{part}_labels"] = images, labels
  return FixtureRoot(root, manifest)


def make_image_folder(root: str, *, classes: int = 3, per_class: int = 3, size=None,
                      seed: int = 0) -> FixtureRoot:
  """``ROOT/CLASS/IMAGE.jpg`` with hidden entries (``.ipynb_checkpoints/``,
  ``__MACOSX/``, ``.DS_Store``) and a non-image ``notes.txt``; the last class
  has one image.
  """
  w = _Writer(root, size, seed)
  names = [f"{k:03d}.{_BIRDS[k % len(_BIRDS)]}" for k in range(1, classes + 1)]
  paths, labels = [], []
  for label, name in enumerate(names):
    for j in range(1 if label == classes - 1 else per_class):
      paths.append(w.image(f"{name}/img_{j:02d}.jpg"))
      labels.append(label)
  w.image(".ipynb_checkpoints/x.jpg")
  w.image(f"__MACOSX/{names[0]}/._img_00.jpg")
  w.junk(".DS_Store")
  w.junk(f"{names[0]}/.DS_Store")
  w.junk(f"{names[0]}/notes.txt", b"not an image")
  return FixtureRoot(root, {"splits": {"all": _split(paths, labels)}, "class_names": names})
