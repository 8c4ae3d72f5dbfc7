"""Class-disjoint retrieval benchmarks: CUB-200-2011, Cars196, Stanford Online Products,
In-shop Clothes, and any ``ROOT/CLASS/IMAGE.jpg`` folder.

The classes of ``test`` (or ``query`` / ``gallery``) are never trained on, as in
Oh Song et al. 2016 and Musgrave et al. 2020; see :mod:`metric_learning.data.protocols`
for each dataset's layout and split sizes.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from metric_learning.data import datasets
from metric_learning.data.files import ImageFiles
from metric_learning.data.protocols._common import _files
from metric_learning.data.protocols._common import _hidden
from metric_learning.data.protocols._common import _id_table
from metric_learning.data.protocols._common import _int
from metric_learning.data.protocols._common import _is_image
from metric_learning.data.protocols._common import _need_dir
from metric_learning.data.protocols._common import _need_file
from metric_learning.data.protocols._common import _read_table


def _class_halves(dataset: str, root: str, relative: Sequence[str], class_ids: Sequence[int],
                  class_names: Sequence[str], last_train: int) -> dict[str, ImageFiles]:
  """Class-disjoint halves: ids ``<= last_train`` are ``train``, the rest ``test``;
  label = class id - 1 in both, so ``class_names`` names every label."""
  ids = np.asarray(class_ids, np.int64)
  relative = np.asarray(relative, dtype=str)
  out = {}
  for split, mask in (("train", ids <= last_train), ("test", ids > last_train)):
    out[split] = _files(f"{dataset}/{split}", root, relative[mask], ids[mask] - 1,
                        class_names=class_names)
  return out


_CUB_LAYOUT = ("ROOT/images.txt, ROOT/image_class_labels.txt (ROOT/classes.txt optional) and "
               "ROOT/images/CLASS/IMAGE.jpg as extracted from CUB_200_2011.tgz "
               "(ROOT = CUB_200_2011/)")


def cub200(root: str) -> dict[str, ImageFiles]:
  """CUB-200-2011, class-disjoint: classes 1–100 ``train``, 101–200 ``test``.

  Reads ``images.txt`` (``<image_id> <path under images/>``) and
  ``image_class_labels.txt`` (``<image_id> <class_id>``); class names come
  from ``classes.txt`` (``<class_id> <name>``) when present, else from each
  image's folder. ``train_test_split.txt`` (the classification split) is not
  used. Images keep the order of ``images.txt``.

  Args:
    root: the extracted ``CUB_200_2011/`` folder.

  Returns:
    ``{"train", "test"}`` :class:`ImageFiles` with labels = class id - 1 and
    ``class_names`` naming all classes (200 for the real data).

  Example:
    >>> splits = cub200("/data/CUB_200_2011")  # doctest: +SKIP
    >>> len(splits["train"]), len(splits["test"])  # doctest: +SKIP
    (5864, 5924)
  """
  images_txt = os.path.join(root, "images.txt")
  labels_txt = os.path.join(root, "image_class_labels.txt")
  paths, _ = _id_table(images_txt, _CUB_LAYOUT, "path")
  classes, lines = _id_table(labels_txt, _CUB_LAYOUT, "class_id")
  missing = sorted(set(paths) - set(classes))
  if missing:
    raise ValueError(f"{labels_txt!r} has no class for image ids {missing[:5]} of "
                     f"{images_txt!r}.")
  ids = sorted(paths)
  class_ids = [_int(classes[i], labels_txt, lines[i], "the class id", minimum=1) for i in ids]
  names = {}
  for i, cid in zip(ids, class_ids):   # fallback: the folder, e.g. "001.Black_footed_Albatross"
    names.setdefault(cid, paths[i].replace("\\", "/").split("/")[0])
  classes_txt = os.path.join(root, "classes.txt")
  if os.path.isfile(classes_txt):
    listed, _ = _id_table(classes_txt, _CUB_LAYOUT, "name")
    names.update(listed)
  count = max(names, default=0)
  class_names = [names.get(c, str(c)) for c in range(1, count + 1)]
  return _class_halves("cub200", os.path.join(root, "images"), [paths[i] for i in ids],
                       class_ids, class_names, last_train=100)


_CARS_LAYOUT = ("ROOT/cars_annos.mat and ROOT/car_ims/IMAGE.jpg as extracted from car_ims.tgz "
                "and cars_annos.mat (Cars196)")


def _mat_value(value, path: str, where: str):
  """The scalar inside loadmat's nesting (``array([[1]])``, ``array(['a'])``, ...)."""
  while isinstance(value, np.ndarray):
    if value.size != 1:
      raise ValueError(f"{path!r}, {where}: expected one value; got an array of shape "
                       f"{value.shape}.")
    value = value.reshape(-1)[0]
  return value


def cars196(root: str) -> dict[str, ImageFiles]:
  """Cars196, class-disjoint: classes 1–98 ``train``, 99–196 ``test``.

  Reads the struct array ``annotations`` of ``cars_annos.mat`` (fields
  ``relative_im_path`` such as ``car_ims/000001.jpg`` and ``class`` in
  1..196; the bounding boxes and the ``test`` flag — the classification split
  — are not used) and its ``class_names``. Images keep the file's order.

  Args:
    root: the folder holding ``cars_annos.mat`` and ``car_ims/``.

  Returns:
    ``{"train", "test"}`` :class:`ImageFiles` with labels = class id - 1 and
    ``class_names`` naming all classes (196 for the real data).

  Example:
    >>> splits = cars196("/data/cars196")  # doctest: +SKIP
    >>> len(splits["train"]), len(splits["test"])  # doctest: +SKIP
    (8054, 8131)
  """
  from scipy import io  # pylint: disable=import-outside-toplevel
  path = _need_file(os.path.join(root, "cars_annos.mat"), _CARS_LAYOUT)
  try:
    mat = io.loadmat(path)
  except Exception as e:  # scipy raises several types for a corrupt file
    raise ValueError(f"{path!r} is not a readable MATLAB file: {e}") from e
  if "annotations" not in mat:
    raise ValueError(f"{path!r} has no 'annotations' struct array; it has "
                     f"{sorted(k for k in mat if not k.startswith('__'))}.")
  annotations = np.asarray(mat["annotations"]).reshape(-1)
  fields = annotations.dtype.names or ()
  if not {"relative_im_path", "class"} <= set(fields):
    raise ValueError(f"{path!r}: 'annotations' must have fields 'relative_im_path' and "
                     f"'class'; it has {list(fields)}.")
  relative, class_ids = [], []
  for k, record in enumerate(annotations, 1):
    relative.append(str(_mat_value(record["relative_im_path"], path, f"annotation {k}")))
    cid = _mat_value(record["class"], path, f"annotation {k}")
    if not float(cid).is_integer() or int(cid) < 1:
      raise ValueError(f"{path!r}, annotation {k}: class must be an integer >= 1; got {cid!r}.")
    class_ids.append(int(cid))
  names = [str(_mat_value(n, path, f"class_names[{i}]"))
           for i, n in enumerate(np.asarray(mat.get("class_names", [])).reshape(-1))]
  names += [str(c) for c in range(len(names) + 1, max(class_ids, default=0) + 1)]
  return _class_halves("cars196", root, relative, class_ids, names, last_train=98)


_SOP_LAYOUT = ("ROOT/Ebay_train.txt and ROOT/Ebay_test.txt (header 'image_id class_id "
               "super_class_id path') with ROOT/SUPERCLASS_final/IMAGE.JPG, as extracted from "
               "Stanford_Online_Products.zip (ROOT = Stanford_Online_Products/)")
_SOP_COLUMNS = ("image_id", "class_id", "super_class_id", "path")


def sop(root: str) -> dict[str, ImageFiles]:
  """Stanford Online Products: ``Ebay_train.txt`` is ``train``, ``Ebay_test.txt`` ``test``.

  Each file has the header ``image_id class_id super_class_id path`` and rows
  such as ``1 1 1 bicycle_final/111085122871_0.JPG``. Labels are the files'
  class ids - 1, not renumbered (``train`` products 1–11,318, ``test``
  11,319–22,634 in the real data), so the two splits never share a label.

  Args:
    root: the extracted ``Stanford_Online_Products/`` folder.

  Returns:
    ``{"train", "test"}`` :class:`ImageFiles` in file order, ``class_names`` None.

  Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for file, rows in (("Ebay_train.txt", ["1 1 1 bicycle_final/11_0.JPG",
    ...                                         "2 1 1 bicycle_final/11_1.JPG"]),
    ...                    ("Ebay_test.txt", ["1 2 2 chair_final/22_0.JPG"])):
    ...   with open(os.path.join(root, file), "w") as f:
    ...     _ = f.write("\\n".join(["image_id class_id super_class_id path"] + rows) + "\\n")
    >>> splits = sop(root)
    >>> splits["train"].labels.tolist(), splits["test"].labels.tolist()
    ([0, 0], [1])
    >>> os.path.relpath(splits["test"].paths[0], root)
    'chair_final/22_0.JPG'
  """
  out = {}
  for split, file in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
    path = os.path.join(root, file)
    rows = _read_table(path, _SOP_LAYOUT, _SOP_COLUMNS, header=True)
    labels = [_int(f[1], path, n, "class_id", minimum=1) - 1 for n, f in rows]
    out[split] = _files(f"sop/{split}", root, [f[3] for _, f in rows], labels)
  return out


_INSHOP_LAYOUT = ("ROOT/list_eval_partition.txt (or ROOT/Eval/list_eval_partition.txt: a count, "
                  "the header 'image_name item_id evaluation_status', then rows) and "
                  "ROOT/img/... as extracted from DeepFashion's In-shop Clothes Retrieval "
                  "Benchmark (img.zip)")
_INSHOP_COLUMNS = ("image_name", "item_id", "evaluation_status")
_ITEM_ID = re.compile(r"^id_(\d+)$")


def inshop(root: str) -> dict[str, ImageFiles]:
  """In-shop Clothes Retrieval: ``train``, ``query`` and ``gallery`` as the file says.

  ``list_eval_partition.txt`` holds the number of images on line 1 (checked),
  the header on line 2, then rows
  ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train`` with
  status ``train``, ``query`` or ``gallery``. Image paths are relative to
  ``root``. Query and gallery share their 3,985 items; train has 3,997 others.

  Args:
    root: the folder holding ``img/`` and ``list_eval_partition.txt`` (also
      found in ``Eval/`` as distributed).

  Returns:
    ``{"train", "query", "gallery"}`` :class:`ImageFiles` in file order with
    label = the item number (``id_00000002`` → 2), ``class_names`` None.

  Example:
    >>> splits = inshop("/data/inshop")  # doctest: +SKIP
    >>> [len(splits[s]) for s in ("train", "query", "gallery")]  # doctest: +SKIP
    [25882, 14218, 12612]
  """
  path = os.path.join(root, "list_eval_partition.txt")
  in_eval = os.path.join(root, "Eval", "list_eval_partition.txt")
  if not os.path.isfile(path) and os.path.isfile(in_eval):
    path = in_eval
  rows = _read_table(path, _INSHOP_LAYOUT, _INSHOP_COLUMNS, header=True, skip=1)
  with open(path, encoding="utf-8") as f:
    first = f.readline().strip()
  if _int(first, path, 1, "the image count", minimum=0) != len(rows):
    raise ValueError(f"{path!r}, line 1: announces {first} images but {len(rows)} rows follow.")
  parts = {"train": ([], []), "query": ([], []), "gallery": ([], [])}
  for number, (image, item, status) in rows:
    match = _ITEM_ID.match(item)
    if match is None:
      raise ValueError(f"{path!r}, line {number}: item_id must look like 'id_00000002'; "
                       f"got {item!r}.")
    if status not in parts:
      raise ValueError(f"{path!r}, line {number}: evaluation_status must be one of "
                       f"{sorted(parts)}; got {status!r}.")
    parts[status][0].append(image)
    parts[status][1].append(int(match.group(1)))
  return {split: _files(f"inshop/{split}", root, images, labels)
          for split, (images, labels) in parts.items()}


def image_folder(root: str) -> dict[str, ImageFiles]:
  """Any ``ROOT/CLASS/IMAGE.jpg`` tree as one split ``all``.

  Classes are the sorted sub-folders (label = position, ``class_names`` = the
  folder names); images are the files with an image suffix
  (``datasets.IMAGE_SUFFIXES``) in sorted order; hidden entries (``.`` or
  ``__`` prefixed: ``.DS_Store``, ``.ipynb_checkpoints/``, ``__MACOSX/``) are
  skipped.

  Args:
    root: the folder of class folders.

  Returns:
    ``{"all": ImageFiles}``.

  Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for file in ("b/1.jpg", "a/2.png", "a/1.jpg", "a/.DS_Store", ".cache/x.jpg"):
    ...   os.makedirs(os.path.dirname(os.path.join(root, file)), exist_ok=True)
    ...   open(os.path.join(root, file), "w").close()
    >>> split = image_folder(root)["all"]
    >>> [os.path.relpath(p, root) for p in split.paths], split.labels.tolist()
    (['a/1.jpg', 'a/2.png', 'b/1.jpg'], [0, 0, 1])
  """
  _need_dir(root, "ROOT/CLASS_NAME/IMAGE.jpg with one sub-folder per class")
  with os.scandir(root) as entries:
    classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
  relative, labels = [], []
  for label, name in enumerate(classes):
    with os.scandir(os.path.join(root, name)) as entries:
      files = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
    relative += [f"{name}/{file}" for file in files]
    labels += [label] * len(files)
  if not relative:
    raise ValueError(f"no images found under {root!r}; expected ROOT/CLASS_NAME/IMAGE.jpg "
                     f"({', '.join(datasets.IMAGE_SUFFIXES)}).")
  return {"all": _files(os.path.basename(os.path.normpath(root)), root, relative, labels,
                        class_names=classes)}
