"""One interface over every split, in memory or on disk.

A :class:`Source` is what training, evaluation and the tools need of a split:
its labels, the model's input shape, the training batches of a PK sampler, the
embeddings of every sample and the pictures of a few. Two kinds implement it:

* :class:`Arrays`: a :class:`~metric_learning.data.Dataset` in memory
  (digits, ``.npz``, MNIST-format files); training batches are rows of its
  arrays, augmented by random shifts and flips (``max_shift``, ``flip``).
* :class:`Files`: :class:`~metric_learning.data.ImageFiles` (the image
  benchmarks and folders); batches are decoded and augmented per step by
  :mod:`metric_learning.data.pipeline` with a
  :class:`~metric_learning.data.transforms.Transform`.

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
  >>> src = sources.source(split, {"max_shift": 0})
  >>> src.input_shape, src.augment
  ((2, 2, 1), {'max_shift': 0, 'flip': False})
  >>> batch = next(src.train_batches(data.PKSampler(split.labels, p=2, k=2, seed=0),
  ...                                seed=0, start_step=0, num_steps=1))
  >>> batch["inputs"].shape, batch["where"].all()
  ((4, 2, 2, 1), np.True_)
  >>> src.embed(lambda x: x.reshape(len(x), -1)[:, :1], batch_size=4).ravel().tolist()
  [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]
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


def _check_fields(augment: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                  what: str) -> dict:
  """``augment`` over ``defaults``; an unknown field fails with the one message of
  every registry (:func:`metric_learning._validation.known_settings`)."""
  augment = dict(augment or {})
  _validation.known_settings(augment, defaults, field="augment",
                             owner=f"the augmentation of {what}")
  return {**defaults, **augment}


@dataclasses.dataclass
class Arrays:
  """A split in memory; training batches augmented by shifts and flips.

  Attributes:
    split: the :class:`~metric_learning.data.Dataset`.
    augment: ``max_shift`` (random translations by up to this many pixels, zero
      fill) and ``flip`` (horizontal flips with probability 0.5); both off by default.
  """
  split: Dataset
  augment: dict[str, Any] = dataclasses.field(default_factory=dict)
  local_rows = False

  AUGMENT = {"max_shift": 0, "flip": False}

  def __post_init__(self):
    self.augment = self.check_augment(self.augment)

  @classmethod
  def check_augment(cls, augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every augmentation setting in effect; a ValueError names a bad one."""
    out = _check_fields(augment, cls.AUGMENT, "in-memory data (image-file data take a "
                        "data.transforms.Transform)")
    shift = out["max_shift"]
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
      raise ValueError(f"augment.max_shift must be an int >= 0; got {shift!r}.")
    if not isinstance(out["flip"], (bool, np.bool_)):
      raise ValueError(f"augment.flip must be True or False; got {out['flip']!r}.")
    return out

  @classmethod
  def augment_defaults(cls) -> dict[str, Any]:
    return dict(cls.AUGMENT)

  @property
  def labels(self) -> np.ndarray:
    return self.split.labels

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.split.inputs.shape[1:])

  def batch(self, sampler: sampler_lib.PKSampler, step: int, seed: int) -> Batch:
    """Batch ``step``: a function of ``(seed, step)`` only, so a resumed run repeats it."""
    index = sampler.batch(step)
    inputs = self.split.inputs[index]
    if self.augment["max_shift"] > 0 or self.augment["flip"]:
      inputs = sampler_lib.augment(np.random.default_rng([seed, step, 1]), inputs,
                                   max_shift=self.augment["max_shift"],
                                   flip=self.augment["flip"])
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
    """``[n, dim]`` embeddings in padded fixed-size batches (one compile)."""
    del workers
    from metric_learning.evaluators import base  # pylint: disable=import-outside-toplevel
    return base.embed_dataset(embed_fn, self.split.inputs, batch_size)

  def images(self, index: np.ndarray) -> np.ndarray:
    """The inputs of samples ``index``, as the model sees them."""
    return self.split.inputs[np.asarray(index)]


@dataclasses.dataclass
class Files:
  """Image files decoded and augmented per batch by worker processes.

  Attributes:
    split: the :class:`~metric_learning.data.ImageFiles`.
    augment: the fields of a :class:`~metric_learning.data.transforms.Transform`
      (training augmentation and evaluation views).
  """
  split: ImageFiles
  augment: dict[str, Any] = dataclasses.field(default_factory=dict)
  local_rows = True

  def __post_init__(self):
    self.transform = self.make_transform(self.augment)
    self.augment = self._fields(self.transform)

  @staticmethod
  def _fields(transform) -> dict[str, Any]:
    return {f.name: getattr(transform, f.name) for f in dataclasses.fields(transform)}

  @classmethod
  def augment_defaults(cls) -> dict[str, Any]:
    from metric_learning.data import transforms  # pylint: disable=import-outside-toplevel
    return {f.name: f.default for f in dataclasses.fields(transforms.Transform)}

  @classmethod
  def make_transform(cls, augment: Mapping[str, Any] | None):
    """The :class:`~metric_learning.data.transforms.Transform` of ``augment``; a
    ValueError names a bad field."""
    from metric_learning.data import transforms  # pylint: disable=import-outside-toplevel
    fields = _check_fields(augment, cls.augment_defaults(), "image-file data (a "
                           "data.transforms.Transform)")
    try:
      return transforms.Transform(**fields)
    except (TypeError, ValueError) as e:
      raise ValueError(f"augment: {e}") from None

  @classmethod
  def check_augment(cls, augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every transform setting in effect (as the Transform holds it); a ValueError
    names a bad one."""
    return cls._fields(cls.make_transform(augment))

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
