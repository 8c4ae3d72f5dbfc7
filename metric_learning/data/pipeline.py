"""A streaming input pipeline on grain: decode and augment each batch when needed.

Only the index of paths and labels (an :class:`~metric_learning.data.files.ImageFiles`)
lives in memory; images are decoded per batch by grain worker threads (and,
with ``workers > 0``, worker processes), a bounded number of batches ahead.

Determinism is by construction, not by iterator state: the training batch at
step ``s`` is a pure function of ``(seed, s)`` — :class:`PKSampler` gives its
indices, and row ``i`` of the global batch is read and augmented by
:meth:`Transform.train_file` with ``np.random.default_rng([seed, s, i])`` (which
decodes a JPEG at a reduced scale when the crop needs fewer pixels, see
``Transform.draft``). Hence a run resumed at step ``s``
sees exactly the batches of an uninterrupted run, and the result does not
depend on ``workers``, ``threads`` or how the batch is split over processes.

grain layout (``grain.MapDataset`` → ``to_iter_dataset`` → ``mp_prefetch``): one
element of the ``MapDataset`` is one batch (``MapDataset.range`` over steps,
``.map`` decodes the batch's rows), so a worker decodes whole batches; the
``ReadOptions`` threads decode up to ``threads`` batches concurrently (Pillow
releases the GIL while decoding and resizing), and ``mp_prefetch`` gives batch
``j`` to worker ``j % workers`` and interleaves their outputs back in order.
"""

from __future__ import annotations

from typing import Callable
from typing import Iterator

import grain
import numpy as np
from absl import flags

from metric_learning.data.decode import decode
from metric_learning.data.files import ImageFiles
from metric_learning.data.sampler import PKSampler
from metric_learning.data.transforms import Transform


def _check_counts(workers: int, threads: int, buffer_size: int) -> None:
  for name, value in (("workers", workers), ("threads", threads)):
    if not isinstance(value, int) or value < 0:
      raise ValueError(f"{name} must be an int >= 0; got {value!r}.")
  if not isinstance(buffer_size, int) or buffer_size < 1:
    raise ValueError(f"buffer_size must be an int >= 1; got {buffer_size!r}.")


def _usable_grain_flags() -> None:
  """Lets grain's worker machinery run outside an absl app (tests, notebooks).

  Once JAX is imported, grain 0.2's multiprocessing reads its absl flags (e.g.
  ``--grain_enable_multiprocess_worker_profiling``), which raises
  ``UnparsedFlagAccessError`` before the command line is parsed. Marking grain's
  own flags present keeps their default values readable, the way grain marks its
  debug flags in its workers; flags parsed later (``app.run``) still override them.
  """
  if not flags.FLAGS.is_parsed():
    for name in list(flags.FLAGS):
      if name.startswith("grain_"):
        flags.FLAGS[name].present = True


def _stream(ds: grain.MapDataset, *, workers: int, threads: int,
            buffer_size: int) -> Iterator:
  """Iterates ``ds`` with ``threads`` threads (per process) and ``workers`` processes.

  At most ``max(buffer_size, threads)`` elements are buffered per process, so
  memory is bounded whatever the length of ``ds``. The worker processes are
  shut down when the returned generator is closed, exhausted or collected.
  """
  options = grain.ReadOptions(num_threads=threads,
                              prefetch_buffer_size=max(buffer_size, threads) if threads else 0)
  it_ds = ds.to_iter_dataset(options)
  if workers > 0:
    _usable_grain_flags()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=buffer_size))
  iterator = iter(it_ds)
  try:
    for element in iterator:
      # Batches from workers arrive as grain's shared-memory ndarray subclass;
      # plain ndarray views of them (freed with the view) keep one output type.
      if isinstance(element, dict):
        yield {k: np.asarray(v) for k, v in element.items()}
      else:
        yield tuple(np.asarray(v) for v in element)
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()


class _TrainBatch:
  """Step ``s`` → this process's rows of the training batch (picklable for workers)."""

  def __init__(self, files: ImageFiles, sampler: PKSampler, transform: Transform,
               seed: int, rows: range):
    self.paths, self.labels = files.paths, files.labels
    self.sampler, self.transform, self.seed, self.rows = sampler, transform, seed, rows

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    index = np.asarray(self.sampler.batch(step))
    local = index[self.rows.start:self.rows.stop]
    inputs = np.empty((len(local), *self.transform.input_shape), np.uint8)
    for j, (row, i) in enumerate(zip(self.rows, local)):
      rng = np.random.default_rng([self.seed, step, row])   # the GLOBAL row
      inputs[j] = self.transform.train_file(self.paths[i], rng)
    return {"inputs": inputs, "labels": self.labels[local],
            "where": np.ones(len(local), bool)}


def train_batches(files: ImageFiles, sampler: PKSampler, transform: Transform, *,
                  seed: int, start_step: int, num_steps: int, workers: int = 0,
                  threads: int = 2, buffer_size: int = 2, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Training batches of steps ``start_step, ..., num_steps - 1``, in order.

  The batch at step ``s`` is a function of ``(seed, s)`` only: the indices are
  ``sampler.batch(s)`` and row ``i`` of the global batch is
  ``transform.train_file(path, np.random.default_rng([seed, s, i]))`` (with
  ``transform.draft=False``: ``transform.train(decode(path), rng)``). Each process
  decodes only its own rows ``[process_index * B / process_count, (process_index
  + 1) * B / process_count)`` — the rows the parallel runners feed it.

  Args:
    files: the training split (paths and labels).
    sampler: gives the ``B`` indices of each step's global batch.
    transform: the training augmentation (:meth:`Transform.train_file`).
    seed: the augmentation seed.
    start_step: the first step (resume from a checkpoint at this step).
    num_steps: one past the last step.
    workers: grain worker processes (0: decode in this process).
    threads: decoding threads per process, each working on one batch.
    buffer_size: batches buffered ahead per process (and per worker).
    process_index: this process's index among ``process_count``.
    process_count: the number of processes sharing each global batch.

  Returns:
    An iterator of dicts: ``inputs`` uint8 ``[B / process_count, h, w, 3]``,
    ``labels`` int32 ``[B / process_count]``, ``where`` bool (all True). Closing it
    (or exhausting it) stops the workers.

  Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> from metric_learning.data.sampler import PKSampler
    >>> root = tempfile.mkdtemp()
    >>> paths = [os.path.join(root, f"{i}.png") for i in range(6)]
    >>> for i, p in enumerate(paths):
    ...   Image.new("RGB", (10, 8), (i, 0, 0)).save(p)
    >>> files = ImageFiles(np.array(paths), np.array([0, 0, 1, 1, 2, 2]))
    >>> sampler = PKSampler(files.labels, p=2, k=2, seed=0)
    >>> batches = train_batches(files, sampler, Transform(size=(4, 4), flip=True), seed=0,
    ...                         start_step=3, num_steps=5)
    >>> [(b["inputs"].shape, b["labels"].tolist()) for b in batches]
    [((4, 4, 4, 3), [1, 1, 2, 2]), ((4, 4, 4, 3), [2, 2, 0, 0])]
  """
  batch_size = sampler.batch_size
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count={process_count}); "
                     f"got {process_index}.")
  if batch_size % process_count:
    raise ValueError(f"the global batch of {batch_size} rows (sampler.p * sampler.k) must "
                     f"divide evenly over process_count={process_count} processes.")
  if not 0 <= start_step <= num_steps:
    raise ValueError(f"need 0 <= start_step <= num_steps; got start_step={start_step}, "
                     f"num_steps={num_steps}.")
  _check_counts(workers, threads, buffer_size)
  per_process = batch_size // process_count
  rows = range(process_index * per_process, (process_index + 1) * per_process)
  ds = grain.MapDataset.range(start_step, num_steps).map(
      _TrainBatch(files, sampler, transform, seed, rows))
  return _stream(ds, workers=workers, threads=threads, buffer_size=buffer_size)


class _EvalBatch:
  """Batch ``b`` → ``(views [batch_size, V, h, w, 3], where [batch_size])``, zero padding."""

  def __init__(self, files: ImageFiles, transform: Transform, batch_size: int):
    self.paths, self.transform, self.batch_size = files.paths, transform, batch_size

  def __call__(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    t = self.transform
    index = np.arange(b * self.batch_size, (b + 1) * self.batch_size)
    where = index < len(self.paths)
    views = np.zeros((self.batch_size, t.num_views, *t.input_shape), np.uint8)
    for j in np.flatnonzero(where):
      views[j] = t.eval_views(decode(self.paths[index[j]]))
    return views, where


def eval_batches(files: ImageFiles, transform: Transform, batch_size: int, *,
                 workers: int = 0, threads: int = 2,
                 buffer_size: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Fixed-shape evaluation batches covering every sample of ``files`` in order.

  The last batch is padded with zero images (``where`` False), never dropped,
  so every batch has the same shape and a jitted model compiles once.

  Args:
    files: the split to evaluate.
    transform: gives the views (:meth:`Transform.eval_views`).
    batch_size: images per batch.
    workers: grain worker processes (0: decode in this process).
    threads: decoding threads per process, each working on one batch.
    buffer_size: batches buffered ahead per process (and per worker).

  Returns:
    An iterator of ``(views, where)``: ``views`` uint8
    ``[batch_size, num_views, h, w, 3]``, ``where`` bool ``[batch_size]``;
    ``ceil(len(files) / batch_size)`` batches.
  """
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
  _check_counts(workers, threads, buffer_size)
  num_batches = -(-len(files) // batch_size)
  ds = grain.MapDataset.range(num_batches).map(_EvalBatch(files, transform, batch_size))
  return _stream(ds, workers=workers, threads=threads, buffer_size=buffer_size)


def embed_files(embed_fn: Callable[[np.ndarray], np.ndarray], files: ImageFiles,
                transform: Transform, batch_size: int, *, workers: int = 0,
                threads: int = 2) -> np.ndarray:
  """Embeds every sample of ``files``, averaging over the test-time views.

  ``embed_fn`` always receives ``uint8 [batch_size * num_views, h, w, 3]`` (the
  last batch zero-padded), so a jitted function compiles once. With several
  views (``transform.tta``) the embedding of an image is the plain mean of its
  views' embeddings, as TriNet's 10-crop test (Hermans, Beyer, Leibe, "In
  Defense of the Triplet Loss for Person Re-Identification", 2017); the mean is
  not re-normalised — normalise it yourself for cosine retrieval if needed.

  Args:
    embed_fn: ``uint8 [batch_size * num_views, h, w, 3] -> [batch_size * num_views,
      dim]`` (a jitted model call converting to float inside).
    files: the split to embed.
    transform: gives the views (:meth:`Transform.eval_views`).
    batch_size: images per call (``batch_size * num_views`` inputs).
    workers: grain worker processes (0: decode in this process).
    threads: decoding threads per process.

  Returns:
    ``[len(files), dim]`` embeddings in the order of ``files``, in the dtype
    ``embed_fn`` returns.

  Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> paths = [os.path.join(root, f"{i}.png") for i in range(3)]
    >>> for i, p in enumerate(paths):
    ...   Image.new("RGB", (6, 6), (10 * i, 0, 0)).save(p)
    >>> files = ImageFiles(np.array(paths), np.array([0, 1, 2]))
    >>> red = lambda x: x[..., :1].mean(axis=(1, 2))     # [N, 1]: mean red value
    >>> embed_files(red, files, Transform(size=(4, 4), tta="flip"), batch_size=2)
    array([[ 0.],
           [10.],
           [20.]])
  """
  views = transform.num_views
  out = None
  done = 0
  for inputs, where in eval_batches(files, transform, batch_size, workers=workers,
                                    threads=threads):
    emb = np.asarray(embed_fn(inputs.reshape(-1, *transform.input_shape)))
    if emb.ndim != 2 or emb.shape[0] != batch_size * views:
      raise ValueError(f"embed_fn must map [{batch_size * views}, ...] inputs to "
                       f"[{batch_size * views}, dim] embeddings; got {emb.shape}.")
    emb = emb.reshape(batch_size, views, -1).mean(axis=1, dtype=emb.dtype)
    if out is None:
      out = np.empty((len(files), emb.shape[-1]), emb.dtype)
    n = int(where.sum())
    out[done:done + n] = emb[:n]
    done += n
  if out is None:
    raise ValueError(f"{files.name or 'files'}: nothing to embed (0 samples).")
  return out
