"""A k-NN index of gallery embeddings: enroll new identities without retraining.

Example:
  >>> import numpy as np
  >>> import metric_learning as ml
  >>> index = ml.index.EmbeddingIndex.create(np.array([[0.0, 0.0], [1.0, 0.0]]), [10, 11])
  >>> index = index.add(np.array([[0.0, 5.0]]), [42])        # a new identity
  >>> index.predict(np.array([[0.1, 4.0], [0.9, 0.1]])).tolist()
  [42, 11]

Class names travel with the labels:

  >>> index = index.add(np.array([[5.0, 5.0]]), [7], names={7: "ada"})
  >>> index.predict_names(np.array([[4.9, 5.2]]))
  ['ada']
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _validation
from metric_learning import distances as distances_lib


@dataclasses.dataclass(frozen=True)
class EmbeddingIndex:
  """Gallery embeddings ``[n, dim]`` (float32), their integer labels ``[n]`` and
  optional class names (``{label: name}``)."""
  embeddings: np.ndarray
  labels: np.ndarray
  metric: str = "euclidean"
  names: dict | None = None

  @classmethod
  def create(cls, embeddings, labels, *, metric: str = "euclidean",
             names: dict | None = None) -> "EmbeddingIndex":
    _validation.choice(metric, "metric", distances_lib.ALL_METRICS)
    x = np.asarray(_validation.float_matrix(np.asarray(embeddings, np.float32),
                                            "embeddings"))
    y = np.asarray(_validation.int_vector(np.asarray(labels), x.shape[0], "labels"))
    names = None if names is None else {int(k): str(v) for k, v in names.items()}
    return cls(x, y, metric, names)

  def name_of(self, label: int) -> str:
    """The class name of ``label`` (the label itself when no name is known)."""
    return (self.names or {}).get(int(label), str(label))

  def __len__(self) -> int:
    return self.embeddings.shape[0]

  def add(self, embeddings, labels, *, names: dict | None = None) -> "EmbeddingIndex":
    """A new index with these rows appended (e.g. a new identity's samples);
    ``names`` adds or updates class names."""
    new = EmbeddingIndex.create(embeddings, labels, metric=self.metric, names=names)
    _validation.same_dim(self.embeddings, new.embeddings, "index embeddings", "embeddings")
    merged = None if self.names is None and new.names is None else {
        **(self.names or {}), **(new.names or {})}
    return EmbeddingIndex(np.concatenate([self.embeddings, new.embeddings]),
                          np.concatenate([self.labels, new.labels.astype(self.labels.dtype)]),
                          self.metric, merged)

  def search(self, queries, *, k: int = 1, chunk_size: int = 1024):
    """The ``k`` nearest gallery rows of each query: (indices, distances), ``[q, k]``."""
    q = np.asarray(_validation.float_matrix(np.asarray(queries, np.float32), "queries"))
    _validation.same_dim(q, self.embeddings, "queries", "index embeddings")
    if not 1 <= k <= len(self):
      raise ValueError(f"k must be in [1, {len(self)}]; got {k}.")
    out_i, out_d = [], []
    for start in range(0, len(q), chunk_size):
      i, d = _top_k(jnp.asarray(q[start:start + chunk_size]), jnp.asarray(self.embeddings),
                    k, self.metric)
      out_i.append(np.asarray(i))
      out_d.append(np.asarray(d))
    return np.concatenate(out_i), np.concatenate(out_d)

  def predict(self, queries, *, k: int = 1) -> np.ndarray:
    """Labels by majority vote of the ``k`` nearest (ties: the nearest among them)."""
    idx, _ = self.search(queries, k=k)
    votes = self.labels[idx]
    out = []
    for row in votes:
      values, counts = np.unique(row, return_counts=True)
      best = values[counts == counts.max()]
      out.append(next(v for v in row if v in best))
    return np.asarray(out, self.labels.dtype)

  def predict_names(self, queries, *, k: int = 1) -> list[str]:
    """Class names by majority vote of the ``k`` nearest (see :meth:`predict`)."""
    return [self.name_of(label) for label in self.predict(queries, k=k)]

  def save(self, path: str) -> None:
    """Writes an ``.npz`` atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp.npz"
    names = json.dumps({str(k): v for k, v in (self.names or {}).items()})
    np.savez(tmp, embeddings=self.embeddings, labels=self.labels,
             metric=np.asarray(self.metric), names=np.asarray(names))
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "EmbeddingIndex":
    with np.load(path, allow_pickle=False) as f:
      names = json.loads(str(f["names"])) if "names" in f.files else {}
      return cls.create(f["embeddings"], f["labels"], metric=str(f["metric"]),
                        names=names or None)


@functools.partial(jax.jit, static_argnames=("k", "metric"))
def _top_k(q, g, k, metric):
  d = distances_lib._pairwise(q, g, metric)  # pylint: disable=protected-access
  neg, idx = jax.lax.top_k(-d, k)
  return idx, -neg
