"""What several test modules share: random batches with the label patterns every
loss is checked on, the in-batch losses with their brute-force references, image
fixtures and a tiny finished run. Test modules import this, never each other."""

import itertools
import os

import numpy as np
import pytest
import reference as ref

import metric_learning as ml

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


# ---------------------------------------------- losses and references ---- #

METRICS = ("euclidean", "sqeuclidean", "cosine")
REDUCTIONS = ("mean", "sum", "none", "mean_nonzero")

# name -> (library call, reference per-anchor terms, uses metric)
LOSSES = {
    "batch_hard": (
        lambda x, y, w, m, r: ml.batch_hard_triplet_loss(
            x, y, where=w, margin=0.5, metric=m, reduction=r),
        lambda s, m: ref.batch_hard(s, m, 0.5, False), True),
    "batch_hard_soft": (
        lambda x, y, w, m, r: ml.batch_hard_triplet_loss(
            x, y, where=w, metric=m, soft=True, reduction=r),
        lambda s, m: ref.batch_hard(s, m, 0.0, True), True),
    "batch_hard_streaming": (
        lambda x, y, w, m, r: ml.batch_hard_triplet_loss(
            x, y, where=w, margin=0.5, metric=m, reduction=r, block_size=5),
        lambda s, m: ref.batch_hard(s, m, 0.5, False), True),
    "batch_all": (
        lambda x, y, w, m, r: ml.batch_all_triplet_loss(
            x, y, where=w, margin=0.5, metric=m, reduction=r),
        lambda s, m: ref.batch_all(s, m, 0.5, False), True),
    "batch_all_soft": (
        lambda x, y, w, m, r: ml.batch_all_triplet_loss(
            x, y, where=w, metric=m, soft=True, reduction=r),
        lambda s, m: ref.batch_all(s, m, 0.0, True), True),
    "semi_hard_facenet": (
        lambda x, y, w, m, r: ml.semi_hard_triplet_loss(
            x, y, where=w, margin=0.5, metric=m, reduction=r),
        lambda s, m: ref.semi_hard_facenet(s, m, 0.5, False), True),
    "semi_hard_tfa": (
        lambda x, y, w, m, r: ml.semi_hard_triplet_loss(
            x, y, where=w, margin=0.5, metric=m, definition="tfa", reduction=r),
        lambda s, m: ref.semi_hard_tfa(s, m, 0.5, False), True),
    "quadruplet": (
        lambda x, y, w, m, r: ml.quadruplet_loss(
            x, y, where=w, margin=0.5, margin2=0.3, metric=m, reduction=r),
        lambda s, m: ref.quadruplet(s, m, 0.5, 0.3), True),
    "quadruplet_soft": (
        lambda x, y, w, m, r: ml.quadruplet_loss(
            x, y, where=w, soft=True, metric=m, reduction=r),
        lambda s, m: ref.quadruplet(s, m, 0.0, 0.0, soft=True), True),
    "contrastive": (
        lambda x, y, w, m, r: ml.contrastive_loss(
            x, y, where=w, margin=1.5, metric=m, reduction=r),
        lambda s, m: ref.contrastive(s, m, 1.5), True),
    "lifted_structure": (
        lambda x, y, w, m, r: ml.lifted_structure_loss(
            x, y, where=w, margin=1.0, metric=m, reduction=r),
        lambda s, m: ref.lifted(s, m, 1.0), True),
    "margin": (
        lambda x, y, w, m, r: ml.margin_loss(
            x, y, where=w, beta=1.0, margin=0.3, metric=m, reduction=r),
        lambda s, m: ref.margin_loss(s, m, 1.0, 0.3), True),
    "margin_triplets": (
        lambda x, y, w, m, r: ml.margin_loss(
            x, y, where=w, beta=1.0, margin=0.3, metric=m, reduction=r,
            weighting="triplets"),
        lambda s, m: ref.margin_triplets(s, m, 1.0, 0.3), True),
    "multi_similarity": (
        lambda x, y, w, m, r: ml.multi_similarity_loss(
            x, y, where=w, alpha=2.0, beta=10.0, base=0.5, epsilon=0.1, reduction=r),
        lambda s, m: ref.multi_similarity(s, 2.0, 10.0, 0.5, 0.1), False),
    "npair": (
        lambda x, y, w, m, r: ml.npair_loss(x, y, where=w, reduction=r),
        lambda s, m: ref.npair_sohn(s), False),
    "npair_all_pairs": (
        lambda x, y, w, m, r: ml.npair_loss(x, y, where=w, reduction=r,
                                            definition="all_pairs"),
        lambda s, m: ref.npair(s), False),
}
# Losses whose roles depend on the row order (Sohn's anchor = first row of a label).
ORDER_DEPENDENT = {"npair"}


def check(actual, expected, rtol=2e-4, atol=2e-4):
  actual = np.asarray(actual)
  expected = np.asarray(expected)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  assert np.all(np.isfinite(actual))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def slow_after_first(cases, ids=None):
  """``cases`` for ``parametrize``, every one after the first marked slow.

  For checks that launch a command line once per case: ``pytest -m "not slow"``
  (the developer loop) still runs the first, the README command all of them.
  """
  ids = ids or [None] * len(cases)
  return [pytest.param(*case, id=i, marks=() if n == 0 else pytest.mark.slow)
          for n, (case, i) in enumerate(zip(cases, ids, strict=True))]


def covering(cases, ids=None):
  """``cases`` (tuples) for ``parametrize``, marked so that the developer loop runs few.

  A case stays in ``pytest -m "not slow"`` when it holds a value, at some
  position, that no earlier kept case held; the rest are marked slow. So the
  developer loop still runs every value of every position at least once (each
  loss, each metric, each label pattern), and the README command runs them all.
  """
  cases = [tuple(c) for c in cases]
  ids = ids or [None] * len(cases)
  seen = [set() for _ in cases[0]]
  params = []
  for case, i in zip(cases, ids, strict=True):
    keys = [repr(v) for v in case]
    new = any(k not in s for k, s in zip(keys, seen, strict=True))
    if new:
      for k, s in zip(keys, seen, strict=True):
        s.add(k)
    params.append(pytest.param(*case, id=i, marks=() if new else pytest.mark.slow))
  return params


def covering_product(*axes):
  """Every combination of ``axes`` for ``parametrize`` (in ``itertools.product``
  order), with :func:`covering`'s marks chosen along the diagonals: case ``i``
  of the developer loop takes value ``i mod len(axis)`` of each axis, so the
  values of a short axis are spread over the long one's."""
  axes = [list(a) for a in axes]
  index = list(itertools.product(*(range(len(a)) for a in axes)))
  longest = max(len(a) for a in axes)
  diagonal = [tuple(i % len(a) for a in axes) for i in range(longest)]
  order = diagonal + [c for c in index if c not in diagonal]
  marked = dict(zip(order, covering([tuple(a[j] for a, j in zip(axes, c)) for c in order])))
  return [marked[c] for c in index]
