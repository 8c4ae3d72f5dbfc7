"""Datasets by name: one table of functions returning named splits.

Each entry takes only its own keyword arguments and returns
``{split_name: Dataset}``: ``train`` plus the evaluation splits — ``seen``
(held-out samples of the training classes) and ``unseen`` (classes never
trained on) for class-disjoint protocols, ``query`` and ``gallery`` for
re-identification.

Example:
  >>> from metric_learning.data import registry
  >>> splits = registry.create("digits")
  >>> sorted(splits), splits["train"].inputs.shape[1:]
  (['seen', 'train', 'unseen'], (8, 8, 1))
"""

from __future__ import annotations

import inspect
from typing import Any
from typing import Callable
from typing import Sequence

import numpy as np

from metric_learning import _validation
from metric_learning.data import datasets


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


def image_folder(*, path: str = "", image_size: int = 64,
                 seen_classes: Sequence[int] | None = None, test_fraction: float = 0.2,
                 split_seed: int = 0) -> dict[str, datasets.Dataset]:
  """One sub-folder per class, split like :func:`digits` (labels number the
  sorted class folders)."""
  full = datasets.image_folder(path, image_size=image_size)
  return _split(full, seen_classes, test_fraction, split_seed)


def market1501(*, path: str = "", image_size: int = 64) -> dict[str, datasets.Dataset]:
  """Market-1501's train / query / gallery folders (re-ID protocol)."""
  return {split: datasets.market1501(path, split, image_size=image_size)
          for split in ("train", "query", "gallery")}


DATASETS: dict[str, Callable[..., dict[str, datasets.Dataset]]] = {
    "digits": digits,
    "npz": npz,
    "image_folder": image_folder,
    "market1501": market1501,
}


def _check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f"data name must be one of {sorted(DATASETS)}; got {name!r}.")


def arguments(name: str) -> dict[str, Any]:
  """The settings dataset ``name`` accepts, with their defaults."""
  _check_name(name)
  return {p.name: p.default for p in inspect.signature(DATASETS[name]).parameters.values()}


def create(name: str, **settings) -> dict[str, datasets.Dataset]:
  """The named splits of dataset ``name``; unknown settings fail naming them."""
  _validation.known_settings(settings, arguments(name), field="data", owner=repr(name))
  return DATASETS[name](**settings)
