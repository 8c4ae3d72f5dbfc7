"""A k-NN index of gallery embeddings: enroll new identities without retraining.

Example:
  >>> import numpy as np
  >>> import metric_learning as ml
  >>> index = ml.index.EmbeddingIndex.create(np.array([[0.0, 0.0], [1.0, 0.0]]), [10, 11])
  >>> index = index.add(np.array([[0.0, 5.0]]), [42])        # a new identity
  >>> index.predict(np.array([[0.1, 4.0], [0.9, 0.1]])).tolist()
  [42, 11]

The default ``backend="jax"`` is exact and the reference. ``backend="faiss"``
(``pip install faiss-cpu``) searches with faiss (Johnson, Douze, Jégou. Billion-
scale similarity search with GPUs. 2017): ``faiss_index="flat"`` is exact too
and returns the same neighbours and distances; ``"ivf"`` (inverted lists,
``nlist`` cells, ``nprobe`` searched) and ``"hnsw"`` (Malkov, Yashunin.
Efficient and robust approximate nearest neighbor search using Hierarchical
Navigable Small World graphs. 2018; ``M`` links, ``ef_search``) are
*approximate*: an explicit trade of some true neighbours for speed.

Class names travel with the labels:

  >>> index = index.add(np.array([[5.0, 5.0]]), [7], names={7: "ada"})
  >>> index.predict_names(np.array([[4.9, 5.2]]))
  ['ada']

Embeddings of different encoders are not comparable, so an index can record
which encoder made it: ``model``, a small JSON-able dict such as
:func:`metric_learning.training.model_identity` gives (the run's config hash
and checkpoint step). It is saved and loaded with the index and kept by
:meth:`EmbeddingIndex.add`; ``experiments.tools.enroll`` and ``experiments.tools.query``
refuse an index whose ``model`` is not the ``--workdir``'s.

  >>> index = ml.index.EmbeddingIndex.create(np.zeros((1, 2)), [0],
  ...                                        model={"config_sha256": "ab12", "step": 6})
  >>> index.add(np.ones((1, 2)), [1]).model
  {'config_sha256': 'ab12', 'step': 6}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _kernels
from metric_learning import _validation
from metric_learning import distances as distances_lib

BACKENDS = ("jax", "faiss")
FAISS_INDEXES = ("flat", "ivf", "hnsw")
_FAISS_PARAMS = {"flat": (), "ivf": ("nlist", "nprobe"),
                 "hnsw": ("M", "ef_search", "ef_construction")}


@dataclasses.dataclass(frozen=True)
class EmbeddingIndex:
  """Gallery embeddings ``[n, dim]`` (float32), their integer labels ``[n]``,
  optional class names (``{label: name}``) and the optional identity of the
  encoder that embedded them (``model``, a JSON-able dict; None when unknown),
  searched with ``backend``."""
  embeddings: np.ndarray
  labels: np.ndarray
  metric: str = "euclidean"
  names: dict | None = None
  backend: str = "jax"
  faiss_index: str = "flat"
  faiss_params: dict | None = None
  model: dict | None = None
  _faiss: list = dataclasses.field(default_factory=list, repr=False, compare=False)

  @classmethod
  def create(cls, embeddings, labels, *, metric: str = "euclidean",
             names: dict | None = None, backend: str = "jax", faiss_index: str = "flat",
             model: dict | None = None, **faiss_params) -> "EmbeddingIndex":
    """Builds an index.

    Args:
      embeddings: ``[n, dim]`` gallery embeddings.
      labels: ``[n]`` integer labels.
      metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``
        (ranked as -x·y).
      names: optional ``{label: name}``.
      backend: ``"jax"`` (exact, the default) or ``"faiss"``.
      faiss_index: with faiss: ``"flat"`` (exact: ``IndexFlatL2``, or
        ``IndexFlatIP`` on L2-normalised vectors for cosine and on raw ones for
        dot), ``"ivf"`` or ``"hnsw"`` (approximate).
      model: optional identity of the encoder that made ``embeddings``, a
        JSON-able dict such as :func:`metric_learning.training.model_identity`
        returns (``{"config_sha256": ..., "step": ..., "workdir": ...}``);
        saved with the index and kept by :meth:`add`.
      **faiss_params: ``"ivf"``: ``nlist`` (default ~4·sqrt(n), at most n/39)
        and ``nprobe`` (default 16); ``"hnsw"``: ``M`` (32), ``ef_search``
        (64, raised to k) and ``ef_construction`` (40).

    Returns:
      The index; a faiss index is built on the first search.
    """
    _validation.choice(metric, "metric", distances_lib.ALL_METRICS)
    _validation.choice(backend, "backend", BACKENDS)
    _validation.choice(faiss_index, "faiss_index", FAISS_INDEXES)
    unknown = sorted(set(faiss_params) - set(_FAISS_PARAMS[faiss_index]))
    if unknown or (faiss_params and backend != "faiss"):
      raise ValueError(f"unknown parameters {unknown or sorted(faiss_params)} for backend "
                       f"{backend!r}, faiss_index {faiss_index!r}; known: "
                       f"{list(_FAISS_PARAMS[faiss_index]) if backend == 'faiss' else []}.")
    if backend == "faiss":
      _import_faiss()
    x = np.asarray(_validation.float_matrix(np.asarray(embeddings, np.float32),
                                            "embeddings"))
    y = np.asarray(_validation.int_vector(np.asarray(labels), x.shape[0], "labels"))
    names = None if names is None else {int(k): str(v) for k, v in names.items()}
    return cls(x, y, metric, names, backend, faiss_index,
               {k: int(v) for k, v in faiss_params.items()} or None, _model(model))

  @property
  def exact(self) -> bool:
    """False for the approximate faiss indexes (``"ivf"``, ``"hnsw"``)."""
    return self.backend == "jax" or self.faiss_index == "flat"

  def name_of(self, label: int) -> str:
    """The class name of ``label`` (the label itself when no name is known)."""
    return (self.names or {}).get(int(label), str(label))

  def __len__(self) -> int:
    return self.embeddings.shape[0]

  def _options(self) -> dict:
    return dict(metric=self.metric, backend=self.backend, faiss_index=self.faiss_index,
                **(self.faiss_params or {}))

  def add(self, embeddings, labels, *, names: dict | None = None) -> "EmbeddingIndex":
    """A new index with these rows appended (e.g. a new identity's samples);
    ``names`` adds or updates class names. A built faiss index is copied and
    extended (an IVF index keeps the cells trained on the earlier rows). The
    index keeps its ``model``: the rows must come from that same encoder."""
    new = EmbeddingIndex.create(embeddings, labels, names=names, **self._options())
    _validation.same_dim(self.embeddings, new.embeddings, "index embeddings", "embeddings")
    merged = None if self.names is None and new.names is None else {
        **(self.names or {}), **(new.names or {})}
    out = dataclasses.replace(
        self, embeddings=np.concatenate([self.embeddings, new.embeddings]),
        labels=np.concatenate([self.labels, new.labels.astype(self.labels.dtype)]),
        names=merged, _faiss=[])
    if self._faiss:
      faiss = _import_faiss()
      index = faiss.clone_index(self._faiss[0])
      index.add(_faiss_vectors(new.embeddings, self.metric))
      out._faiss.append(index)
    return out

  def search(self, queries, *, k: int = 1, exclude_self: bool = False,
             chunk_size: int = 1024, gallery_block: int = 65536):
    """The ``k`` nearest gallery rows of each query: (indices, distances), ``[q, k]``.

    Ties are broken by gallery index on the jax backend. Distances are in
    ``metric`` (euclidean: not squared; dot: -x·y). The jax backend scans the
    gallery in blocks of ``gallery_block`` rows, so memory is
    O(chunk_size · gallery_block), and pads the last block of queries, so one
    compile serves every block; an approximate faiss index may return fewer
    than ``k`` hits for a query, padded with index -1 and distance inf.

    ``exclude_self=True``: the queries are the gallery itself (leave-one-out,
    as the k-NN and retrieval evaluators use it): query ``i`` never returns
    row ``i``, and ``k`` may be at most ``len(self) - 1`` (jax backend).

    Example:
      >>> import numpy as np
      >>> x = np.array([[0.0], [1.0], [3.0]], np.float32)
      >>> index = EmbeddingIndex.create(x, [0, 0, 1])
      >>> index.search(x, k=2, exclude_self=True)[0].tolist()
      [[1, 2], [0, 2], [1, 0]]
    """
    q = np.asarray(_validation.float_matrix(np.asarray(queries, np.float32), "queries"))
    _validation.same_dim(q, self.embeddings, "queries", "index embeddings")
    available = len(self) - int(bool(exclude_self))
    if not 1 <= k <= available:
      raise ValueError(f"k must be in [1, {available}] for an index of {len(self)} rows"
                       f"{' (leave-one-out)' if exclude_self else ''}; got {k}.")
    if exclude_self and (self.backend == "faiss" or len(q) != len(self)):
      raise ValueError("exclude_self=True searches the index's own rows with the jax "
                       f"backend: {len(self)} queries expected, got {len(q)} "
                       f"(backend {self.backend!r}).")
    if self.backend == "faiss":
      return self._faiss_search(q, k)
    g = jnp.asarray(self.embeddings)
    size = min(chunk_size, len(q))
    out_i, out_d = [], []
    for start in range(0, len(q), size):
      block = q[start:start + size]
      pad = size - len(block)
      i, d = _top_k(jnp.asarray(np.pad(block, ((0, pad), (0, 0)))), g, start, k,
                    self.metric, min(gallery_block, len(self)), bool(exclude_self))
      out_i.append(np.asarray(i)[:size - pad])
      out_d.append(np.asarray(d)[:size - pad])
    return np.concatenate(out_i), np.concatenate(out_d)

  def _faiss_search(self, q: np.ndarray, k: int):
    if not self._faiss:
      self._faiss.append(_build_faiss(self.embeddings, self.metric, self.faiss_index,
                                      self.faiss_params or {}))
    index = self._faiss[0]
    if self.faiss_index == "hnsw":
      index.hnsw.efSearch = max((self.faiss_params or {}).get("ef_search", 64), k)
    scores, idx = index.search(_faiss_vectors(q, self.metric), k)
    missing = idx < 0
    if self.metric == "euclidean":
      d = np.sqrt(np.maximum(scores, 0.0))
    elif self.metric == "sqeuclidean":
      d = np.maximum(scores, 0.0)
    elif self.metric == "cosine":
      d = np.clip(1.0 - scores, 0.0, 2.0)
    else:
      d = -scores
    return idx.astype(np.int32), np.where(missing, np.inf, d).astype(np.float32)

  def predict(self, queries, *, k: int = 1) -> np.ndarray:
    """Labels by majority vote of the ``k`` nearest (:func:`majority_vote`: ties go
    to the nearest of the most frequent labels)."""
    idx, _ = self.search(queries, k=k)
    found = idx >= 0                                # approximate faiss: -1 = no hit
    return majority_vote(self.labels[np.where(found, idx, 0)], found)

  def predict_names(self, queries, *, k: int = 1) -> list[str]:
    """Class names by majority vote of the ``k`` nearest (see :meth:`predict`)."""
    return [self.name_of(label) for label in self.predict(queries, k=k)]

  def save(self, path: str) -> None:
    """Writes an ``.npz`` atomically (temporary file, then rename); a faiss
    index is rebuilt from the embeddings on load. ``model`` is stored as JSON."""
    tmp = f"{path}.tmp.npz"
    names = json.dumps({str(k): v for k, v in (self.names or {}).items()})
    options = json.dumps({"backend": self.backend, "faiss_index": self.faiss_index,
                          **(self.faiss_params or {})})
    np.savez(tmp, embeddings=self.embeddings, labels=self.labels,
             metric=np.asarray(self.metric), names=np.asarray(names),
             options=np.asarray(options), model=np.asarray(json.dumps(self.model)))
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "EmbeddingIndex":
    """The index :meth:`save` wrote; one saved without ``model`` loads with None."""
    with np.load(path, allow_pickle=False) as f:
      names = json.loads(str(f["names"])) if "names" in f.files else {}
      options = json.loads(str(f["options"])) if "options" in f.files else {}
      model = json.loads(str(f["model"])) if "model" in f.files else None
      return cls.create(f["embeddings"], f["labels"], metric=str(f["metric"]),
                        names=names or None, model=model, **options)


def _model(model) -> dict | None:
  """``model`` as its JSON round trip: what :meth:`EmbeddingIndex.load` gives back."""
  if model is None:
    return None
  if not isinstance(model, dict):
    raise TypeError(f"model must be a dict identifying the encoder (or None); got "
                    f"{type(model).__name__}.")
  try:
    return json.loads(json.dumps(model))
  except (TypeError, ValueError) as e:
    raise TypeError(f"model must hold only JSON values (str, numbers, bool, None, lists, "
                    f"dicts); got {model!r}: {e}") from e


def _import_faiss():
  try:
    import faiss  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu (or pip install "
                      "\"metric-learning-jax[faiss]\").") from e
  return faiss


def _faiss_vectors(x: np.ndarray, metric: str) -> np.ndarray:
  """float32, C-contiguous; L2-normalised for cosine (as the jax path does)."""
  x = np.ascontiguousarray(x, np.float32)
  if metric == "cosine":
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.ascontiguousarray(np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0),
                             np.float32)
  return x


def _build_faiss(x: np.ndarray, metric: str, kind: str, params: dict):
  faiss = _import_faiss()
  dim = x.shape[1]
  inner = metric in ("cosine", "dot")
  faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
  if kind == "flat":
    index = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
  elif kind == "ivf":
    nlist = params.get("nlist", max(1, min(int(4 * math.sqrt(len(x))), len(x) // 39)))
    quantizer = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
    index.train(_faiss_vectors(x, metric))
    index.nprobe = min(params.get("nprobe", 16), nlist)
  else:
    index = faiss.IndexHNSWFlat(dim, params.get("M", 32), faiss_metric)
    index.hnsw.efConstruction = params.get("ef_construction", 40)
  index.add(_faiss_vectors(x, metric))
  return index


def majority_vote(neighbour_labels, found=None) -> np.ndarray:
  """The most frequent label of each row; ties go to the one occurring first.

  Args:
    neighbour_labels: ``[q, k]`` labels of the neighbours, nearest first.
    found: optional ``[q, k]`` bool; False marks a missing neighbour (an
      approximate search's -1), which casts no vote. Every row needs one.

  Returns:
    ``[q]`` predicted labels.

  Example:
    >>> import numpy as np
    >>> majority_vote(np.array([[3, 1, 1], [2, 5, 5], [4, 6, 4], [7, 8, 9]])).tolist()
    [1, 5, 4, 7]
  """
  y = np.asarray(neighbour_labels)
  found = np.ones(y.shape, bool) if found is None else np.asarray(found, bool)
  if not found.any(axis=-1).all():
    raise ValueError("majority_vote: a row has no neighbour to vote.")
  votes = np.sum((y[:, :, None] == y[:, None, :]) & found[:, None, :], axis=-1)
  votes = np.where(found, votes, -1)                 # [q, k]: count of y[:, j]
  # argmax returns the first maximum: the nearest of the most frequent labels.
  return np.take_along_axis(y, np.argmax(votes, axis=-1)[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("k", "metric", "block", "exclude_self"))
def _top_k(q, g, offset, k, metric, block, exclude_self):
  """Exact k nearest of ``g`` for each row of ``q``, scanning ``g`` in blocks.

  Each block's own top k is merged with the running top k; the running
  candidates come first in the merge, and ``top_k`` prefers the earlier of
  equal values, so ties go to the lower gallery index. ``exclude_self``: query
  ``i`` is gallery row ``offset + i``, never returned.
  """
  n = g.shape[0]
  rows = offset + jnp.arange(q.shape[0], dtype=jnp.int32)
  if block >= n:
    d = _kernels.pairwise(q, g, metric)
    if exclude_self:
      d = jnp.where(rows[:, None] == jnp.arange(n)[None, :], jnp.inf, d)
    neg, idx = jax.lax.top_k(-d, k)
    return idx, -neg
  blocks = -(-n // block)
  g = jnp.pad(g, ((0, blocks * block - n), (0, 0))).reshape(blocks, block, -1)
  kb = min(k, block)

  def step(carry, xs):
    best_d, best_i = carry
    rows_g, start = xs
    index = start + jnp.arange(block, dtype=jnp.int32)
    d = _kernels.pairwise(q, rows_g, metric)
    d = jnp.where((index[None, :] < n) & ~(exclude_self & (index[None, :] == rows[:, None])),
                  d, jnp.inf)
    neg, pos = jax.lax.top_k(-d, kb)
    cand_d = jnp.concatenate([best_d, -neg], axis=1)
    cand_i = jnp.concatenate([best_i, index[pos]], axis=1)
    neg, pos = jax.lax.top_k(-cand_d, k)
    return (-neg, jnp.take_along_axis(cand_i, pos, axis=1)), None

  init = (jnp.full((q.shape[0], k), jnp.inf, q.dtype),
          jnp.full((q.shape[0], k), -1, jnp.int32))
  starts = jnp.arange(blocks, dtype=jnp.int32) * block
  (best_d, best_i), _ = jax.lax.scan(step, init, (g, starts))
  return best_i, best_d
