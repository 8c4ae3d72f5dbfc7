"""The ``augment`` configuration of every experiment: :class:`Transform`.

One schema for both kinds of data (:mod:`metric_learning.data.sources`): image
files are decoded to ``uint8 [h, w, 3]`` and stay uint8 until they reach the
device (a quarter of the bytes of float32 through the pipeline and the
host-to-device copy; normalisation to the ImageNet mean and standard deviation
happens in the model); the ``float32 [h, w, c]`` arrays of an in-memory
:class:`~metric_learning.data.Dataset` go through the same operations in
float32, colour jitter aside (it needs RGB).
Every random choice draws from the ``np.random.Generator`` passed in, so an
image's augmentation is a function of that generator's seed alone
(:mod:`metric_learning.data.pipeline` seeds it with ``(seed, step, row)``).
The operations it is made of are in :mod:`metric_learning.data.image_ops`.

:class:`Transform` is the configuration surface: one frozen dataclass whose
fields are the ``augment`` settings of an experiment, with
:meth:`Transform.train` for training and :meth:`Transform.eval_views` for
(test-time augmented) evaluation. Files are read by
:func:`metric_learning.data.decode.decode` (re-exported here as
:func:`decode`), which :meth:`Transform.train_file` drives at a reduced JPEG
scale when its crop allows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from metric_learning.data.decode import _open
from metric_learning.data.decode import _read_rgb
from metric_learning.data.decode import decode as decode  # re-exported: transforms.decode

# The image operations :class:`Transform` is made of, re-exported under their old
# home (``transforms.resize`` ...); they live in :mod:`metric_learning.data.image_ops`.
from metric_learning.data.image_ops import _bilinear
from metric_learning.data.image_ops import _resize_extent
from metric_learning.data.image_ops import _resized_shape
from metric_learning.data.image_ops import center_crop as center_crop
from metric_learning.data.image_ops import color_jitter as color_jitter
from metric_learning.data.image_ops import five_crops as five_crops
from metric_learning.data.image_ops import random_erasing as random_erasing
from metric_learning.data.image_ops import random_resized_crop_box as random_resized_crop_box
from metric_learning.data.image_ops import resize as resize
from metric_learning.data.image_ops import shift as shift

TTA_MODES = ("none", "flip", "five_crop_flip")
_VIEWS = {"none": 1, "flip": 2, "five_crop_flip": 10}


def _size_field(name: str, value, *, allow_int: bool):
  """``value`` as a tuple (h, w) (or an int shorter side when allowed), else a ValueError."""
  if allow_int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value > 0:
      return int(value)
  elif (isinstance(value, (tuple, list)) and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                for v in value)):
    return (int(value[0]), int(value[1]))
  what = "None, a positive int (shorter side) or two positive ints (h, w)" if allow_int \
      else "two positive ints (h, w)"
  raise ValueError(f"Transform.{name} must be {what}; got {value!r}.")


def _range_field(name: str, value, lo: float, hi: float):
  if (isinstance(value, (tuple, list)) and len(value) == 2
      and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
      and lo < value[0] <= value[1] <= hi):
    return (float(value[0]), float(value[1]))
  raise ValueError(f"Transform.{name} must be two numbers {lo} < a <= b <= {hi}; "
                   f"got {value!r}.")


def _probability(name: str, value, hi: float = 1.0) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= hi:
    return float(value)
  raise ValueError(f"Transform.{name} must be a number in [0, {hi}]; got {value!r}.")


class _Crop(NamedTuple):
  """A training crop's geometry (drawn on the full-size image).

  The image is resized to each of ``resizes`` in turn, then ``box`` ``(top, left,
  h, w)`` of the last is resized to ``size`` (``resample``) or sliced out (it
  is ``size`` already).
  """
  resizes: tuple[tuple[int, int], ...]
  box: tuple[int, int, int, int]
  resample: bool
  size: tuple[int, int]

  def min_size(self, height: int, width: int) -> tuple[int, int]:
    """The fewest pixels (h, w) of the whole ``height × width`` image this crop reads.

    The first resize's shape; without one, the image must be large enough that
    ``box`` covers at least ``size`` (a crop of ``box_h`` rows resized to
    ``size_h`` needs ``ceil(height * size_h / box_h)`` rows in all).
    """
    if self.resizes:
      return self.resizes[0]
    _, _, h, w = self.box
    return -(-height * self.size[0] // h), -(-width * self.size[1] // w)


@dataclasses.dataclass(frozen=True)
class Transform:
  """Training augmentation and evaluation views of one image, its dtype in and out.

  Training (:meth:`train`): resize to ``resize`` (default: ``size``), then either
  a ``random_resized_crop`` to ``size`` or a random ``size`` crop (none when the
  two are equal), a random shift, colour jitter, horizontal flip, random
  erasing — the order of torchvision recipes. Evaluation (:meth:`eval_views`): ``"none"`` and
  ``"flip"`` resize to ``eval_resize`` (default: ``size``) and take the centre
  ``size`` crop (then its mirror image); ``"five_crop_flip"`` takes the four
  corner and the centre ``size`` crops of the image resized to ``eval_resize``
  (default: ``resize``), then their mirror images — 10 views (Hermans, Beyer,
  Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017).

  Every setting defaults to "off": ``Transform()`` returns its input unchanged.
  Images are ``uint8 [h, w, 3]`` (decoded files) or float ``[h, w, c]`` (arrays
  in memory); :meth:`train` and :meth:`eval_views` return the input's dtype.

  Attributes:
    size: ``(h, w)`` network input; non-square allowed, e.g. ``(256, 128)``.
      ``None``: each image's own size (arrays in memory all share one; image
      files need a size, their images differ).
    resize: ``None`` or the size to resize to before cropping: ``(h, w)`` or an
      int shorter side (aspect kept), e.g. ``(288, 144)`` for TriNet's random
      256×128 crops. Without ``random_resized_crop`` it must cover ``size``.
    random_resized_crop: ``None`` or ``(min_scale, max_scale)``: crop a random
      fraction of the area with aspect ratio in ``crop_ratio``, resized to
      ``size`` (torchvision ``RandomResizedCrop``, e.g. ``(0.08, 1.0)``).
    crop_ratio: ``(min, max)`` aspect ratio ``w / h`` of random resized crops.
    max_shift: a random translation by up to this many pixels each way, zero
      fill, after the crop (:func:`~metric_learning.data.image_ops.shift`;
      torchvision's ``RandomCrop(size, padding=max_shift)``).
    flip: horizontal flip with probability 0.5.
    erasing: random-erasing probability (Zhong et al. 2020; area 0.02–0.33,
      aspect 0.3–3.3, uniform noise fill, see :func:`random_erasing`).
    color_jitter: brightness / contrast / saturation jitter strength (0 = off);
      uint8 RGB images only.
    hue: hue jitter in turns, in [0, 0.5] (0 = off); a YIQ rotation, see
      :func:`color_jitter`; uint8 RGB images only.
    eval_resize: ``None``, ``(h, w)`` or an int shorter side: evaluation images
      are resized to it, then centre-cropped to ``size`` (e.g. 256 then 224).
    tta: test-time views: ``"none"`` (1), ``"flip"`` (2), ``"five_crop_flip"`` (10).
    draft: let :meth:`train_file` decode a JPEG at a reduced scale (1/2, 1/4 or
      1/8, see :func:`decode`) when its training crop needs at most that many
      pixels, e.g. a 256×256 JPEG for a 64×64 input: several times faster. The
      crop geometry and every random draw are the same as with ``draft=False``;
      the pixels are a slightly different downsampling (mean absolute
      difference about 1/255 on smooth images), never an upsampling the full
      decode would not do. ``False``: ``train_file(path, rng)`` equals
      ``train(decode(path), rng)`` bit for bit. Evaluation views always decode
      at full size. No effect on arrays in memory.

  Example:
    >>> t = Transform(size=(4, 2), resize=(6, 3), flip=True, tta="five_crop_flip")
    >>> image = np.arange(8 * 4 * 3, dtype=np.uint8).reshape(8, 4, 3)
    >>> t.train(image, np.random.default_rng(0)).shape, t.input_shape, t.num_views
    ((4, 2, 3), (4, 2, 3), 10)
    >>> t.eval_views(image).shape
    (10, 4, 2, 3)
  """
  size: tuple[int, int] | None = None
  resize: int | tuple[int, int] | None = None
  random_resized_crop: tuple[float, float] | None = None
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  max_shift: int = 0
  flip: bool = False
  erasing: float = 0.0
  color_jitter: float = 0.0
  hue: float = 0.0
  eval_resize: int | tuple[int, int] | None = None
  tta: str = "none"
  draft: bool = True

  def __post_init__(self):
    put = lambda name, value: object.__setattr__(self, name, value)
    if self.size is not None:
      put("size", _size_field("size", self.size, allow_int=False))
    if (isinstance(self.max_shift, bool) or not isinstance(self.max_shift, (int, np.integer))
        or self.max_shift < 0):
      raise ValueError(f"Transform.max_shift must be an int >= 0; got {self.max_shift!r}.")
    put("max_shift", int(self.max_shift))
    for name in ("resize", "eval_resize"):
      if getattr(self, name) is not None:
        put(name, _size_field(name, getattr(self, name), allow_int=True))
    if self.random_resized_crop is not None:
      put("random_resized_crop",
          _range_field("random_resized_crop", self.random_resized_crop, 0.0, 1.0))
    put("crop_ratio", _range_field("crop_ratio", self.crop_ratio, 0.0, math.inf))
    for name in ("flip", "draft"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise ValueError(f"Transform.{name} must be a bool; got {getattr(self, name)!r}.")
    put("erasing", _probability("erasing", self.erasing))
    put("color_jitter", _probability("color_jitter", self.color_jitter, hi=math.inf))
    put("hue", _probability("hue", self.hue, hi=0.5))
    if self.tta not in TTA_MODES:
      raise ValueError(f"Transform.tta must be one of {list(TTA_MODES)}; got {self.tta!r}.")
    if self.size is None:
      if self.tta == "five_crop_flip":
        raise ValueError("Transform.tta='five_crop_flip' needs Transform.size (the crops' size).")
      return
    if self.random_resized_crop is None and isinstance(self.resize, tuple) and (
        self.resize[0] < self.size[0] or self.resize[1] < self.size[1]):
      raise ValueError(f"Transform.resize {self.resize} must cover size {self.size} "
                       "(random crops of size are taken from it).")
    if isinstance(self.eval_resize, tuple) and (
        self.eval_resize[0] < self.size[0] or self.eval_resize[1] < self.size[1]):
      raise ValueError(f"Transform.eval_resize {self.eval_resize} must cover size "
                       f"{self.size} (the centre crop is taken from it).")
    if self.tta == "five_crop_flip" and self.eval_resize is None and self.resize is None:
      raise ValueError("Transform.tta='five_crop_flip' crops size from a larger image: set "
                       "Transform.eval_resize (or Transform.resize).")

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """``(h, w, 3)``, one network input from an image file (``size`` must be set)."""
    if self.size is None:
      raise ValueError("Transform.size is None: each output keeps its input's size; set "
                       "Transform.size for image files.")
    return (*self.size, 3)

  def output_size(self, height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` of :meth:`train` and :meth:`eval_views` for a ``height × width`` input."""
    return self.size if self.size is not None else (int(height), int(width))

  @property
  def changes_training(self) -> bool:
    """Whether :meth:`train` can return anything but its input (``size`` aside)."""
    return (self.resize is not None or self.random_resized_crop is not None
            or self.max_shift > 0 or self.flip or self.erasing > 0
            or self.color_jitter > 0 or self.hue > 0)

  @property
  def changes_evaluation(self) -> bool:
    """Whether :meth:`eval_views` can return anything but its input (``size`` aside)."""
    return self.eval_resize is not None or self.tta != "none"

  @property
  def num_views(self) -> int:
    """Views per image returned by :meth:`eval_views`."""
    return _VIEWS[self.tta]

  def _check_image(self, image: np.ndarray) -> None:
    if image.ndim != 3 or not (image.dtype == np.uint8
                               or np.issubdtype(image.dtype, np.floating)):
      raise ValueError(f"Transform expects a uint8 or float [h, w, c] image; got "
                       f"{image.dtype} {image.shape}.")
    if (self.color_jitter > 0 or self.hue > 0) and (image.dtype != np.uint8
                                                    or image.shape[-1] != 3):
      raise ValueError(f"Transform.color_jitter and Transform.hue need uint8 RGB images; "
                       f"got {image.dtype} {image.shape}.")

  def train(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One training augmentation of ``image``.

    Args:
      image: ``uint8 [h, w, 3]`` or float ``[h, w, c]`` (any size).
      rng: every random choice draws from it, so the same seed gives the same
        output.

    Returns:
      ``[*size, c]`` (``size``: ``image``'s own without one) in ``image``'s dtype.
    """
    self._check_image(image)
    crop = self._train_crop(*image.shape[:2], rng)
    return self._augment(image, crop, rng)

  def train_file(self, path: str, rng: np.random.Generator) -> np.ndarray:
    """One training augmentation of the image file at ``path``.

    The crop geometry is drawn from ``rng`` on the file's header size, then the
    file is decoded at the smallest scale that leaves the crop at least the
    resolution it is resized to (with ``draft``; see :func:`decode`), then the
    crop and the rest of :meth:`train` follow. ``rng`` makes the same draws with
    or without ``draft``; with ``draft=False`` the result is
    ``train(decode(path), rng)``.

    Args:
      path: an image file Pillow can read.
      rng: the generator of every random choice.

    Returns:
      ``uint8 [*size, 3]``.

    Raises:
      FileNotFoundError, OSError: as :func:`decode`.
    """
    path = str(path)
    with _open(path) as im:
      height, width = im.height, im.width
      crop = self._train_crop(height, width, rng)
      image, scale = _read_rgb(im, path, crop.min_size(height, width)
                               if self.draft else None)
    return self._augment(image, crop, rng, scale=scale, extent=(height / scale, width / scale))

  def _train_crop(self, height: int, width: int, rng: np.random.Generator) -> _Crop:
    """The geometry of a training crop of a ``height × width`` image, drawn from ``rng``."""
    size = self.output_size(height, width)
    resizes = []
    shape = (height, width)
    if self.resize is not None:
      shape = _resized_shape(height, width, self.resize)
      resizes.append(shape)
    if self.random_resized_crop is not None:
      box = random_resized_crop_box(rng, *shape, scale=self.random_resized_crop,
                                    ratio=self.crop_ratio)
      return _Crop(tuple(resizes), box, resample=True, size=size)
    if self.resize is None or shape[0] < size[0] or shape[1] < size[1]:
      shape = size
      resizes.append(shape)
    top = int(rng.integers(0, shape[0] - size[0] + 1))
    left = int(rng.integers(0, shape[1] - size[1] + 1))
    return _Crop(tuple(resizes), (top, left, *size), resample=False, size=size)

  def _augment(self, image: np.ndarray, crop: _Crop, rng: np.random.Generator, *,
               scale: int = 1, extent: tuple[float, float] | None = None) -> np.ndarray:
    """``crop`` of ``image``, then shift, jitter, flip and erasing.

    ``image`` is the full-size image decoded at scale ``1 / scale``: its top-left
    ``extent`` (h, w) pixels, ``(height / scale, width / scale)``, hold it.
    """
    if scale == 1:
      extent = image.shape[:2]
    for shape in crop.resizes:
      image, extent, scale = _resize_extent(image, shape, extent), shape, 1
    top, left, h, w = crop.box
    if crop.resample:
      box = (left, top, left + w, top + h)
      if scale != 1:
        box = tuple(v / scale for v in box)
      # Pillow crops and resizes in one pass (box=), reading only the window.
      image = _bilinear(image, crop.size, box=box)
    else:
      image = image[top:top + h, left:left + w]
    image = shift(image, rng, self.max_shift)
    if self.color_jitter > 0 or self.hue > 0:
      image = color_jitter(image, rng, strength=self.color_jitter, hue=self.hue)
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    image = random_erasing(image, rng, probability=self.erasing)
    return np.ascontiguousarray(image)

  def eval_views(self, image: np.ndarray) -> np.ndarray:
    """The deterministic evaluation views of ``image`` (see the class docstring).

    Args:
      image: ``uint8 [h, w, 3]`` or float ``[h, w, c]`` (any size).

    Returns:
      ``[num_views, *size, c]`` (``size``: ``image``'s own without one) in
      ``image``'s dtype.
    """
    self._check_image(image)
    size = self.output_size(*image.shape[:2])
    if self.tta == "five_crop_flip":
      base = resize(image, self.eval_resize if self.eval_resize is not None else self.resize)
      views = five_crops(base, size)
    else:
      base = resize(image, self.eval_resize if self.eval_resize is not None else size)
      views = center_crop(base, size)[None]
    if self.tta != "none":
      views = np.concatenate([views, views[:, :, ::-1]])
    return np.ascontiguousarray(views)
