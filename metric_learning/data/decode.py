"""Image files to ``uint8 [h, w, 3]`` RGB, optionally decoded at a reduced JPEG scale.

:func:`decode` reads a whole file; :class:`~metric_learning.data.transforms.Transform`
reads the header first (:func:`_open`), draws its crop on the full-size image,
then decodes (:func:`_read_rgb`) at the smallest JPEG draft scale (1/2, 1/4 or
1/8, Pillow's ``Image.draft``) that still covers the pixels the crop needs.
Errors name the file.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def decode(path: str, *, min_size: tuple[int, int] | None = None) -> np.ndarray:
  """Reads an image file as RGB, optionally at a reduced JPEG scale.

  Grayscale, palette, CMYK and alpha images are converted to RGB (alpha is
  dropped).

  With ``min_size``, a JPEG of ``H × W`` pixels is decoded at the scale ``1 / s``,
  ``s`` the largest of 8, 4, 2, 1 with ``H / s >= min_h`` and ``W / s >= min_w``
  (Pillow's ``Image.draft``: libjpeg computes the reduced image in its inverse
  DCT, ``s²`` times fewer pixels to decode, colour-convert and later resize). The
  result is ``ceil(H / s) × ceil(W / s)``, so both sides are at least
  ``min_size`` (at least the full image where that is smaller): a downsampled
  image like one resized from a full decode, but not bit-identical to it. Other
  formats (PNG, ...) are always read at full size.

  Args:
    path: an image file Pillow can read (JPEG, PNG, ...).
    min_size: ``None`` (full size) or ``(h, w)``: the fewest pixels the caller
      needs, as the height and width of the whole image.

  Returns:
    ``uint8 [h, w, 3]``.

  Raises:
    FileNotFoundError: the file does not exist (the message names the path).
    OSError: the file is not a readable image, whatever Pillow raised (the
      message names the path).

  Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
    >>> Image.new("L", (5, 3), 7).save(path)
    >>> image = decode(path)
    >>> image.shape, image.dtype, int(image.max())
    ((3, 5, 3), dtype('uint8'), 7)
    >>> jpeg = path[:-3] + "jpg"
    >>> Image.new("RGB", (200, 120), (90, 40, 10)).save(jpeg)
    >>> decode(jpeg, min_size=(30, 45)).shape   # s = 4: 120 / 4 >= 30, 200 / 4 >= 45
    (30, 50, 3)
  """
  path = str(path)
  with _open(path) as im:
    return _read_rgb(im, path, min_size)[0]


def _open(path: str) -> Image.Image:
  """Opens ``path`` lazily (the header only), errors naming the path."""
  try:
    return Image.open(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"image file not found: {path!r}") from e
  except Exception as e:   # whatever Pillow raises, the error names the file
    raise _named(path, e) from e


def _read_rgb(im: Image.Image, path: str,
              min_size: tuple[int, int] | None) -> tuple[np.ndarray, int]:
  """Decodes the opened ``im`` as RGB → ``(uint8 [h, w, 3], s)``: decoded at scale 1 / s.

  ``s > 1`` only for a JPEG with both sides at least twice ``min_size``; see
  :func:`decode`.
  """
  scale = 1
  try:
    if (min_size is not None and im.height >= 2 * min_size[0]
        and im.width >= 2 * min_size[1]):
      width = im.width
      # draft picks the largest s in {8, 4, 2, 1} with s <= W // min_w and
      # s <= H // min_h, i.e. W / s >= min_w and H / s >= min_h; it returns the
      # original image's box in the reduced one, (0, 0, W / s, H / s).
      drafted = im.draft(im.mode, (min_size[1], min_size[0]))
      if drafted is not None:
        scale = round(width / drafted[1][2])
    if im.mode != "RGB":
      # Palette images with transparency warn unless expanded through RGBA.
      im = im.convert("RGBA") if im.mode == "P" and "transparency" in im.info else im
      im = im.convert("RGB")
    return np.asarray(im, np.uint8), scale
  except Exception as e:   # whatever Pillow raises, the error names the file
    raise _named(path, e) from e


def _named(path: str, error: Exception) -> OSError:
  """``OSError("cannot decode image PATH: ...")`` for any decoding failure.

  Pillow raises OSError for most broken files, but also ValueError, SyntaxError,
  EOFError, struct or zlib errors, and warnings turned into errors (e.g. a
  DecompressionBombWarning); each becomes one OSError naming the file, which
  survives grain's worker processes and threads unchanged.
  """
  detail = str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
  return OSError(f"cannot decode image {path!r}: {detail}")
