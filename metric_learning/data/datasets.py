"""Datasets in memory: small arrays (digits, ``.npz``, MNIST-format files).

Every loader returns a :class:`Dataset` of float32 images ``[n, h, w, c]`` in
[0, 1] (or features ``[n, d]``) and integer labels. Image-file benchmarks are
indices of files instead (:class:`metric_learning.data.files.ImageFiles`, read
by :mod:`metric_learning.data.protocols`). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Inputs ``[n, ...]`` float32, labels ``[n]`` int32, optional cameras ``[n]``.

  ``class_names``, when known, names each label: label ``i`` is class
  ``class_names[i]``.
  """
  inputs: np.ndarray
  labels: np.ndarray
  cameras: np.ndarray | None = None
  name: str = ""
  class_names: tuple[str, ...] | None = None

  def __post_init__(self):
    if len(self.inputs) != len(self.labels):
      raise ValueError(f"{self.name or 'dataset'}: {len(self.inputs)} inputs but "
                       f"{len(self.labels)} labels.")
    if self.class_names is not None:
      object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
      if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(
          self.class_names):
        raise ValueError(f"{self.name or 'dataset'}: class_names has "
                         f"{len(self.class_names)} names but labels span "
                         f"[{self.labels.min()}, {self.labels.max()}].")

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, mask_or_index, name: str | None = None) -> "Dataset":
    """The selected samples (a bool mask or indices), with the same class names."""
    cams = None if self.cameras is None else self.cameras[mask_or_index]
    return Dataset(self.inputs[mask_or_index], self.labels[mask_or_index], cams,
                   self.name if name is None else name, self.class_names)

  def resized(self, size: tuple[int, int]) -> "Dataset":
    """Images ``[n, h, w, c]`` resized to ``size`` ``(h, w)``: bilinear, antialiased
    when shrinking (Pillow's, channel by channel in float32), e.g. 28×28
    Fashion-MNIST up to an ImageNet network's scale. Same samples and labels."""
    if self.inputs.ndim != 4:
      raise ValueError(f"{self.name or 'dataset'}: resize needs images [n, h, w, channels]; "
                       f"got inputs of shape {self.inputs.shape}.")
    h, w = size
    if (h, w) == self.inputs.shape[1:3]:
      return self
    from PIL import Image  # pylint: disable=import-outside-toplevel
    out = np.empty((len(self.inputs), h, w, self.inputs.shape[3]), np.float32)
    for i, image in enumerate(np.asarray(self.inputs, np.float32)):
      for c in range(image.shape[2]):
        out[i, :, :, c] = Image.fromarray(image[:, :, c], mode="F").resize((w, h),
                                                                          Image.BILINEAR)
    return dataclasses.replace(self, inputs=out)

  @property
  def num_classes(self) -> int:
    return len(np.unique(self.labels))

  def label_names(self) -> dict[int, str]:
    """``{label: class name}`` for the labels present, names as numbers when unknown.

    Returns:
      A dict from each distinct label (sorted) to its name.

    Example:
      >>> Dataset(np.zeros((3, 2)), np.array([2, 0, 2]), class_names=("a", "b", "c")
      ...         ).label_names()
      {0: 'a', 2: 'c'}
    """
    present = np.unique(self.labels).tolist()
    if self.class_names is None:
      return {label: str(label) for label in present}
    return {label: self.class_names[label] for label in present}


def save_label_names(path: str, mapping: Mapping[int, str]) -> None:
  """Writes ``{label: name}`` as a JSON object (keys as strings), creating the folder.

  Args:
    path: the ``.json`` file to write.
    mapping: each integer label's class name, e.g. ``dataset.label_names()``.
  """
  if not isinstance(mapping, Mapping):
    raise TypeError(f"mapping must be a dict {{label: name}}; got {type(mapping).__name__}.")
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({str(int(k)): str(v) for k, v in sorted(mapping.items())}, f, indent=1,
              ensure_ascii=False)


def load_label_names(path: str) -> dict[int, str]:
  """Reads a file written by :func:`save_label_names`.

  Args:
    path: a JSON object ``{"label": "name"}``.

  Returns:
    ``{label: name}`` with integer labels.
  """
  with open(path, encoding="utf-8") as f:
    raw = json.load(f)
  if not isinstance(raw, dict):
    raise ValueError(f"{path!r} must hold a JSON object {{label: name}}; got "
                     f"{type(raw).__name__}.")
  try:
    return {int(k): str(v) for k, v in raw.items()}
  except ValueError as e:
    raise ValueError(f"{path!r}: every key must be an integer label; got "
                     f"{sorted(raw)[:5]}.") from e


def digits() -> Dataset:
  """scikit-learn's bundled digits: 1797 images 8×8×1 in [0, 1], labels 0–9."""
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  d = datasets.load_digits()
  images = (d.images / 16.0).astype(np.float32)[..., None]
  return Dataset(images, d.target.astype(np.int32), name="digits",
                 class_names=tuple(str(i) for i in range(10)))


def class_disjoint_split(dataset: Dataset, *, seen_classes, test_fraction: float,
                         seed: int) -> dict[str, Dataset]:
  """Train / seen / unseen splits.

  ``train`` and ``seen`` are a stratified split of the seen classes
  (``test_fraction`` held out; 0: ``seen`` is empty); ``unseen`` is every
  sample of the other classes, never seen in training.
  """
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  seen_mask = np.isin(dataset.labels, np.asarray(seen_classes))
  if not seen_mask.any() or seen_mask.all():
    raise ValueError(f"seen_classes {list(seen_classes)} must select some but not all "
                     f"classes of {dataset.name}; its classes are "
                     f"{np.unique(dataset.labels).tolist()}.")
  seen_index = np.flatnonzero(seen_mask)
  if not 0 <= test_fraction < 1:
    raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}.")
  if test_fraction == 0:      # every sample of the seen classes trains; ``seen`` is empty
    train_i, test_i = seen_index, seen_index[:0]
  else:
    train_i, test_i = model_selection.train_test_split(
        seen_index, test_size=test_fraction, stratify=dataset.labels[seen_index],
        random_state=seed)
  return {"train": dataset.subset(np.sort(train_i), "train"),
          "seen": dataset.subset(np.sort(test_i), "seen"),
          "unseen": dataset.subset(~seen_mask, "unseen")}


def load_npz(path: str, *, inputs_key: str = "inputs", labels_key: str = "labels"
             ) -> Dataset:
  """An ``.npz`` with float (or uint8 image) inputs and integer labels.

  Loaded with ``allow_pickle=False``: a file holding pickled objects is rejected.
  uint8 inputs are scaled to [0, 1]; ``[n, h, w]`` images get a channel axis.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"npz dataset not found: {path!r}; expected a .npz file with "
                            f"arrays {inputs_key!r} [n, ...] and {labels_key!r} [n].")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in (inputs_key, labels_key) if k not in f.files]
      if missing:
        raise ValueError(f"{path!r} lacks arrays {missing}; it has {f.files}.")
      inputs, labels = f[inputs_key], f[labels_key]
  except ValueError as e:
    if "pickle" in str(e).lower():
      raise ValueError(f"{path!r} holds pickled objects, which are not loaded; store "
                       "plain numeric arrays.") from e
    raise
  if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
    raise ValueError(f"{path!r}: {labels_key!r} must be a 1-D integer array; got "
                     f"{labels.dtype} {labels.shape}.")
  if inputs.dtype == np.uint8:
    inputs = inputs.astype(np.float32) / 255.0
  elif not np.issubdtype(inputs.dtype, np.floating):
    raise ValueError(f"{path!r}: {inputs_key!r} must be float or uint8; got {inputs.dtype}.")
  if inputs.ndim == 3:
    inputs = inputs[..., None]
  return Dataset(inputs.astype(np.float32), labels.astype(np.int32),
                 name=os.path.basename(path))
