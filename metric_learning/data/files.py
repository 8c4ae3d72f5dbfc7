"""Datasets of image files: an index of paths and labels, decoded per batch.

Benchmarks such as Stanford Online Products do not fit in memory once decoded
(120,053 images); an :class:`ImageFiles` holds only the file paths, the labels
and per-sample metadata, and :mod:`metric_learning.data.pipeline` decodes and
augments each batch when it is needed. It has the interface of the in-memory
:class:`metric_learning.data.Dataset` that evaluators and samplers use
(``labels``, ``cameras``, ``class_names``, ``subset``, ``label_names``), with
``paths`` in place of ``inputs``.

:func:`check_images` reads only the headers of the files, so a dataset can be
checked when it is built: a missing, empty, truncated or oversized file (one
over Pillow's decompression-bomb limit) is reported before training instead of
failing a decoding worker at the final evaluation.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import stat
import warnings
from typing import Sequence

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
    left_out: paths left out of this split because they cannot be read
      (:meth:`leave_out`, the data setting ``skip_bad_files``).

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
  left_out: tuple[str, ...] = ()

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
    object.__setattr__(self, "left_out", tuple(str(p) for p in self.left_out))

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, mask_or_index, name: str | None = None) -> "ImageFiles":
    """The selected samples (a bool mask or indices), with the same class names.

    Fixed verification pairs refer to sample positions, so they are dropped
    (:meth:`leave_out` keeps them); ``left_out`` is kept.
    """
    cams = None if self.cameras is None else self.cameras[mask_or_index]
    return ImageFiles(self.paths[mask_or_index], self.labels[mask_or_index], cams,
                      self.name if name is None else name, self.class_names,
                      left_out=self.left_out)

  def leave_out(self, paths: Sequence[str]) -> "ImageFiles":
    """This split without the samples whose path is in ``paths``.

    Verification pairs that use a removed sample are removed; the others are
    re-indexed. The removed paths are added to ``left_out``.

    Example:
      >>> import numpy as np
      >>> files = ImageFiles(np.array(["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"]), [0, 0, 1],
      ...                    pairs=VerificationPairs([0, 1], [1, 2], [True, False], [0, 1]))
      >>> kept = files.leave_out(["/d/a.jpg"])
      >>> kept.paths.tolist(), kept.pairs.first.tolist(), kept.pairs.second.tolist(), kept.left_out
      (['/d/b.jpg', '/d/c.jpg'], [0], [1], ('/d/a.jpg',))
    """
    drop = np.isin(self.paths, np.asarray(list(paths), dtype=str))
    if not drop.any():
      return self
    keep = ~drop
    kept = self.subset(keep)
    pairs = self.pairs
    if pairs is not None:
      position = np.cumsum(keep) - 1             # old sample index -> new one
      both = keep[pairs.first] & keep[pairs.second]
      pairs = VerificationPairs(position[pairs.first[both]], position[pairs.second[both]],
                                pairs.same[both], pairs.fold[both])
    return dataclasses.replace(kept, pairs=pairs,
                               left_out=self.left_out + tuple(self.paths[drop].tolist()))

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


# Pillow's DecompressionBombError / Warning message: "Image size (N pixels) exceeds ...".
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# The bytes an intact file of the format ends with, looked for in its last _TAIL bytes.
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL = 4096


def check_images(paths: Sequence[str] | ImageFiles, *, max_pixels: int | None = None,
                 threads: int = 8) -> list[tuple[str, str]]:
  """The image files that cannot be decoded, with the reason, read from their headers.

  Each file is checked without decoding its pixels: it must exist and be a
  non-empty regular file that Pillow identifies (``PIL.Image.open`` reads the
  header), of at most ``max_pixels`` pixels (width × height). A JPEG or PNG
  must also hold its end marker (JPEG's EOI, PNG's ``IEND``) in its last 4 KiB;
  a file that does not (a truncated file, or one with data appended) is
  decoded to tell which. Corruption inside the compressed data of a complete
  file is not detected; decoding it fails later naming the file.

  Pillow's decompression-bomb guard is set aside while reading the sizes (the
  limit is ``max_pixels``), without changing ``PIL.Image.MAX_IMAGE_PIXELS``;
  images over twice that global limit, which Pillow refuses to open, are always
  reported.

  Args:
    paths: the files, or an :class:`ImageFiles` (its ``paths``); each distinct
      path is checked once.
    max_pixels: the largest ``width * height`` accepted; ``None``:
      ``PIL.Image.MAX_IMAGE_PIXELS`` (no limit when that is ``None``).
    threads: files checked concurrently (helps on network file systems).

  Returns:
    ``[(path, reason)]`` for the files that cannot be used, in the order of
    ``paths``; empty when every file is fine.

  Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> Image.new("RGB", (40, 30)).save(os.path.join(root, "ok.png"))
    >>> open(os.path.join(root, "empty.png"), "wb").close()
    >>> problems = check_images([os.path.join(root, n) for n in ("ok.png", "empty.png")])
    >>> [(os.path.basename(p), why) for p, why in problems]
    [('empty.png', 'empty file')]
    >>> [why for _, why in check_images([os.path.join(root, "ok.png")], max_pixels=1000)]
    ['40x30 = 1,200 pixels, over the limit of 1,000']
  """
  from PIL import Image   # Pillow is needed only here: ImageFiles is a plain index

  if max_pixels is not None and (not isinstance(max_pixels, int) or isinstance(max_pixels, bool)
                                 or max_pixels < 1):
    raise ValueError(f"max_pixels must be None or an int >= 1; got {max_pixels!r}.")
  if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
    raise ValueError(f"threads must be an int >= 1; got {threads!r}.")
  paths = paths.paths if isinstance(paths, ImageFiles) else paths
  unique = list(dict.fromkeys(str(p) for p in paths))
  limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
  problem = lambda path: _image_problem(path, limit)
  # The decompression-bomb warning (between 1x and 2x Pillow's limit) is silenced
  # for the check's duration; the limit here is ``limit``. Where a warnings filter
  # turns it into an error, _image_problem reports it like the 2x error.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    if threads > 1 and len(unique) > 1:
      with concurrent.futures.ThreadPoolExecutor(min(threads, len(unique))) as pool:
        reasons = list(pool.map(problem, unique))
    else:
      reasons = [problem(p) for p in unique]
  return [(p, why) for p, why in zip(unique, reasons) if why is not None]


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).split()) or type(error).__name__


def _image_problem(path: str, limit: int | None) -> str | None:
  """Why the image file ``path`` cannot be decoded, else ``None`` (see :func:`check_images`)."""
  from PIL import Image

  try:
    info = os.stat(path)
  except FileNotFoundError:
    return "missing"
  except OSError as e:
    return f"unreadable ({_one_line(e)})"
  if not stat.S_ISREG(info.st_mode):
    return "not a regular file"
  if info.st_size == 0:
    return "empty file"
  try:
    with open(path, "rb") as f:
      try:
        im = Image.open(f)                       # reads the header only
      except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = _BOMB_PIXELS.search(str(e))
        pixels = f"{int(found[1]):,} pixels" if found else "too many pixels"
        return (f"{pixels}, over Pillow's decompression-bomb limit "
                f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,})")
      except Exception:                          # any failure: not an image
        return "not an image Pillow can read"
      with im:
        width, height = im.size
        if limit is not None and width * height > limit:
          return f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,}"
        marker = _END_MARKERS.get(im.format)
        if marker is None:
          return None
        f.seek(max(0, info.st_size - _TAIL))
        if marker in f.read():
          return None
  except OSError as e:                           # e.g. permission denied
    return f"unreadable ({_one_line(e)})"
  # No end marker near the end: truncated, or data appended after it. Decode to tell.
  try:
    with Image.open(path) as im:
      im.load()
  except Exception as e:
    return f"truncated or corrupt ({_one_line(e)})"
  return None
