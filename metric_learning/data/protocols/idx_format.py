"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST) read into memory and split by class.

:func:`read_idx` reads one IDX file; :func:`idx` reads a dataset's four files
as ``train`` / ``seen`` / ``unseen`` :class:`~metric_learning.data.Dataset`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from typing import Sequence

import numpy as np

from metric_learning.data import datasets

# IDX type codes (third magic byte) and their big-endian dtypes.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
  """An IDX file (MNIST's format), gzipped or plain, as a native-endian array.

  The header is the magic number ``0x0000TTDD`` (``TT`` the type: 0x08 uint8,
  0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; ``DD`` the
  number of dimensions) and one big-endian uint32 per dimension; the data
  must fill the dimensions exactly. Gzip is recognised by its magic bytes.

  Args:
    path: e.g. ``train-images-idx3-ubyte.gz`` (magic 0x00000803) or
      ``t10k-labels-idx1-ubyte`` (0x00000801).

  Returns:
    The array, shaped as the header says.

  Example:
    >>> import os, struct, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...   _ = f.write(struct.pack(">II", 0x00000801, 3) + bytes([7, 2, 1]))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"IDX file not found: {path!r}.")
  with open(path, "rb") as f:
    zipped = f.read(2) == b"\x1f\x8b"
  try:
    with (gzip.open if zipped else open)(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"{path!r}: cannot decompress: {e}") from e
  if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_TYPES or not data[3]:
    raise ValueError(f"{path!r} is not an IDX file: magic {data[:4].hex() or 'missing'}; "
                     f"expected 0x0000TTDD with type TT in "
                     f"{[f'{t:02x}' for t in _IDX_TYPES]} and DD >= 1 dimensions.")
  ndim, dtype = data[3], np.dtype(_IDX_TYPES[data[2]])
  start = 4 + 4 * ndim
  if len(data) < start:
    raise ValueError(f"{path!r}: the header announces {ndim} dimensions but the file ends "
                     f"after {len(data)} bytes.")
  shape = struct.unpack(f">{ndim}I", data[4:start])
  if len(data) - start != math.prod(shape) * dtype.itemsize:
    raise ValueError(f"{path!r}: the header announces shape {shape} of {dtype.name} "
                     f"({math.prod(shape) * dtype.itemsize} bytes) but "
                     f"{len(data) - start} bytes follow.")
  return np.frombuffer(data, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(root: str, prefix: str, kind: str, rank: int) -> str:
  names = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
  candidates = [os.path.join(root, n + z) for n in names for z in ("", ".gz")]
  found = next((c for c in candidates if os.path.isfile(c)), None)
  if found is None:
    raise FileNotFoundError(f"{candidates[1]!r} not found (nor {candidates[0]!r}); expected "
                            f"ROOT/{prefix}-images-idx3-ubyte[.gz] and "
                            f"ROOT/{prefix}-labels-idx1-ubyte[.gz] as downloaded for MNIST, "
                            "Fashion-MNIST or KMNIST.")
  return found


def _idx_samples(root: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
  images_path = _idx_file(root, prefix, "images", 3)
  labels_path = _idx_file(root, prefix, "labels", 1)
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(f"{images_path!r}: expected uint8 images [n, h, w] (magic 0x00000803); "
                     f"got {images.dtype} {images.shape}.")
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(f"{labels_path!r}: expected uint8 labels [n] (magic 0x00000801); got "
                     f"{labels.dtype} {labels.shape}.")
  if len(images) != len(labels):
    raise ValueError(f"{images_path!r} holds {len(images)} images but {labels_path!r} "
                     f"{len(labels)} labels.")
  return images, labels.astype(np.int32)


def idx(root: str, *, prefix_train: str = "train", prefix_test: str = "t10k",
        seen_classes: Sequence[int] | None = None,
        unseen_from: str = "test",
        classes: Sequence[int] | None = None) -> dict[str, datasets.Dataset]:
  """MNIST-format IDX files in memory, split by class: ``train`` / ``seen`` / ``unseen``.

  Reads ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte``
  (gzipped ``.gz`` or plain) for both prefixes. ``train`` is the training
  file's samples of ``seen_classes`` and ``seen`` the test file's samples of
  those classes (the official test split is the held-out set). ``unseen`` is
  every other class: the test file's samples only (``unseen_from="test"``;
  the training file's samples of those classes are not used) or the samples
  of both files, training file first (``unseen_from="all"``; then every image
  of the dataset is in a split — all 70,000 of MNIST or Fashion-MNIST). No
  model ever trains on an unseen class, so its training-file images are as
  unseen as its test-file images.

  Args:
    root: the folder holding the four files.
    prefix_train: the training files' prefix.
    prefix_test: the test files' prefix.
    seen_classes: the classes trained on; default the first half of the
      sorted training labels (0–4 for MNIST).
    unseen_from: ``"test"`` or ``"all"``: which files the ``unseen`` split
      takes its samples from.
    classes: keep only these classes of both files (default all). A
      validation split for choosing a recipe without its unseen classes:
      ``classes`` = the training classes, ``seen_classes`` = some of them; the
      others stand in for the unseen classes.

  Returns:
    ``{"train", "seen", "unseen"}`` :class:`~metric_learning.data.Dataset` of
    float32 images ``[n, h, w, 1]`` in [0, 1] and int32 labels,
    ``class_names`` ``("0", "1", ...)``.

  Example:
    >>> splits = idx("/data/mnist")  # doctest: +SKIP
    >>> splits["train"].inputs.shape  # doctest: +SKIP
    (30596, 28, 28, 1)
  """
  if unseen_from not in ("test", "all"):
    raise ValueError(f"unseen_from must be 'test' or 'all'; got {unseen_from!r}.")
  train_x, train_y = _idx_samples(root, prefix_train)
  test_x, test_y = _idx_samples(root, prefix_test)
  if classes is not None:
    kept = np.asarray(list(classes), np.int32)
    if not np.isin(kept, train_y).all():
      raise ValueError(f"classes {kept.tolist()} must be classes of the training file "
                       f"{np.unique(train_y).tolist()} of {root!r}.")
    in_train, in_test = np.isin(train_y, kept), np.isin(test_y, kept)
    train_x, train_y, test_x, test_y = (train_x[in_train], train_y[in_train],
                                        test_x[in_test], test_y[in_test])
  present = np.unique(train_y)      # the training file's classes (after ``classes``)
  if seen_classes is None:
    seen_classes = present[:len(present) // 2]
  seen = np.asarray(list(seen_classes), np.int32)
  if not np.isin(seen, present).all() or len(np.unique(seen)) in (0, len(present)):
    raise ValueError(f"seen_classes {list(seen.tolist())} must be some but not all of the "
                     f"classes {present.tolist()} of {root!r}.")
  count = int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
  names = tuple(str(c) for c in range(count))

  def dataset(x, y, mask, name):
    return datasets.Dataset(x[mask].astype(np.float32)[..., None] / 255.0, y[mask],
                            name=name, class_names=names)

  if unseen_from == "all":
    unseen = dataset(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]),
                     ~np.isin(np.concatenate([train_y, test_y]), seen), "unseen")
  else:
    unseen = dataset(test_x, test_y, ~np.isin(test_y, seen), "unseen")
  return {"train": dataset(train_x, train_y, np.isin(train_y, seen), "train"),
          "seen": dataset(test_x, test_y, np.isin(test_y, seen), "seen"),
          "unseen": unseen}
