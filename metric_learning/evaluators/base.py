"""The evaluator interface, split look-up and padding-aware embedding.

An evaluator is built from config keywords (all keyword-only), names the
dataset splits it needs embedded (``splits``) and turns those embeddings into a
flat dict of Python numbers (``run``). The trainer embeds each split once with
:func:`embed_dataset` and prefixes the keys with the evaluator's name.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any
from typing import Callable
from typing import Mapping

import numpy as np

from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning.data import padded_batches


class Evaluator:
  """Base class: ``splits`` it needs and ``run(embeddings, datasets) -> dict``.

  Subclasses set ``name`` (the registry key) and ``splits`` in ``__init__``.
  """

  name: str = ""
  splits: tuple[str, ...] = ()

  def run(self, embeddings: Mapping[str, np.ndarray], datasets: Mapping[str, Any]
          ) -> dict[str, float]:
    """Metrics of the embedded splits, a flat dict of Python floats / ints.

    Non-finite embeddings (a diverged model) give NaN for every metric (counts
    such as ``num_queries`` are kept) and a warning, never an exception.

    Args:
      embeddings: split name -> ``[n, dim]`` embeddings (real rows only).
      datasets: split name -> :class:`metric_learning.data.Dataset`.

    Returns:
      ``{metric name: value}``, without the evaluator's name.

    Raises:
      ValueError: naming the split and the available ones when one of
        ``splits`` is missing, or when its embeddings do not match its dataset.
    """
    inputs = {s: self._lookup(embeddings, datasets, s) for s in self.splits}
    broken = [s for s, (x, _) in inputs.items() if not np.all(np.isfinite(x))]
    if not broken:
      return to_python(self.evaluate(inputs))
    warnings.warn(f"{self.name}: embeddings of split(s) {', '.join(map(repr, broken))} are "
                  "not finite; every metric is NaN.", stacklevel=2)
    # The result keys depend on the data's shapes and labels only: evaluate
    # stand-in embeddings of the same shapes to learn them.
    rng = np.random.default_rng(0)
    stand_in = {s: (rng.standard_normal(x.shape).astype(np.float32), d)
                for s, (x, d) in inputs.items()}
    return {k: v if k.startswith("num_") else float("nan")
            for k, v in to_python(self.evaluate(stand_in)).items()}

  def evaluate(self, inputs: Mapping[str, tuple[np.ndarray, Any]]) -> dict[str, Any]:
    """The metrics; subclasses implement this.

    Args:
      inputs: for each of ``splits``, ``(embeddings [n, dim] float32, dataset)``,
        checked and finite.

    Returns:
      ``{metric name: number}``.
    """
    raise NotImplementedError

  def _lookup(self, embeddings: Mapping[str, np.ndarray], datasets: Mapping[str, Any],
             split: str) -> tuple[np.ndarray, Any]:
    """``(embeddings [n, dim] float32, dataset)`` of one split, checked."""
    for what, mapping in (("embeddings", embeddings), ("datasets", datasets)):
      if split not in mapping:
        raise ValueError(f"{self.name}: split {split!r} is missing from {what}; "
                         f"available: {', '.join(map(repr, sorted(mapping))) or 'none'}.")
    x = np.asarray(embeddings[split], np.float32)
    dataset = datasets[split]
    if x.ndim != 2 or x.shape[0] != len(dataset.labels):
      raise ValueError(f"{self.name}: embeddings of split {split!r} must have shape "
                       f"[{len(dataset.labels)}, dim]; got {x.shape}.")
    return x, dataset

  def __repr__(self) -> str:
    names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
    args = ", ".join(f"{p}={getattr(self, p)!r}" for p in names if hasattr(self, p))
    return f"{type(self).__name__}({args})"


def embed_dataset(embed_fn: Callable[[np.ndarray], Any], inputs: np.ndarray,
                  batch_size: int) -> np.ndarray:
  """Embeds every row of ``inputs`` in fixed-size batches; nothing recompiles.

  The last batch is padded with row 0 to ``batch_size`` and its padding rows are
  dropped afterwards, so ``embed_fn`` always sees the same shape (one compile
  under ``jax.jit``) and no row is left out.

  Args:
    embed_fn: maps a ``[batch_size, ...]`` batch to ``[batch_size, dim]``.
    inputs: ``[n, ...]`` array, ``n >= 1``.
    batch_size: rows per call.

  Returns:
    ``[n, dim]`` NumPy embeddings in input order.

  Example:
    >>> import numpy as np
    >>> from metric_learning import evaluators
    >>> calls = []
    >>> def embed(x):
    ...   calls.append(x.shape)
    ...   return 2 * x
    >>> evaluators.embed_dataset(embed, np.arange(5.0)[:, None], 2).ravel().tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
    >>> calls
    [(2, 1), (2, 1), (2, 1)]
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
      or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
  n = len(inputs)
  if n == 0:
    raise ValueError("inputs must have at least one row; got 0.")
  out = [np.asarray(embed_fn(inputs[index]))[where]
         for index, where in padded_batches(n, int(batch_size))]
  return np.concatenate(out)


def check_metric(evaluator: str, metric: str) -> str:
  """``metric`` if it is a known distance, else ValueError naming the evaluator."""
  try:
    return _validation.choice(metric, "metric", distances_lib.ALL_METRICS)
  except ValueError as e:
    raise ValueError(f"{evaluator}: {e}") from None


def positive_ints(evaluator: str, name: str, value: Any) -> tuple[int, ...]:
  """An int or a sequence of ints, each >= 1, as a non-empty tuple."""
  values = (value,) if isinstance(value, (int, np.integer)) else value
  try:
    values = tuple(values)
  except TypeError:
    values = None
  if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                           and v >= 1 for v in values):
    raise ValueError(f"{evaluator}: {name} must be a positive int or a non-empty sequence "
                     f"of them; got {value!r}.")
  return tuple(int(v) for v in values)


def positive_int(evaluator: str, name: str, value: Any) -> int:
  """``value`` if it is an int >= 1, else ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{evaluator}: {name} must be a positive int; got {value!r}.")
  return int(value)


def nonnegative_int(evaluator: str, name: str, value: Any) -> int:
  """``value`` if it is an int >= 0 (e.g. a seed), else ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{evaluator}: {name} must be a non-negative int; got {value!r}.")
  return int(value)


def boolean(evaluator: str, name: str, value: Any) -> bool:
  """``value`` if it is a bool, else ValueError naming it."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{evaluator}: {name} must be True or False; got {value!r}.")
  return bool(value)


def unit_interval(evaluator: str, name: str, value: Any) -> float:
  """``value`` if it is a number in [0, 1], else ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
      or not 0 <= value <= 1:
    raise ValueError(f"{evaluator}: {name} must be a number in [0, 1]; got {value!r}.")
  return float(value)


def split_name(evaluator: str, name: str, value: Any) -> str:
  """``value`` if it is a non-empty string (a split name), else ValueError."""
  if not isinstance(value, str) or not value:
    raise ValueError(f"{evaluator}: {name} must be a split name (a non-empty str); "
                     f"got {value!r}.")
  return value


def to_python(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The dict with NumPy scalars turned into Python floats / ints (JSON-ready)."""
  out = {}
  for k, v in metrics.items():
    if isinstance(v, (bool, np.bool_)):
      out[k] = float(v)
    elif isinstance(v, (int, np.integer)):
      out[k] = int(v)
    else:
      out[k] = float(v)
  return out
