"""Random batches with the label patterns every loss is checked on."""

import os

import numpy as np

SHAPES = ((7, 3), (12, 5))
PATTERNS = ("pk", "one_class", "all_distinct", "singletons", "padding")


def labels_for(pattern, batch, rng):
  if pattern in ("pk", "padding"):
    return (np.arange(batch) // 3) * 5 + 100          # groups of 3, any values
  if pattern == "one_class":
    return np.full(batch, -42)
  if pattern == "all_distinct":
    return np.arange(batch) * 3 - 7
  if pattern == "singletons":                          # a pair, a triple, singletons
    return np.array([0, 0, 1, 1, 1] + list(range(2, batch - 3)))[:batch]
  raise ValueError(pattern)


def make(pattern, batch, dim, seed=0, scale=1.0):
  """(embeddings float32, labels int32, where bool or None)."""
  rng = np.random.default_rng([seed, batch, dim, PATTERNS.index(pattern)])
  x = (scale * rng.standard_normal((batch, dim))).astype(np.float32)
  labels = labels_for(pattern, batch, rng).astype(np.int32)
  where = None
  if pattern == "padding":
    where = np.ones(batch, bool)
    where[[1, batch - 1, batch // 2]] = False
  return x, labels, where


def all_cases():
  for batch, dim in SHAPES:
    for pattern in PATTERNS:
      yield (pattern, batch, dim) + make(pattern, batch, dim)


# Images for the image-operation and transform tests.

def ramp(h=8, w=6):
  """A uint8 image whose every pixel differs: value = 3 * (row * w + col) + channel."""
  return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def noise(h=32, w=24, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_noise_images(root, shapes, *, suffix: str, seed: int) -> list[str]:
  """One uint8 RGB noise image file per ``(h, w)`` of ``shapes`` in ``root``
  (``00.jpg``, ``01.jpg``, ...): a small folder of real image files."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  paths = []
  for i, (h, w) in enumerate(shapes):
    path = os.path.join(str(root), f"{i:02d}.{suffix}")
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    paths.append(path)
  return paths


def tiny_run(path: str) -> str:
  """A finished run of the test config (6 steps, checkpoints at 3 and 6, no plots)."""
  from experiments import train  # pylint: disable=import-outside-toplevel
  from experiments.configs import test as test_config  # pylint: disable=import-outside-toplevel
  config = test_config.get_config()
  config.plots = False
  train.train_and_evaluate(config, path)
  return path
