"""Datasets of image files: an index of paths and labels, decoded per batch.

Benchmarks such as Stanford Online Products do not fit in memory once decoded
(120,053 images); an :class:`ImageFiles` holds only the file paths, the labels
and per-sample metadata, and :mod:`metric_learning.data.pipeline` decodes and
augments each batch when it is needed. It has the interface of the in-memory
:class:`metric_learning.data.Dataset` that evaluators and samplers use
(``labels``, ``cameras``, ``class_names``, ``subset``, ``label_names``), with
``paths`` in place of ``inputs``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class VerificationPairs:
  """Fixed verification pairs of a protocol (LFW's ``pairs.txt``).

  ``first``, ``second`` index the samples of the split; ``same`` says whether
  the two show the same identity; ``fold`` numbers the protocol's folds
  (0-based), each pair belonging to one.
  """
  first: np.ndarray
  second: np.ndarray
  same: np.ndarray
  fold: np.ndarray

  def __post_init__(self):
    n = len(self.first)
    for name in ("second", "same", "fold"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"VerificationPairs: {name} has {len(getattr(self, name))} entries "
                         f"but first has {n}.")
    object.__setattr__(self, "first", np.asarray(self.first, np.int64))
    object.__setattr__(self, "second", np.asarray(self.second, np.int64))
    object.__setattr__(self, "same", np.asarray(self.same, bool))
    object.__setattr__(self, "fold", np.asarray(self.fold, np.int64))

  def __len__(self) -> int:
    return len(self.first)


@dataclasses.dataclass(frozen=True)
class ImageFiles:
  """Image files ``paths [n]`` (absolute), labels ``[n]`` int32, optional metadata.

  Attributes:
    paths: ``[n]`` absolute file paths (a NumPy string array).
    labels: ``[n]`` int32 class or identity labels (re-ID junk images keep -1).
    cameras: ``[n]`` int32 camera ids for re-ID protocols, else ``None``.
    name: the split's name, used in messages.
    class_names: when known, label ``i`` is class ``class_names[i]``.
    pairs: the protocol's fixed verification pairs over this split (LFW), else
      ``None``.

  Example:
    >>> import numpy as np
    >>> files = ImageFiles(np.array(["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"]),
    ...                    np.array([0, 1, 0]), class_names=("cat", "dog"))
    >>> len(files), files.num_classes, files.subset(files.labels == 0).paths.tolist()
    (3, 2, ['/d/a.jpg', '/d/c.jpg'])
  """
  paths: np.ndarray
  labels: np.ndarray
  cameras: np.ndarray | None = None
  name: str = ""
  class_names: tuple[str, ...] | None = None
  pairs: VerificationPairs | None = None

  def __post_init__(self):
    paths = np.asarray(self.paths)
    if paths.ndim != 1 or (len(paths) and paths.dtype.kind not in "UO"):
      raise ValueError(f"{self.name or 'ImageFiles'}: paths must be a 1-D array of strings; "
                       f"got {paths.dtype} {paths.shape}.")
    object.__setattr__(self, "paths", paths.astype(str))
    object.__setattr__(self, "labels", np.asarray(self.labels, np.int32))
    if len(self.paths) != len(self.labels):
      raise ValueError(f"{self.name or 'ImageFiles'}: {len(self.paths)} paths but "
                       f"{len(self.labels)} labels.")
    if self.cameras is not None:
      object.__setattr__(self, "cameras", np.asarray(self.cameras, np.int32))
      if len(self.cameras) != len(self.labels):
        raise ValueError(f"{self.name or 'ImageFiles'}: {len(self.cameras)} cameras but "
                         f"{len(self.labels)} labels.")
    if self.class_names is not None:
      object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
      real = self.labels[self.labels >= 0]
      if len(real) and int(real.max()) >= len(self.class_names):
        raise ValueError(f"{self.name or 'ImageFiles'}: class_names has "
                         f"{len(self.class_names)} names but labels reach {real.max()}.")
    if self.pairs is not None and len(self.pairs) and (
        max(self.pairs.first.max(), self.pairs.second.max()) >= len(self.labels)
        or min(self.pairs.first.min(), self.pairs.second.min()) < 0):
      raise ValueError(f"{self.name or 'ImageFiles'}: pairs index samples outside "
                       f"[0, {len(self.labels)}).")

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, mask_or_index, name: str | None = None) -> "ImageFiles":
    """The selected samples (a bool mask or indices), with the same class names.

    Fixed verification pairs refer to sample positions, so they are dropped.
    """
    cams = None if self.cameras is None else self.cameras[mask_or_index]
    return ImageFiles(self.paths[mask_or_index], self.labels[mask_or_index], cams,
                      self.name if name is None else name, self.class_names)

  @property
  def num_classes(self) -> int:
    return len(np.unique(self.labels))

  def label_names(self) -> dict[int, str]:
    """``{label: class name}`` for the labels present, names as numbers when unknown."""
    present = np.unique(self.labels).tolist()
    if self.class_names is None:
      return {label: str(label) for label in present}
    return {label: self.class_names[label] if 0 <= label < len(self.class_names)
            else str(label) for label in present}
