"""Tests of metric_learning.data.image_ops: exact values on small synthetic images."""

import numpy as np
import pytest
from cases import noise
from cases import ramp

from metric_learning.data import image_ops
from metric_learning.data import transforms


def test_the_operations_keep_their_old_home():
  for name in ("resize", "center_crop", "five_crops", "random_resized_crop_box",
               "color_jitter", "random_erasing", "shift"):
    assert getattr(transforms, name) is getattr(image_ops, name)


def test_resize_constant_stays_constant():
  image = np.full((13, 7, 3), 77, np.uint8)
  for size in [(5, 9), (26, 14), 3]:
    out = image_ops.resize(image, size)
    assert (out == 77).all()
  assert image_ops.resize(image, (5, 9)).shape == (5, 9, 3)
  assert image_ops.resize(image, 3).shape == (5, 3, 3)          # shorter side 3: 13 * 3 / 7 -> 5
  assert image_ops.resize(np.zeros((4, 10, 3), np.uint8), 2).shape == (2, 5, 3)


def test_center_crop_indices():
  image = ramp(8, 6)
  np.testing.assert_array_equal(image_ops.center_crop(image, (4, 2)), image[2:6, 2:4],
                                strict=True)
  np.testing.assert_array_equal(image_ops.center_crop(image, (5, 3)), image[2:7, 2:5],
                                strict=True)


def test_five_crops_are_corners_and_centre():
  image = ramp(8, 6)
  crops = image_ops.five_crops(image, (4, 2))
  expected = [image[:4, :2], image[:4, 4:], image[4:, :2], image[4:, 4:], image[2:6, 2:4]]
  np.testing.assert_array_equal(crops, np.stack(expected), strict=True)


def test_random_resized_crop_box_and_shape():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = image_ops.random_resized_crop_box(rng, 30, 50, scale=(0.08, 1.0),
                                                ratio=(3 / 4, 4 / 3))
    assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 50 and h > 0 and w > 0
  # No crop fits: the central fallback with the ratio clamped (w/h = 4/3 of the height).
  top, left, h, w = image_ops.random_resized_crop_box(rng, 10, 100, scale=(1.0, 1.0),
                                              ratio=(3 / 4, 4 / 3))
  assert (top, left, h, w) == (0, (100 - 13) // 2, 10, 13)
  t = transforms.Transform(size=(16, 8), random_resized_crop=(0.08, 1.0))
  out = t.train(noise(40, 30), np.random.default_rng(1))
  assert out.shape == (16, 8, 3) and out.dtype == np.uint8


def test_color_jitter_off_and_gray_under_hue():
  image = noise(16, 16)
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(image_ops.color_jitter(image, rng, strength=0.0), image,
                                strict=True)
  gray = np.repeat(noise(16, 16)[..., :1], 3, axis=-1)
  out = image_ops.color_jitter(gray, rng, strength=0.0, hue=0.5)
  np.testing.assert_allclose(out, gray, atol=1)          # hue leaves gray pixels gray


def test_random_erasing_off_is_the_identity():
  image = noise(12, 10)
  out = image_ops.random_erasing(image, np.random.default_rng(0), probability=0.0)
  np.testing.assert_array_equal(out, image, strict=True)


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_float_resize_matches_uint8_to_its_rounding(channels):
  """Resizing float32 images channel by channel ("F") matches Pillow's uint8 resize
  of the same pixels to its rounding, with any number of channels."""
  rng = np.random.default_rng(channels)
  u = rng.integers(0, 256, (11, 9, channels), dtype=np.uint8)
  f = u.astype(np.float32)
  for size in [(5, 4), (16, 13), 6]:
    a, b = image_ops.resize(u, size), image_ops.resize(f, size)
    assert a.shape == b.shape and a.shape[-1] == channels and b.dtype == np.float32
    if channels in (1, 3):     # Pillow's own uint8 modes: fixed point, within one level
      assert np.abs(a.astype(np.float32) - b).max() <= 1.0
    else:                      # uint8 of other channel counts go through "F" too, rounded
      np.testing.assert_array_equal(a, np.clip(np.rint(b), 0, 255).astype(np.uint8))
  np.testing.assert_allclose(image_ops.resize(np.full((7, 5, channels), 0.25, np.float32), (3, 8)),
                             0.25, rtol=1e-6)


def test_float_erasing_fills_with_noise_in_the_image_range():
  x = np.linspace(-1.0, 3.0, 20 * 20 * 2, dtype=np.float32).reshape(20, 20, 2)
  out = image_ops.random_erasing(x, np.random.default_rng(0), probability=1.0)
  changed = out != x
  assert changed.any() and out.dtype == np.float32
  assert out[changed].min() >= -1.0 and out[changed].max() <= 3.0


def test_shift_is_a_zero_filled_translation_drawn_once():
  x = np.arange(1, 5 * 4 + 1, dtype=np.uint8).reshape(5, 4, 1)
  for seed in range(20):
    rng = np.random.default_rng(seed)
    dy, dx = np.random.default_rng(seed).integers(-2, 3, size=2)
    out = image_ops.shift(x, rng, 2)
    want = np.zeros_like(x)
    for y in range(5):
      for c in range(4):
        if 0 <= y - dy < 5 and 0 <= c - dx < 4:
          want[y, c] = x[y - dy, c - dx]
    np.testing.assert_array_equal(out, want, strict=True)
  assert image_ops.shift(x, np.random.default_rng(0), 0) is x
