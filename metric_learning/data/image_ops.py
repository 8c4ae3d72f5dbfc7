"""Image operations in NumPy / Pillow, the image's dtype in and out.

The building blocks of :class:`metric_learning.data.transforms.Transform`:
resizing, centre and five crops, the random-resized-crop box, random shifts,
colour jitter and random erasing. Images are ``[h, w, c]``: ``uint8`` RGB
decoded from files, or the ``float32`` arrays of an in-memory
:class:`~metric_learning.data.Dataset` (any number of channels); colour jitter
alone needs ``uint8`` RGB. Every random choice draws from the
``np.random.Generator`` passed in, so a result is a function of that
generator's state alone.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_GRAY = np.array([0.2989, 0.587, 0.114], np.float32)


def resize(image: np.ndarray, size) -> np.ndarray:
  """Bilinear resize (antialiased, as Pillow and torchvision on PIL images).

  Args:
    image: ``[h, w, c]``, ``uint8`` or ``float32``.
    size: ``(h, w)``, or an int: the shorter side's new length, keeping the
      aspect ratio (torchvision's ``Resize(int)``).

  Returns:
    ``[size_h, size_w, c]`` in ``image``'s dtype.

  Example:
    >>> resize(np.full((4, 6, 3), 9, np.uint8), 2).shape
    (2, 3, 3)
    >>> resize(np.full((4, 6, 1), 0.5, np.float32), (2, 3))[..., 0]
    array([[0.5, 0.5, 0.5],
           [0.5, 0.5, 0.5]], dtype=float32)
  """
  h, w = image.shape[:2]
  out_h, out_w = _resized_shape(h, w, size)
  if (out_h, out_w) == (h, w):
    return image
  return _bilinear(image, (out_h, out_w))


def _bilinear(image: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
  """Pillow's antialiased bilinear resize of ``box`` (default: all) of ``image`` to ``size``.

  ``uint8`` RGB and single-channel images are resized as Pillow images ("RGB",
  "L"); any other image channel by channel in 32-bit float ("F"), the result
  cast back to the image's dtype (rounded for integers).
  """
  target = (int(size[1]), int(size[0]))
  if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
    out = np.asarray(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
                     .resize(target, Image.BILINEAR, box=box))
    return out.reshape(*out.shape[:2], image.shape[-1])
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                       .resize(target, Image.BILINEAR, box=box))
            for c in range(image.shape[-1])]
  out = np.stack(planes, axis=-1)
  if np.issubdtype(image.dtype, np.integer):
    info = np.iinfo(image.dtype)
    out = np.clip(np.rint(out), info.min, info.max)
  return out.astype(image.dtype)


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
  return _bilinear(image, size, box=(0, 0, extent[1], extent[0]))


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
    ``[5, h, w, c]``.
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


def shift(image: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """A random translation by up to ``max_shift`` pixels each way, zero fill.

  The offsets ``(dy, dx)`` are drawn together, ``rng.integers(-max_shift,
  max_shift + 1, size=2)``; ``max_shift=0`` draws nothing and returns ``image``.
  With ``padding = max_shift`` this is torchvision's ``RandomCrop(size,
  padding)`` (zero padding, then a random crop of the original size).

  Example:
    >>> shift(np.ones((3, 3, 1)), np.random.default_rng(0), 1)[..., 0]
    array([[0., 0., 0.],
           [1., 1., 1.],
           [1., 1., 1.]])
  """
  if max_shift == 0:
    return image
  h, w = image.shape[:2]
  dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
  out = np.zeros_like(image)
  src = image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
  out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
  return out


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
  """Replaces a random rectangle by random noise with probability ``probability``.

  The rectangle covers a fraction ``U(area)`` of the image with aspect ratio
  (height / width) log-uniform in ``aspect``; up to 10 tries, as torchvision's
  ``RandomErasing``. Zhong et al., "Random Erasing Data Augmentation", 2020.
  The noise is uniform: over 0–255 for ``uint8`` images, over the image's own
  range ``[min, max]`` for float ones.

  Args:
    image: ``[h, w, c]``, ``uint8`` or float.
    rng: the generator.
    probability: chance of erasing.
    area: erased area fraction range.
    aspect: erased rectangle aspect-ratio range.

  Returns:
    ``[h, w, c]`` in ``image``'s dtype (a copy when erased).
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
      shape = (h, w, image.shape[-1])
      if image.dtype == np.uint8:
        out[top:top + h, left:left + w] = rng.integers(0, 256, shape, dtype=np.uint8)
      else:
        out[top:top + h, left:left + w] = rng.uniform(image.min(), image.max(), shape)
      return out
  return image
