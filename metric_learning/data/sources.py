"""One interface over every split, in memory or on disk.

A :class:`Source` is what training, evaluation and the tools need of a split:
its labels, the model's input shape, the training batches of a PK sampler, the
embeddings of every sample and the pictures of a few. Two kinds implement it:

* :class:`Arrays`: a :class:`~metric_learning.data.Dataset` in memory
  (digits, ``.npz``, MNIST-format files); training batches are rows of its
  arrays, augmented in float32.
* :class:`Files`: :class:`~metric_learning.data.ImageFiles` (the image
  benchmarks and folders); batches are decoded and augmented per step by
  :mod:`metric_learning.data.pipeline`, in uint8.

Both read their ``augment`` settings as one
:class:`~metric_learning.data.transforms.Transform` (one schema: the same
fields, defaults and checks); a kind refuses only what it cannot do (colour
jitter on float arrays, no ``size`` for files of many sizes).

:func:`source` wraps a split in its kind, :func:`kind` names the kind of a
registered dataset before it is read (so that an experiment's ``augment``
section is checked first); nothing else in the trainer or the tools asks which
kind a split is.

Example:
  >>> import numpy as np
  >>> from metric_learning import data
  >>> from metric_learning.data import sources
  >>> split = data.Dataset(np.arange(24, dtype=np.float32).reshape(6, 2, 2, 1),
  ...                      np.array([0, 0, 1, 1, 2, 2]))
  >>> src = sources.source(split, {"max_shift": 1, "flip": True})
  >>> src.input_shape, src.augment["max_shift"], src.augment["size"]
  ((2, 2, 1), 1, None)
  >>> batch = next(src.train_batches(data.PKSampler(split.labels, p=2, k=2, seed=0),
  ...                                seed=0, start_step=0, num_steps=1))
  >>> batch["inputs"].shape, batch["where"].all()
  ((4, 2, 2, 1), np.True_)
  >>> src.embed(lambda x: x.reshape(len(x), -1)[:, :1], batch_size=4).ravel().tolist()
  [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]
  >>> sources.source(split, {"tta": "flip"}).embed(         # mean of the image and its mirror
  ...     lambda x: x.reshape(len(x), -1)[:, :1], batch_size=4).ravel().tolist()
  [0.5, 4.5, 8.5, 12.5, 16.5, 20.5]
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable
from typing import Iterator
from typing import Mapping
from typing import Protocol

import numpy as np

from metric_learning import _validation
from metric_learning.data import sampler as sampler_lib
from metric_learning.data.datasets import Dataset
from metric_learning.data.files import ImageFiles

Batch = dict[str, np.ndarray]
EmbedFn = Callable[[np.ndarray], Any]


class Source(Protocol):
  """What the trainer and the tools use of a split, whatever holds it."""

  split: Dataset | ImageFiles
  augment: dict[str, Any]          # every augmentation setting in effect
  local_rows: bool                 # train batches hold only this process's rows

  @property
  def labels(self) -> np.ndarray: ...

  @property
  def input_shape(self) -> tuple[int, ...]: ...

  def train_batches(self, sampler: sampler_lib.PKSampler, *, seed: int, start_step: int,
                    num_steps: int, workers: int = 0, process_index: int = 0,
                    process_count: int = 1) -> Iterator[Batch]: ...

  def embed(self, embed_fn: EmbedFn, batch_size: int, *, workers: int = 0) -> np.ndarray: ...

  def images(self, index: np.ndarray) -> np.ndarray: ...


def augment_defaults() -> dict[str, Any]:
  """Every ``augment`` setting and its default, the same for both kinds: the
  fields of :class:`~metric_learning.data.transforms.Transform` (all off)."""
  from metric_learning.data import transforms  # pylint: disable=import-outside-toplevel
  return {f.name: f.default for f in dataclasses.fields(transforms.Transform)}


def upgrade_augment(data_name: str | None, augment: Mapping[str, Any]) -> dict[str, Any]:
  """A recorded ``augment`` section in today's schema: image files took 224×224
  when ``size`` was left out, before it was required."""
  augment = dict(augment)
  if data_name is not None and kind(data_name) is Files and augment.get("size") is None:
    augment["size"] = [224, 224]
  return augment


def _fields(transform) -> dict[str, Any]:
  return {f.name: getattr(transform, f.name) for f in dataclasses.fields(transform)}


class _Augmented:
  """What both kinds share: ``augment`` read as one
  :class:`~metric_learning.data.transforms.Transform`, checked for the kind."""

  @classmethod
  def make_transform(cls, augment: Mapping[str, Any] | None):
    """The :class:`~metric_learning.data.transforms.Transform` of ``augment``; a
    ValueError names a bad field (an unknown one with the one message of every
    registry, :func:`metric_learning._validation.known_settings`)."""
    from metric_learning.data import transforms  # pylint: disable=import-outside-toplevel
    augment = dict(augment or {})
    _validation.known_settings(augment, augment_defaults(), field="augment",
                               owner="the augmentation (a data.transforms.Transform)")
    try:
      transform = transforms.Transform(**augment)
    except (TypeError, ValueError) as e:
      raise ValueError(f"augment: {e}") from None
    cls._check_kind(transform)
    return transform

  @classmethod
  def _check_kind(cls, transform) -> None:
    """A ValueError naming a setting this kind of data cannot take."""

  @classmethod
  def check_augment(cls, augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every augmentation setting in effect (as the Transform holds it); a
    ValueError names a bad one."""
    return _fields(cls.make_transform(augment))

  @staticmethod
  def augment_defaults() -> dict[str, Any]:
    return augment_defaults()


@dataclasses.dataclass
class Arrays(_Augmented):
  """A split in memory, its rows augmented by the
  :class:`~metric_learning.data.transforms.Transform` of ``augment``, in float32.

  Without ``size`` the model takes the arrays' own ``[h, w, c]``; with one, every
  training row and evaluation view is resized to it. Colour jitter needs RGB
  image files and is refused here.

  Attributes:
    split: the :class:`~metric_learning.data.Dataset`.
    augment: the fields of a :class:`~metric_learning.data.transforms.Transform`
      (training augmentation and evaluation views); all off by default.
  """
  split: Dataset
  augment: dict[str, Any] = dataclasses.field(default_factory=dict)
  local_rows = False

  def __post_init__(self):
    self.transform = self.make_transform(self.augment)
    self.augment = _fields(self.transform)
    if self.split.inputs.ndim != 4 and (self.transform.changes_training
                                        or self.transform.changes_evaluation
                                        or self.transform.size is not None):
      raise ValueError(f"augment: {self.split.name or 'the data'} holds inputs of shape "
                       f"{list(self.split.inputs.shape[1:])}, not images [h, w, c]; leave "
                       "every augment setting at its default.")

  @classmethod
  def _check_kind(cls, transform) -> None:
    if transform.color_jitter > 0 or transform.hue > 0:
      name = "color_jitter" if transform.color_jitter > 0 else "hue"
      raise ValueError(f"augment.{name} needs RGB image files (uint8); in-memory arrays "
                       "are float32: leave it 0.")

  @property
  def labels(self) -> np.ndarray:
    return self.split.labels

  @property
  def input_shape(self) -> tuple[int, ...]:
    shape = tuple(self.split.inputs.shape[1:])
    if len(shape) != 3:
      return shape
    return (*self.transform.output_size(*shape[:2]), shape[-1])

  @property
  def _same_size(self) -> bool:
    return self.input_shape == tuple(self.split.inputs.shape[1:])

  @property
  def _rows_are_views(self) -> bool:
    """Whether every row is its own single evaluation view (no resize, no test-time views)."""
    return self._same_size and not self.transform.changes_evaluation

  def batch(self, sampler: sampler_lib.PKSampler, step: int, seed: int) -> Batch:
    """Batch ``step``: a function of ``(seed, step)`` only, so a resumed run repeats it."""
    index = sampler.batch(step)
    inputs = self.split.inputs[index]
    if self.transform.changes_training or not self._same_size:
      rng = np.random.default_rng([seed, step, 1])   # one generator, row after row
      inputs = np.stack([self.transform.train(row, rng) for row in inputs])
    return {"inputs": inputs, "labels": self.split.labels[index],
            "where": np.ones(len(index), bool)}

  def train_batches(self, sampler, *, seed, start_step, num_steps, workers=0,
                    process_index=0, process_count=1) -> Iterator[Batch]:
    """Batches of steps ``start_step, ..., num_steps - 1`` (the global batch each
    time: the runner takes this process's rows), built one step ahead in a thread."""
    del workers, process_index, process_count
    return sampler_lib.prefetch(self.batch(sampler, s, seed)
                                for s in range(start_step, num_steps))

  def embed(self, embed_fn: EmbedFn, batch_size: int, *, workers: int = 0) -> np.ndarray:
    """``[n, dim]`` embeddings in padded fixed-size batches (one compile),
    averaged over the transform's evaluation views when it has several."""
    del workers
    from metric_learning.evaluators import base  # pylint: disable=import-outside-toplevel
    if self._rows_are_views:
      return base.embed_dataset(embed_fn, self.split.inputs, batch_size)
    views = self.transform.num_views

    def embed_views(rows: np.ndarray) -> np.ndarray:
      stacked = np.stack([self.transform.eval_views(row) for row in rows])
      emb = np.asarray(embed_fn(stacked.reshape(-1, *stacked.shape[2:])))
      return emb.reshape(len(rows), views, -1).mean(axis=1, dtype=emb.dtype)

    return base.embed_dataset(embed_views, self.split.inputs, batch_size)

  def images(self, index: np.ndarray) -> np.ndarray:
    """The inputs of samples ``index``, as the model sees them (the first evaluation view)."""
    rows = self.split.inputs[np.asarray(index)]
    if self._rows_are_views:
      return rows
    return np.stack([self.transform.eval_views(row)[0] for row in rows])


@dataclasses.dataclass
class Files(_Augmented):
  """Image files decoded and augmented per batch by worker processes.

  Attributes:
    split: the :class:`~metric_learning.data.ImageFiles`.
    augment: the fields of a :class:`~metric_learning.data.transforms.Transform`
      (training augmentation and evaluation views); ``size`` is required (the
      images differ in size).
  """
  split: ImageFiles
  augment: dict[str, Any] = dataclasses.field(default_factory=dict)
  local_rows = True

  def __post_init__(self):
    self.transform = self.make_transform(self.augment)
    self.augment = _fields(self.transform)

  @classmethod
  def _check_kind(cls, transform) -> None:
    if transform.size is None:
      raise ValueError("augment.size is required for image files (their images differ in "
                       "size), e.g. augment.size=(224, 224).")

  @property
  def labels(self) -> np.ndarray:
    return self.split.labels

  @property
  def input_shape(self) -> tuple[int, ...]:
    return self.transform.input_shape

  def train_batches(self, sampler, *, seed, start_step, num_steps, workers=0,
                    process_index=0, process_count=1) -> Iterator[Batch]:
    """This process's rows of the batches of steps ``start_step, ..., num_steps - 1``,
    decoded and augmented by ``workers`` processes
    (:func:`metric_learning.data.pipeline.train_batches`)."""
    from metric_learning.data import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.train_batches(
        self.split, sampler, self.transform, seed=seed, start_step=start_step,
        num_steps=num_steps, workers=workers, process_index=process_index,
        process_count=process_count)

  def embed(self, embed_fn: EmbedFn, batch_size: int, *, workers: int = 0) -> np.ndarray:
    """``[n, dim]`` embeddings, averaged over the transform's evaluation views."""
    from metric_learning.data import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.embed_files(embed_fn, self.split, self.transform, batch_size,
                                workers=workers)

  def images(self, index: np.ndarray) -> np.ndarray:
    """The first evaluation view of samples ``index`` (decoded now, only these)."""
    from metric_learning.data import decode  # pylint: disable=import-outside-toplevel
    return np.stack([self.transform.eval_views(decode.decode(self.split.paths[i]))[0]
                     for i in np.asarray(index)])


KINDS = (Arrays, Files)


def kind(data_name: str) -> type[Arrays] | type[Files]:
  """The source kind of registered dataset ``data_name`` (trait ``streamed``: files)."""
  from metric_learning.data import registry  # pylint: disable=import-outside-toplevel
  return Files if data_name in registry.STREAMED else Arrays


def source(split: Dataset | ImageFiles, augment: Mapping[str, Any] | None = None) -> Source:
  """``split`` wrapped in its kind, with ``augment`` checked (a ValueError names a bad field)."""
  if isinstance(split, ImageFiles):
    return Files(split, dict(augment or {}))
  if isinstance(split, Dataset):
    return Arrays(split, dict(augment or {}))
  raise TypeError(f"a split is a data.Dataset or data.ImageFiles; got {type(split).__name__}.")
