"""Datasets by name: one table of functions returning named splits.

Each entry takes only its own keyword arguments and returns
``{split_name: split}``: ``train`` plus the evaluation splits — ``seen``
(held-out samples of the training classes) and ``unseen`` (classes never
trained on) for the small class-disjoint sets, ``test`` for the published
class-disjoint benchmarks (CUB-200-2011, Cars196, Stanford Online Products),
``query`` and ``gallery`` for retrieval and re-identification, and ``test``
with fixed pairs for LFW. Small datasets are arrays in memory
(:class:`~metric_learning.data.Dataset`); image datasets (:data:`STREAMED`) are
indices of files (:class:`~metric_learning.data.files.ImageFiles`) decoded per
batch.

Every image dataset also takes ``skip_bad_files`` (default ``False``): its files
are checked when it is built, from their headers
(:func:`~metric_learning.data.files.check_images`: missing, empty, not an
image, truncated, over Pillow's pixel limit). Bad files fail the build in one
line naming them, or with ``skip_bad_files=True`` are left out of every split
with one warning; :func:`skipped_files` counts them.

Example:
  >>> from metric_learning.data import registry
  >>> splits = registry.create("digits")
  >>> sorted(splits), splits["train"].inputs.shape[1:]
  (['seen', 'train', 'unseen'], (8, 8, 1))
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Sequence

import numpy as np
from absl import logging

from metric_learning import registry
from metric_learning.data import datasets
from metric_learning.data import files
from metric_learning.data import protocols


def _split(full: datasets.Dataset, seen_classes, test_fraction: float, split_seed: int):
  if seen_classes is None:      # the first half of the classes, in sorted order
    classes = np.unique(full.labels)
    seen_classes = classes[:len(classes) // 2].tolist()
  return datasets.class_disjoint_split(full, seen_classes=tuple(seen_classes),
                                       test_fraction=test_fraction, seed=split_seed)


def digits(*, seen_classes: Sequence[int] | None = (0, 1, 2, 3, 4), test_fraction: float = 0.3,
           split_seed: int = 0) -> dict[str, datasets.Dataset]:
  """scikit-learn's bundled digits (8×8): ``seen_classes`` split into train / seen
  (``test_fraction`` held out, stratified), the other classes unseen."""
  return _split(datasets.digits(), seen_classes, test_fraction, split_seed)


def npz(*, path: str = "", seen_classes: Sequence[int] | None = None,
        test_fraction: float = 0.3, split_seed: int = 0, inputs_key: str = "inputs",
        labels_key: str = "labels") -> dict[str, datasets.Dataset]:
  """An ``.npz`` of ``inputs`` and integer ``labels``, split like :func:`digits`
  (default seen classes: the first half of the sorted labels)."""
  full = datasets.load_npz(path, inputs_key=inputs_key, labels_key=labels_key)
  return _split(full, seen_classes, test_fraction, split_seed)


def _root(dataset: str, path: str) -> str:
  if not isinstance(path, str) or not path:
    raise ValueError(f"data {dataset!r} needs path=, the folder the dataset was extracted "
                     f"to (--config.data.path=...); got {path!r}.")
  return path


def image_folder(*, path: str = "", seen_classes: Sequence[int] | None = None,
                 test_fraction: float = 0.2, split_seed: int = 0
                 ) -> dict[str, files.ImageFiles]:
  """One sub-folder per class (image files, decoded per batch), split like
  :func:`digits` (labels number the sorted class folders)."""
  full = protocols.image_folder(_root("image_folder", path))["all"]
  return _split(full, seen_classes, test_fraction, split_seed)


def cub200(*, path: str = "") -> dict[str, files.ImageFiles]:
  """CUB-200-2011: classes 1–100 ``train``, 101–200 ``test`` (:func:`protocols.cub200`)."""
  return protocols.cub200(_root("cub200", path))


def cars196(*, path: str = "") -> dict[str, files.ImageFiles]:
  """Cars196: classes 1–98 ``train``, 99–196 ``test`` (:func:`protocols.cars196`)."""
  return protocols.cars196(_root("cars196", path))


def sop(*, path: str = "") -> dict[str, files.ImageFiles]:
  """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` (:func:`protocols.sop`)."""
  return protocols.sop(_root("sop", path))


def inshop(*, path: str = "") -> dict[str, files.ImageFiles]:
  """In-shop Clothes: ``train`` / ``query`` / ``gallery`` (:func:`protocols.inshop`)."""
  return protocols.inshop(_root("inshop", path))


def market1501(*, path: str = "") -> dict[str, files.ImageFiles]:
  """Market-1501: ``train`` / ``query`` / ``gallery`` with cameras
  (:func:`protocols.market1501`)."""
  return protocols.market1501(_root("market1501", path))


def dukemtmc(*, path: str = "") -> dict[str, files.ImageFiles]:
  """DukeMTMC-reID: ``train`` / ``query`` / ``gallery`` (:func:`protocols.dukemtmc`)."""
  return protocols.dukemtmc(_root("dukemtmc", path))


def msmt17(*, path: str = "", use_val: bool = True) -> dict[str, files.ImageFiles]:
  """MSMT17: ``train`` (+ ``list_val.txt`` when ``use_val``) / ``query`` / ``gallery``
  (:func:`protocols.msmt17`)."""
  return protocols.msmt17(_root("msmt17", path), use_val=use_val)


def lfw(*, path: str = "", train_path: str = "") -> dict[str, files.ImageFiles]:
  """LFW's ``pairs.txt`` as split ``test`` (10 folds, :func:`protocols.lfw`), trained
  on an identity folder at ``train_path`` (one sub-folder per person, e.g.
  CASIA-WebFace) as split ``train``; the two must not share identities."""
  splits = protocols.lfw(_root("lfw", path))
  if not isinstance(train_path, str) or not train_path:
    raise ValueError("data 'lfw' needs train_path=, a folder with one sub-folder of face "
                     "images per training identity (LFW itself is only evaluated on); got "
                     f"{train_path!r}.")
  splits["train"] = dataclasses.replace(protocols.image_folder(train_path)["all"],
                                        name="train")
  return splits


def idx(*, path: str = "", seen_classes: Sequence[int] | None = None,
        prefix_train: str = "train", prefix_test: str = "t10k", unseen_from: str = "test",
        classes: Sequence[int] | None = None) -> dict[str, datasets.Dataset]:
  """MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), in memory: ``train`` /
  ``seen`` / ``unseen`` by class (:func:`protocols.idx`; ``unseen_from="all"`` puts
  both files' images of the unseen classes in ``unseen``; ``classes`` keeps only
  those classes, for a validation split among the training classes)."""
  return protocols.idx(_root("idx", path), seen_classes=seen_classes,
                       prefix_train=prefix_train, prefix_test=prefix_test,
                       unseen_from=unseen_from, classes=classes)


# ``streamed``: image files, decoded and augmented per batch by
# :mod:`metric_learning.data.pipeline` (``config.augment`` holds a
# :class:`metric_learning.data.transforms.Transform`; every streamed dataset also
# takes ``skip_bad_files``); the others are arrays in memory.
DATASETS = registry.Registry("dataset", field="data name")
# In-memory datasets also take ``resize`` (see :func:`create`).
for _name, _loader in (("digits", digits), ("npz", npz), ("idx", idx)):
  DATASETS.register(_name, _loader, defaults={"resize": None})
for _name, _loader in (("image_folder", image_folder), ("cub200", cub200),
                       ("cars196", cars196), ("sop", sop), ("inshop", inshop),
                       ("market1501", market1501), ("dukemtmc", dukemtmc),
                       ("msmt17", msmt17), ("lfw", lfw)):
  DATASETS.register(_name, _loader, streamed=True, defaults={"skip_bad_files": False})

# The names of the streamed datasets (trait ``streamed``).
STREAMED = frozenset(DATASETS.names(streamed=True))


def arguments(name: str) -> dict[str, Any]:
  """The settings dataset ``name`` accepts, with their defaults.

  Image datasets (trait ``streamed``) also take ``skip_bad_files``, in-memory
  ones ``resize`` (see :func:`create`).
  """
  return DATASETS.arguments(name)


def create(name: str, **settings) -> dict[str, datasets.Dataset]:
  """The named splits of dataset ``name``; unknown settings fail naming them.

  The files of an image dataset (:data:`STREAMED`) are checked here, from their
  headers (:func:`~metric_learning.data.files.check_images`), so that a file
  that cannot be decoded fails now rather than in a decoding worker after
  training.

  Args:
    name: a key of :data:`DATASETS`.
    **settings: the dataset's settings (:func:`arguments`); for an image
      dataset also ``skip_bad_files``: ``False`` (default) refuses a dataset
      with bad files, ``True`` leaves them out of every split (with the
      verification pairs that use them), logs one warning and records them in
      each split's ``left_out`` (:func:`skipped_files` counts them); for an
      in-memory dataset also ``resize``: ``None`` (default), or ``(h, w)`` / an
      int ``s`` for ``(s, s)``: every split's images resized to it
      (:meth:`~metric_learning.data.Dataset.resized`).

  Returns:
    ``{split_name: split}``.

  Raises:
    ValueError: an unknown setting, a bad value, or (without
      ``skip_bad_files``) image files that cannot be decoded: one line giving
      their number and the first few paths with the reasons.
  """
  DATASETS.check_settings(name, settings, field="data")
  if name not in STREAMED:
    size = _resize_setting(settings.pop("resize", None))
    splits = DATASETS[name](**settings)
    return splits if size is None else {k: v.resized(size) for k, v in splits.items()}
  skip = settings.pop("skip_bad_files", False)
  if not isinstance(skip, bool):
    raise ValueError(f"data.skip_bad_files must be True or False; got {skip!r}.")
  return _without_bad_files(DATASETS[name](**settings), name, skip=skip)


def _resize_setting(size) -> tuple[int, int] | None:
  """``data.resize`` as ``(h, w)`` (None: no resize); a ValueError names the field."""
  if size is None:
    return None
  pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(
      size, (tuple, list)) else ()
  if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                               for v in pair):
    raise ValueError(f"data.resize must be None, a positive int or (height, width); "
                     f"got {size!r}.")
  return pair


def skipped_files(splits: dict[str, Any]) -> int:
  """How many distinct image files :func:`create` left out of ``splits`` (``skip_bad_files``).

  0 for in-memory datasets and for image datasets without bad files.
  """
  return len({path for split in splits.values() for path in getattr(split, "left_out", ())})


_LISTED = 5       # bad files named in the one-line message


def _without_bad_files(splits: dict[str, Any], name: str, *, skip: bool) -> dict[str, Any]:
  """``splits`` after checking their image files: refused, or with the bad ones left out."""
  image_splits = {k: v for k, v in splits.items() if isinstance(v, files.ImageFiles)}
  paths = list(dict.fromkeys(p for split in image_splits.values() for p in split.paths))
  bad = files.check_images(paths)
  if not bad:
    return splits
  listed = ", ".join(f"{path!r} ({why})" for path, why in bad[:_LISTED])
  if len(bad) > _LISTED:
    listed += f" and {len(bad) - _LISTED} more"
  if not skip:
    raise ValueError(f"{len(bad)} of {len(paths)} image files of {name!r} cannot be decoded: "
                     f"{listed}; set data.skip_bad_files=True to leave them out.")
  bad_paths = [path for path, _ in bad]
  out = dict(splits)
  per_split, pairs = [], 0
  for key, split in image_splits.items():
    out[key] = split.leave_out(bad_paths)
    if len(out[key]) != len(split):
      per_split.append(f"{len(split) - len(out[key])} from {key!r}")
    if split.pairs is not None:
      pairs += len(split.pairs) - len(out[key].pairs)
  dropped_pairs = f" and {pairs} verification pairs using them" if pairs else ""
  logging.warning("data %r: left out %d image file%s that cannot be decoded (%s)%s "
                  "(skip_bad_files=True): %s", name, len(bad), "s" if len(bad) > 1 else "",
                  ", ".join(per_split), dropped_pairs, listed)
  return out
