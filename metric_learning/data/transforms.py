"""Per-image augmentation in NumPy / Pillow, uint8 in and out.

Images stay ``uint8 [h, w, 3]`` until they reach the device (a quarter of the
bytes of float32 through the pipeline and the host-to-device copy);
normalisation to the ImageNet mean and standard deviation happens in the model.
Every random choice draws from the ``np.random.Generator`` passed in, so an
image's augmentation is a function of that generator's seed alone
(:mod:`metric_learning.data.pipeline` seeds it with ``(seed, step, row)``).

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
from PIL import Image

from metric_learning.data.decode import _open
from metric_learning.data.decode import _read_rgb
from metric_learning.data.decode import decode as decode  # re-exported: transforms.decode

TTA_MODES = ("none", "flip", "five_crop_flip")
_VIEWS = {"none": 1, "flip": 2, "five_crop_flip": 10}
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_GRAY = np.array([0.2989, 0.587, 0.114], np.float32)


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


def resize(image: np.ndarray, size) -> np.ndarray:
  """Bilinear resize (antialiased, as Pillow and torchvision on PIL images).

  Args:
    image: ``uint8 [h, w, 3]``.
    size: ``(h, w)``, or an int: the shorter side's new length, keeping the
      aspect ratio (torchvision's ``Resize(int)``).

  Returns:
    ``uint8 [size_h, size_w, 3]``.

  Example:
    >>> resize(np.full((4, 6, 3), 9, np.uint8), 2).shape
    (2, 3, 3)
  """
  h, w = image.shape[:2]
  out_h, out_w = _resized_shape(h, w, size)
  if (out_h, out_w) == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR))


def _resized_shape(h: int, w: int, size) -> tuple[int, int]:
  """``(h, w)`` after :func:`resize` to ``size`` (an int: the shorter side)."""
  if not isinstance(size, int):
    return size
  # torchvision: the shorter side becomes `size`, the longer int(size * long / short).
  if h <= w:
    return size, int(size * w / h)
  return int(size * h / w), size


def _resize_extent(image: np.ndarray, size: tuple[int, int],
                   extent: tuple[float, float]) -> np.ndarray:
  """Resizes the top-left ``extent`` (h, w), possibly fractional, of ``image`` to ``size``.

  A JPEG decoded at scale 1 / s is ``ceil(H / s) × ceil(W / s)`` but holds the
  ``H / s × W / s`` of the image (the last row and column partly): resizing that
  extent maps the image onto ``size`` exactly as a resize of the full decode does.
  """
  if tuple(extent) == image.shape[:2]:
    return resize(image, size)
  return np.asarray(Image.fromarray(image).resize(
      (size[1], size[0]), Image.BILINEAR, box=(0, 0, extent[1], extent[0])))


def center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """The centre ``(h, w)`` window, offsets rounded as torchvision's ``center_crop``.

  Example:
    >>> center_crop(np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3), (3, 3))[..., 0]
    array([[18, 21, 24],
           [33, 36, 39],
           [48, 51, 54]], dtype=uint8)
  """
  h, w = image.shape[:2]
  ch, cw = size
  if ch > h or cw > w:
    raise ValueError(f"cannot crop {size} from an image of {(h, w)}.")
  top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
  return image[top:top + ch, left:left + cw]


def five_crops(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Top-left, top-right, bottom-left, bottom-right and centre crops (torchvision's order).

  Returns:
    ``uint8 [5, h, w, 3]``.
  """
  h, w = image.shape[:2]
  ch, cw = size
  if ch > h or cw > w:
    raise ValueError(f"cannot crop {size} from an image of {(h, w)}.")
  return np.stack([image[:ch, :cw], image[:ch, w - cw:], image[h - ch:, :cw],
                   image[h - ch:, w - cw:], center_crop(image, size)])


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int, *,
                            scale: tuple[float, float],
                            ratio: tuple[float, float]) -> tuple[int, int, int, int]:
  """``(top, left, h, w)`` of a random crop, torchvision ``RandomResizedCrop.get_params``.

  The crop covers a fraction ``U(scale)`` of the image's area with aspect ratio
  ``w / h`` log-uniform in ``ratio``; after 10 failed tries (the crop does not
  fit) it falls back to the central crop with the ratio clamped to ``ratio``.
  Szegedy et al., "Going Deeper with Convolutions", 2015.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, strength: float,
                 hue: float = 0.0) -> np.ndarray:
  """Brightness, contrast, saturation (and hue) jitter in a random order.

  Factors are drawn uniformly from ``[max(0, 1 - strength), 1 + strength]`` and
  applied as torchvision's ``ColorJitter`` does, clipping to [0, 255] after each
  step: brightness scales, contrast blends with the mean gray level, saturation
  blends with the per-pixel gray image. The hue shift (a fraction of a turn,
  uniform in ``[-hue, hue]``) is a rotation of the chroma plane in YIQ space: a
  3×3 matrix, far cheaper than torchvision's round trip through HSV and close to
  it for moderate shifts, but not identical.

  Args:
    image: ``uint8 [h, w, 3]``.
    rng: the generator drawing the factors and their order.
    strength: brightness / contrast / saturation strength (0 = unchanged).
    hue: maximum hue shift in turns, in [0, 0.5].

  Returns:
    ``uint8 [h, w, 3]``.
  """
  lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
  x = image.astype(np.float32)
  for op in rng.permutation(4):
    if op == 0 and strength > 0:
      x = x * np.float32(rng.uniform(lo, hi))
    elif op == 1 and strength > 0:
      mean = np.float32((x @ _GRAY).mean())
      x = (x - mean) * np.float32(rng.uniform(lo, hi)) + mean
    elif op == 2 and strength > 0:
      gray = (x @ _GRAY)[..., None]
      x = (x - gray) * np.float32(rng.uniform(lo, hi)) + gray
    elif op == 3 and hue > 0:
      x = x @ _hue_matrix(rng.uniform(-hue, hue) * 2 * math.pi).T
    else:
      continue
    np.clip(x, 0, 255, out=x)
  return (x + 0.5).astype(np.uint8)


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float64)


def _hue_matrix(angle: float) -> np.ndarray:
  c, s = math.cos(angle), math.sin(angle)
  rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)
  return (np.linalg.inv(_RGB_TO_YIQ) @ rotate @ _RGB_TO_YIQ).astype(np.float32)


def random_erasing(image: np.ndarray, rng: np.random.Generator, *, probability: float,
                   area: tuple[float, float] = (0.02, 0.33),
                   aspect: tuple[float, float] = (0.3, 3.3)) -> np.ndarray:
  """Replaces a random rectangle by random uint8 noise with probability ``probability``.

  The rectangle covers a fraction ``U(area)`` of the image with aspect ratio
  (height / width) log-uniform in ``aspect``; up to 10 tries, as torchvision's
  ``RandomErasing``. Zhong et al., "Random Erasing Data Augmentation", 2020.

  Args:
    image: ``uint8 [h, w, 3]``.
    rng: the generator.
    probability: chance of erasing.
    area: erased area fraction range.
    aspect: erased rectangle aspect-ratio range.

  Returns:
    ``uint8 [h, w, 3]`` (a copy when erased).
  """
  if probability <= 0 or rng.random() >= probability:
    return image
  height, width = image.shape[:2]
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  for _ in range(10):
    target = height * width * rng.uniform(area[0], area[1])
    ratio = math.exp(rng.uniform(log_aspect[0], log_aspect[1]))
    h = int(round(math.sqrt(target * ratio)))
    w = int(round(math.sqrt(target / ratio)))
    if 0 < h < height and 0 < w < width:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      out = image.copy()
      out[top:top + h, left:left + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
      return out
  return image


class _Crop(NamedTuple):
  """A training crop's geometry (drawn on the full-size image).

  The image is resized to each of ``resizes`` in turn, then ``box`` ``(top, left,
  h, w)`` of the last is resized to ``size`` (``resample``) or sliced out (it
  is ``size`` already).
  """
  resizes: tuple[tuple[int, int], ...]
  box: tuple[int, int, int, int]
  resample: bool

  def min_size(self, height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The fewest pixels (h, w) of the whole ``height × width`` image this crop reads.

    The first resize's shape; without one, the image must be large enough that
    ``box`` covers at least ``size`` (a crop of ``box_h`` rows resized to
    ``size_h`` needs ``ceil(height * size_h / box_h)`` rows in all).
    """
    if self.resizes:
      return self.resizes[0]
    _, _, h, w = self.box
    return -(-height * size[0] // h), -(-width * size[1] // w)


@dataclasses.dataclass(frozen=True)
class Transform:
  """Training augmentation and evaluation views of one image, uint8 in and out.

  Training (:meth:`train`): resize to ``resize`` (default: ``size``), then either
  a ``random_resized_crop`` to ``size`` or a random ``size`` crop (none when the
  two are equal), colour jitter, horizontal flip, random erasing — the order of
  torchvision recipes. Evaluation (:meth:`eval_views`): ``"none"`` and
  ``"flip"`` resize to ``eval_resize`` (default: ``size``) and take the centre
  ``size`` crop (then its mirror image); ``"five_crop_flip"`` takes the four
  corner and the centre ``size`` crops of the image resized to ``eval_resize``
  (default: ``resize``), then their mirror images — 10 views (Hermans, Beyer,
  Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017).

  Attributes:
    size: ``(h, w)`` network input; non-square allowed, e.g. ``(256, 128)``.
    resize: ``None`` or the size to resize to before cropping: ``(h, w)`` or an
      int shorter side (aspect kept), e.g. ``(288, 144)`` for TriNet's random
      256×128 crops. Without ``random_resized_crop`` it must cover ``size``.
    random_resized_crop: ``None`` or ``(min_scale, max_scale)``: crop a random
      fraction of the area with aspect ratio in ``crop_ratio``, resized to
      ``size`` (torchvision ``RandomResizedCrop``, e.g. ``(0.08, 1.0)``).
    crop_ratio: ``(min, max)`` aspect ratio ``w / h`` of random resized crops.
    flip: horizontal flip with probability 0.5.
    erasing: random-erasing probability (Zhong et al. 2020; area 0.02–0.33,
      aspect 0.3–3.3, random uint8 fill).
    color_jitter: brightness / contrast / saturation jitter strength (0 = off).
    hue: hue jitter in turns, in [0, 0.5] (0 = off); a YIQ rotation, see
      :func:`color_jitter`.
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
      at full size.

  Example:
    >>> t = Transform(size=(4, 2), resize=(6, 3), flip=True, tta="five_crop_flip")
    >>> image = np.arange(8 * 4 * 3, dtype=np.uint8).reshape(8, 4, 3)
    >>> t.train(image, np.random.default_rng(0)).shape, t.input_shape, t.num_views
    ((4, 2, 3), (4, 2, 3), 10)
    >>> t.eval_views(image).shape
    (10, 4, 2, 3)
  """
  size: tuple[int, int] = (224, 224)
  resize: int | tuple[int, int] | None = None
  random_resized_crop: tuple[float, float] | None = None
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = False
  erasing: float = 0.0
  color_jitter: float = 0.0
  hue: float = 0.0
  eval_resize: int | tuple[int, int] | None = None
  tta: str = "none"
  draft: bool = True

  def __post_init__(self):
    put = lambda name, value: object.__setattr__(self, name, value)
    put("size", _size_field("size", self.size, allow_int=False))
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
    """``(h, w, 3)``, one network input."""
    return (*self.size, 3)

  @property
  def num_views(self) -> int:
    """Views per image returned by :meth:`eval_views`."""
    return _VIEWS[self.tta]

  def _check_image(self, image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"Transform expects a uint8 [h, w, 3] image; got {image.dtype} "
                       f"{image.shape}.")

  def train(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One training augmentation of ``image``.

    Args:
      image: ``uint8 [h, w, 3]`` (any size).
      rng: every random choice draws from it, so the same seed gives the same
        output.

    Returns:
      ``uint8 [*size, 3]``.
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
      image, scale = _read_rgb(im, path, crop.min_size(height, width, self.size)
                               if self.draft else None)
    return self._augment(image, crop, rng, scale=scale, extent=(height / scale, width / scale))

  def _train_crop(self, height: int, width: int, rng: np.random.Generator) -> _Crop:
    """The geometry of a training crop of a ``height × width`` image, drawn from ``rng``."""
    resizes = []
    shape = (height, width)
    if self.resize is not None:
      shape = _resized_shape(height, width, self.resize)
      resizes.append(shape)
    if self.random_resized_crop is not None:
      box = random_resized_crop_box(rng, *shape, scale=self.random_resized_crop,
                                    ratio=self.crop_ratio)
      return _Crop(tuple(resizes), box, resample=True)
    if self.resize is None or shape[0] < self.size[0] or shape[1] < self.size[1]:
      shape = self.size
      resizes.append(shape)
    top = int(rng.integers(0, shape[0] - self.size[0] + 1))
    left = int(rng.integers(0, shape[1] - self.size[1] + 1))
    return _Crop(tuple(resizes), (top, left, *self.size), resample=False)

  def _augment(self, image: np.ndarray, crop: _Crop, rng: np.random.Generator, *,
               scale: int = 1, extent: tuple[float, float] | None = None) -> np.ndarray:
    """``crop`` of ``image``, then jitter, flip and erasing.

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
      image = np.asarray(Image.fromarray(image).resize(
          (self.size[1], self.size[0]), Image.BILINEAR, box=box))
    else:
      image = image[top:top + self.size[0], left:left + self.size[1]]
    if self.color_jitter > 0 or self.hue > 0:
      image = color_jitter(image, rng, strength=self.color_jitter, hue=self.hue)
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    image = random_erasing(image, rng, probability=self.erasing)
    return np.ascontiguousarray(image)

  def eval_views(self, image: np.ndarray) -> np.ndarray:
    """The deterministic evaluation views of ``image`` (see the class docstring).

    Args:
      image: ``uint8 [h, w, 3]`` (any size).

    Returns:
      ``uint8 [num_views, *size, 3]``.
    """
    self._check_image(image)
    if self.tta == "five_crop_flip":
      base = resize(image, self.eval_resize if self.eval_resize is not None else self.resize)
      views = five_crops(base, self.size)
    else:
      base = resize(image, self.eval_resize if self.eval_resize is not None else self.size)
      views = center_crop(base, self.size)[None]
    if self.tta != "none":
      views = np.concatenate([views, views[:, :, ::-1]])
    return np.ascontiguousarray(views)
