"""Tests of metric_learning.data.transforms (the Transform and decoding): exact
values on small synthetic images. The image operations: image_ops_test.py."""

import numpy as np
import pytest
from PIL import Image

from cases import noise
from cases import ramp
from metric_learning.data import transforms as T


def test_decode_modes(tmp_path):
  rgb = noise(5, 7)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  np.testing.assert_array_equal(T.decode(str(tmp_path / "rgb.png")), rgb, strict=True)
  Image.new("L", (4, 3), 9).save(tmp_path / "gray.png")
  gray = T.decode(str(tmp_path / "gray.png"))
  assert gray.shape == (3, 4, 3) and gray.dtype == np.uint8 and (gray == 9).all()
  pal = Image.fromarray(rgb).convert("P")
  pal.save(tmp_path / "pal.png")
  np.testing.assert_array_equal(T.decode(str(tmp_path / "pal.png")),
                                np.asarray(pal.convert("RGB")), strict=True)
  Image.new("CMYK", (4, 3), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
  cmyk = T.decode(str(tmp_path / "cmyk.jpg"))
  assert cmyk.shape == (3, 4, 3) and (cmyk > 250).all()      # no ink = white
  Image.new("RGBA", (4, 3), (1, 2, 3, 0)).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(T.decode(str(tmp_path / "rgba.png"))[0, 0], [1, 2, 3])


def test_decode_errors_name_the_path(tmp_path):
  missing = str(tmp_path / "missing.jpg")
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    T.decode(missing)
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(OSError, match="bad.jpg"):
    T.decode(str(bad))


def smooth(h, w, seed=0):
  """A smooth image (bicubically upsampled 8×8 noise), like a photo at this scale."""
  low = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC))


def test_decode_min_size_scales(tmp_path):
  path = str(tmp_path / "a.jpg")
  Image.fromarray(smooth(201, 257)).save(path, quality=90)
  full = T.decode(path)
  assert full.shape == (201, 257, 3)
  # (min_size, expected): the largest s in 8, 4, 2, 1 with 201 / s >= h and 257 / s >= w,
  # then ceil(201 / s) x ceil(257 / s).
  for min_size, shape in [((25, 32), (26, 33)), ((26, 32), (51, 65)), ((50, 64), (51, 65)),
                          ((51, 64), (101, 129)), ((100, 128), (101, 129)),
                          ((101, 10), (201, 257)), ((300, 300), (201, 257))]:
    image = T.decode(path, min_size=min_size)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8, min_size
    assert image.shape[0] >= min(min_size[0], 201) and image.shape[1] >= min(min_size[1], 257)
  np.testing.assert_array_equal(T.decode(path, min_size=(300, 300)), full, strict=True)
  Image.fromarray(smooth(64, 64)).convert("L").save(tmp_path / "gray.jpg")
  assert T.decode(str(tmp_path / "gray.jpg"), min_size=(16, 16)).shape == (16, 16, 3)
  for name in ("a.png", "a.bmp", "a.gif"):                       # never drafted
    Image.fromarray(smooth(64, 48)).save(tmp_path / name)
    np.testing.assert_array_equal(T.decode(str(tmp_path / name), min_size=(8, 8)),
                                  T.decode(str(tmp_path / name)), strict=True)


DRAFTED = [dict(size=(64, 64), random_resized_crop=(0.08, 1.0), flip=True, erasing=0.5),
           dict(size=(48, 40), resize=(60, 50), flip=True, color_jitter=0.2),
           dict(size=(40, 40), resize=48, random_resized_crop=(0.2, 1.0)),
           dict(size=(32, 48))]


@pytest.mark.parametrize("kwargs", DRAFTED)
def test_draft_is_close_to_a_full_decode(tmp_path, kwargs):
  """Same shapes and random draws, pixels within a small mean absolute error.

  Measured on these 192x256 smooth JPEGs: per-image mean absolute error at most
  0.73 / 255 (medians 0.33-0.66 by transform); 0.5-0.66 / 255 on the
  benchmark's 256x256 JPEGs.
  """
  on, off = T.Transform(**kwargs), T.Transform(**kwargs, draft=False)
  assert on.draft and not off.draft
  differ = 0
  for i in range(8):
    path = str(tmp_path / f"{i}.jpg")
    Image.fromarray(smooth(192, 256, seed=i)).save(path, quality=90)
    for seed in range(3):
      rng_on, rng_off = np.random.default_rng([i, seed]), np.random.default_rng([i, seed])
      a, b = on.train_file(path, rng_on), off.train_file(path, rng_off)
      assert a.shape == b.shape == on.input_shape and a.dtype == b.dtype == np.uint8
      assert rng_on.bit_generator.state == rng_off.bit_generator.state   # the same draws
      assert np.abs(a.astype(int) - b).mean() < 3, (i, seed)           # < 3 / 255
      differ += a.tobytes() != b.tobytes()
  assert differ > 0                                    # draft did decode at a reduced scale


@pytest.mark.parametrize("kwargs", DRAFTED)
def test_draft_never_upsamples(tmp_path, monkeypatch, kwargs):
  """Every resampling with draft reads at least the pixels it writes, whenever the full
  decode's does (draft never turns a downsampling into an upsampling)."""
  calls = []
  resize = Image.Image.resize

  def spy(self, size, resample=None, box=None, reducing_gap=None):
    box = box or (0, 0, *self.size)
    calls.append((box[2] - box[0], box[3] - box[1], *size))
    return resize(self, size, resample, box, reducing_gap)

  monkeypatch.setattr(Image.Image, "resize", spy)
  drafted = 0
  for i, (h, w) in enumerate([(192, 256), (257, 131), (80, 600), (130, 130)]):
    path = str(tmp_path / f"{i}.jpg")
    Image.fromarray(smooth(h, w, seed=i)).save(path)
    for seed in range(20):
      calls.clear()
      T.Transform(**kwargs, draft=False).train_file(path, np.random.default_rng(seed))
      full = list(calls)
      calls.clear()
      T.Transform(**kwargs).train_file(path, np.random.default_rng(seed))
      # A JPEG drafted to exactly the first resize's shape skips that resize.
      assert len(full) - 1 <= len(calls) <= len(full)
      for (fw, fh, ow, oh), (dw, dh, ow2, oh2) in zip(full[::-1], calls[::-1]):
        assert (ow, oh) == (ow2, oh2)
        assert dw >= ow or fw < ow, (h, w, seed, full, calls)
        assert dh >= oh or fh < oh, (h, w, seed, full, calls)
      drafted += full != calls
  assert drafted > 0


def test_draft_leaves_other_formats_and_off_switch_exact(tmp_path):
  t = T.Transform(**DRAFTED[0])
  for name in ("a.png", "a.bmp", "a.jpg"):
    path = str(tmp_path / name)
    Image.fromarray(smooth(192, 256)).save(path)
    for seed in range(5):
      exact = t.train(T.decode(path), np.random.default_rng(seed))
      off = T.Transform(**DRAFTED[0], draft=False).train_file(path, np.random.default_rng(seed))
      np.testing.assert_array_equal(off, exact, strict=True)
      if not name.endswith("jpg"):
        np.testing.assert_array_equal(t.train_file(path, np.random.default_rng(seed)), exact,
                                      strict=True)


def test_train_file_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    T.Transform(size=(4, 4)).train_file(str(tmp_path / "missing.jpg"), np.random.default_rng(0))
  (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
  with pytest.raises(OSError, match="bad.jpg"):
    T.Transform(size=(4, 4)).train_file(str(tmp_path / "bad.jpg"), np.random.default_rng(0))


def test_flip_is_mirror():
  t = T.Transform(size=(8, 6), flip=True)
  image = ramp()
  outs = {T.Transform(size=(8, 6)).train(image, np.random.default_rng(s)).tobytes()
          for s in range(4)}
  assert outs == {image.tobytes()}            # no augmentation: the image itself
  seen = set()
  for s in range(20):
    out = t.train(image, np.random.default_rng(s))
    assert out.tobytes() in (image.tobytes(), image[:, ::-1].tobytes())
    seen.add(out.tobytes())
  assert len(seen) == 2


def test_eval_view_is_the_centre_crop():
  image = ramp(8, 6)
  t = T.Transform(size=(4, 2), eval_resize=(8, 6))
  np.testing.assert_array_equal(t.eval_views(image), image[None, 2:6, 2:4], strict=True)


def test_five_crop_flip_views_are_corners_centre_and_mirrors():
  image = ramp(8, 6)
  crops = np.stack([image[:4, :2], image[:4, 4:], image[4:, :2], image[4:, 4:],
                    image[2:6, 2:4]])
  t = T.Transform(size=(4, 2), resize=(8, 6), tta="five_crop_flip")
  views = t.eval_views(image)
  assert views.shape == (10, 4, 2, 3) and t.num_views == 10
  np.testing.assert_array_equal(views[:5], crops, strict=True)
  np.testing.assert_array_equal(views[5:], crops[:, :, ::-1], strict=True)


def test_eval_flip_views():
  image = ramp(8, 6)
  t = T.Transform(size=(8, 6), tta="flip")
  np.testing.assert_array_equal(t.eval_views(image), np.stack([image, image[:, ::-1]]),
                                strict=True)
  assert T.Transform(size=(8, 6)).num_views == 1


def test_random_resized_crop_full_scale_is_a_resize():
  image = noise(32, 24)
  ratio = 24 / 32
  t = T.Transform(size=(10, 12), random_resized_crop=(1.0, 1.0), crop_ratio=(ratio, ratio))
  for seed in range(3):
    np.testing.assert_array_equal(t.train(image, np.random.default_rng(seed)),
                                  T.resize(image, (10, 12)), strict=True)


def test_resize_then_random_crop():
  image = ramp(8, 6)
  t = T.Transform(size=(6, 4), resize=(8, 6))
  crops = {t.train(image, np.random.default_rng(s)).tobytes() for s in range(40)}
  windows = {image[i:i + 6, j:j + 4].tobytes() for i in range(3) for j in range(3)}
  assert crops <= windows and len(crops) > 3


def test_erasing_changes_one_rectangle():
  image = np.zeros((40, 30, 3), np.uint8)
  t = T.Transform(size=(40, 30), erasing=1.0)
  out = t.train(image, np.random.default_rng(3))
  rows, cols = np.nonzero((out != image).any(-1))
  assert len(rows)
  box = out[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  changed = (box != 0).any(-1)
  assert changed.mean() > 0.9                 # a filled rectangle (random values, some 0)
  area = box.shape[0] * box.shape[1] / (40 * 30)
  assert 0.01 < area < 0.4
  untouched = out.copy()
  untouched[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = 0
  assert (untouched == 0).all()
  assert T.Transform(size=(40, 30), erasing=0.0).train(
      image, np.random.default_rng(3)).tobytes() == image.tobytes()


def test_color_jitter_draws_differ_per_seed():
  image = noise(16, 16)
  outs = [T.Transform(size=(16, 16), color_jitter=0.4, hue=0.1).train(
      image, np.random.default_rng(s)) for s in range(5)]
  assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in outs)
  assert len({o.tobytes() for o in outs}) == 5


def test_same_seed_same_output():
  t = T.Transform(size=(12, 8), resize=(20, 14), random_resized_crop=(0.2, 1.0), flip=True,
                  erasing=0.5, color_jitter=0.3, hue=0.05)
  image = noise(30, 20)
  a = t.train(image, np.random.default_rng([1, 2, 3]))
  b = t.train(image, np.random.default_rng([1, 2, 3]))
  c = t.train(image, np.random.default_rng([1, 2, 4]))
  np.testing.assert_array_equal(a, b, strict=True)
  assert a.tobytes() != c.tobytes()


def test_non_square_size_and_input_shape():
  t = T.Transform(size=[256, 128], resize=[288, 144], tta="five_crop_flip")
  assert t.size == (256, 128) and t.resize == (288, 144) and t.input_shape == (256, 128, 3)
  assert t.train(noise(300, 100), np.random.default_rng(0)).shape == (256, 128, 3)
  assert t.eval_views(noise(300, 100)).shape == (10, 256, 128, 3)


@pytest.mark.parametrize("kwargs, field", [
    (dict(size=(0, 4)), "Transform.size"),
    (dict(size=224), "Transform.size"),
    (dict(resize=(3.5, 4)), "Transform.resize"),
    (dict(size=(8, 8), resize=(6, 8)), "Transform.resize"),
    (dict(random_resized_crop=(0.5, 0.2)), "Transform.random_resized_crop"),
    (dict(random_resized_crop=(0.0, 1.0)), "Transform.random_resized_crop"),
    (dict(crop_ratio=(2.0, 1.0)), "Transform.crop_ratio"),
    (dict(flip="yes"), "Transform.flip"),
    (dict(draft=1), "Transform.draft"),
    (dict(erasing=1.5), "Transform.erasing"),
    (dict(color_jitter=-0.1), "Transform.color_jitter"),
    (dict(hue=0.6), "Transform.hue"),
    (dict(size=(120, 120), eval_resize=(100, 100)), "Transform.eval_resize"),
    (dict(max_shift=-1), "Transform.max_shift"),
    (dict(max_shift=True), "Transform.max_shift"),
    (dict(tta="ten_crop"), "Transform.tta"),
    (dict(tta="five_crop_flip"), "Transform.tta"),
])
def test_bad_fields_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    T.Transform(**kwargs)


def test_bad_image():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="uint8 or float"):
    T.Transform(size=(4, 4)).train(np.zeros((4, 4, 3), np.int32), rng)
  with pytest.raises(ValueError, match="uint8 or float"):
    T.Transform(size=(4, 4)).eval_views(np.zeros((4, 4), np.float32))
  with pytest.raises(ValueError, match="color_jitter and Transform.hue need uint8 RGB"):
    T.Transform(color_jitter=0.2).train(np.zeros((4, 4, 3), np.float32), rng)


def test_the_default_transform_returns_its_input():
  x = np.random.default_rng(0).random((5, 4, 2), np.float32)
  t = T.Transform()
  np.testing.assert_array_equal(t.train(x, np.random.default_rng(0)), x, strict=True)
  np.testing.assert_array_equal(t.eval_views(x), x[None], strict=True)
  assert t.output_size(5, 4) == (5, 4) and t.num_views == 1
  with pytest.raises(ValueError, match="Transform.size is None"):
    _ = t.input_shape


def test_float_images_take_every_geometric_setting():
  f = np.random.default_rng(3).random((11, 9, 2)).astype(np.float32)
  t = T.Transform(size=(6, 5), resize=(8, 7), random_resized_crop=(0.3, 1.0), max_shift=2,
                  flip=True, erasing=1.0, eval_resize=(7, 6), tta="five_crop_flip")
  out = t.train(f, np.random.default_rng(1))
  assert out.shape == (6, 5, 2) and out.dtype == np.float32
  np.testing.assert_array_equal(t.train(f, np.random.default_rng(1)), out)
  views = t.eval_views(f)
  assert views.shape == (10, 6, 5, 2) and views.dtype == np.float32
