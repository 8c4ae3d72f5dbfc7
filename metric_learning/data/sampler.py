"""PK batches (P classes × K samples) and padded evaluation batches."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np


class PKSampler:
  """Deterministic PK batches: batch ``step`` depends only on ``(seed, step)``.

  Each batch draws ``p`` distinct classes, then ``k`` samples of each — without
  replacement when the class has at least ``k`` samples, with replacement
  otherwise. Classes with a single sample could never be anchors, so they are
  never drawn as one of the ``p`` classes.

  Example:
    >>> import numpy as np
    >>> from metric_learning.data import PKSampler
    >>> s = PKSampler(np.array([0, 0, 0, 1, 1, 2, 2, 2, 3]), p=2, k=2, seed=0)
    >>> batch = s.batch(5)
    >>> batch.shape, bool(np.array_equal(batch, s.batch(5)))
    ((4,), True)
  """

  def __init__(self, labels: np.ndarray, *, p: int, k: int, seed: int):
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    usable = classes[counts >= 2]
    if p < 1 or k < 2:
      raise ValueError(f"PK sampling needs p >= 1 and k >= 2; got p={p}, k={k}.")
    if len(usable) < p:
      raise ValueError(f"p={p} classes per batch, but only {len(usable)} classes have "
                       "at least 2 samples.")
    self.p, self.k, self.seed = p, k, seed
    self.classes = usable
    self._members = {c: np.flatnonzero(labels == c) for c in usable}

  @property
  def batch_size(self) -> int:
    return self.p * self.k

  def batch(self, step: int) -> np.ndarray:
    """Indices ``[p * k]`` of batch ``step``."""
    rng = np.random.default_rng([self.seed, step])
    chosen = rng.choice(self.classes, size=self.p, replace=False)
    out = []
    for c in chosen:
      members = self._members[c]
      out.append(rng.choice(members, size=self.k, replace=len(members) < self.k))
    return np.concatenate(out)


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """``(indices, where)`` of fixed size ``batch_size`` covering ``range(n)``.

  The last batch is padded (index 0, ``where=False``), never dropped, so every
  batch has the same shape and nothing recompiles.

  Example:
    >>> from metric_learning.data import padded_batches
    >>> [(i.tolist(), w.tolist()) for i, w in padded_batches(3, 2)]
    [([0, 1], [True, True]), ([2, 0], [True, False])]
  """
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    where = idx < n
    yield np.where(where, idx, 0), where


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs ``iterator`` in a background thread, ``size`` items ahead."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
    finally:
      q.put(done)

  threading.Thread(target=worker, daemon=True).start()
  while (item := q.get()) is not done:
    yield item


def augment(rng: np.random.Generator, images: np.ndarray, *, max_shift: int = 1,
            flip: bool = False) -> np.ndarray:
  """Random translations by up to ``max_shift`` pixels (zero fill), optional h-flips.

  Image by image: the shift's offsets, then the flip's coin, from ``rng`` — the
  draws of :class:`~metric_learning.data.transforms.Transform` with only
  ``max_shift`` and ``flip`` set, so both give the same images.
  """
  from metric_learning.data import image_ops  # pylint: disable=import-outside-toplevel
  out = np.empty_like(images)
  for i, im in enumerate(images):
    out[i] = image_ops.shift(im, rng, max_shift)
    if flip and rng.random() < 0.5:
      out[i] = out[i, :, ::-1]
  return out
