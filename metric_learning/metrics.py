r"""Retrieval, verification and re-identification metrics, chunked pure JAX.

Rankings are computed for blocks of queries at a time (``chunk_size`` rows of
the query × gallery distance matrix), so memory is O(chunk · gallery), never
O(queries · gallery) beyond that block.

Definitions (Musgrave, Belongie, Lim. A Metric Learning Reality Check. ECCV
2020, https://arxiv.org/abs/2003.08505): for a query with :math:`R` relevant
gallery items (same label; the query itself excluded when queries = gallery)
and relevance :math:`r_i` at rank :math:`i`,

* precision@1 :math:`= r_1`; recall@K :math:`= [\exists i \le K: r_i]`;
* R-precision :math:`= \frac1R \sum_{i \le R} r_i`;
* MAP@R :math:`= \frac1R \sum_{i \le R} r_i\, P@i`, :math:`P@i = \frac1i \sum_{j \le i} r_j`;
* mAP :math:`= \frac1R \sum_i r_i\, P@i` over the whole ranking; MRR = mean of
  :math:`1 / \min\{i : r_i\}`.

Queries without any relevant item are left out of every average.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _validation
from metric_learning import distances as distances_lib


def _chunked(fn, chunk_size: int, *query_arrays):
  """Applies ``fn`` to blocks of ``chunk_size`` queries (padded), concatenating."""
  n = query_arrays[0].shape[0]
  blocks = max(1, -(-n // chunk_size))
  size = min(chunk_size, n) if blocks == 1 else chunk_size
  pad = blocks * size - n
  arrays = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(
      (blocks, size) + a.shape[1:]) for a in query_arrays]
  out = jax.lax.map(lambda xs: fn(*xs), arrays)
  return jax.tree.map(lambda v: v.reshape((-1,) + v.shape[2:])[:n], out)


def _ranked_relevance(q, gallery, relevant_fn, metric, exclude_self_offset):
  """Sorted relevance ``[c, G]`` of one query block; ignored items sink to the end."""
  d = distances_lib._pairwise(q["x"], gallery["x"], metric)  # pylint: disable=protected-access
  relevant, ignore = relevant_fn(q, gallery)
  if exclude_self_offset is not None:
    columns = jnp.arange(gallery["x"].shape[0])[None, :]
    ignore = ignore | (columns == q["index"][:, None])
  d = jnp.where(ignore, jnp.inf, d)
  order = jnp.argsort(d, axis=-1, stable=True)
  return jnp.take_along_axis(relevant & ~ignore, order, axis=-1)


def _scores_from_ranking(rel: jax.Array, ks: tuple[int, ...]) -> dict[str, jax.Array]:
  relf = rel.astype(jnp.float32)
  count = jnp.sum(relf, axis=-1)                               # R
  ranks = jnp.arange(1, rel.shape[-1] + 1, dtype=jnp.float32)
  hits = jnp.cumsum(relf, axis=-1)
  precision_at = hits / ranks
  within_r = ranks[None, :] <= count[:, None]
  safe_r = jnp.maximum(count, 1)
  first = jnp.argmax(rel, axis=-1).astype(jnp.float32) + 1
  out = {
      "precision_at_1": relf[:, 0],
      "r_precision": jnp.sum(relf * within_r, -1) / safe_r,
      "map_at_r": jnp.sum(relf * precision_at * within_r, -1) / safe_r,
      "mean_average_precision": jnp.sum(relf * precision_at, -1) / safe_r,
      "mrr": jnp.where(count > 0, 1.0 / first, 0.0),
  }
  for k in ks:
    out[f"recall_at_{k}"] = jnp.any(rel[:, :k], axis=-1).astype(jnp.float32)
  out["_has_relevant"] = count > 0
  return out


def _average(per_query: dict[str, jax.Array]) -> dict[str, float]:
  valid = np.asarray(per_query.pop("_has_relevant"))
  n = max(int(valid.sum()), 1)
  result = {k: float(np.asarray(v, np.float64)[valid].sum() / n)
            for k, v in per_query.items()}
  result["num_queries"] = int(valid.sum())
  return result


@functools.partial(jax.jit, static_argnames=("metric", "ks", "chunk_size", "same_set",
                                             "reid"))
def _per_query(queries, gallery, *, metric, ks, chunk_size, same_set, reid):
  def relevant_fn(q, g):
    same = q["label"][:, None] == g["label"][None, :]
    ignore = ~g["where"][None, :] | jnp.zeros_like(same)
    if reid:   # Market-1501 protocol: same id + same camera and junk (-1) are ignored
      ignore = ignore | (same & (q["camera"][:, None] == g["camera"][None, :]))
      ignore = ignore | (g["label"][None, :] == -1)
    return same, ignore

  def block(q):
    rel = _ranked_relevance(q, gallery, relevant_fn, metric, 0 if same_set else None)
    return _scores_from_ranking(rel, ks)

  return _chunked(lambda *a: block(dict(zip(sorted(queries), a))), chunk_size,
                  *[queries[k] for k in sorted(queries)])


def retrieval_metrics(embeddings, labels, *, gallery_embeddings=None, gallery_labels=None,
                      metric: str = "euclidean", ks: tuple[int, ...] = (1, 2, 4, 8),
                      chunk_size: int = 256) -> dict[str, float]:
  r"""Precision@1, recall@K, R-precision, MAP@R, mAP and MRR of k-NN retrieval.

  With no gallery, every sample queries all the others (leave-one-out).

  Args:
    embeddings: ``[queries, dim]`` query embeddings.
    labels: ``[queries]`` integer labels.
    gallery_embeddings: optional ``[gallery, dim]``; default: the queries.
    gallery_labels: ``[gallery]`` labels of the gallery.
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    ks: the K of recall@K (static).
    chunk_size: queries ranked at once (memory O(chunk_size · gallery)).

  Returns:
    A dict of Python floats (and ``num_queries``, the queries with ≥ 1 relevant item).

  Example:
    >>> import numpy as np
    >>> import metric_learning as ml
    >>> x = np.array([[0.0], [0.1], [1.0], [1.2], [0.15]])
    >>> m = ml.metrics.retrieval_metrics(x, np.array([0, 0, 1, 1, 1]))
    >>> m["precision_at_1"], round(m["map_at_r"], 4)
    (0.6, 0.6)
  """
  _validation.choice(metric, "metric", distances_lib.ALL_METRICS)
  x = np.asarray(_validation.float_matrix(embeddings, "embeddings"), np.float32)
  y = np.asarray(_validation.int_vector(labels, x.shape[0], "labels"))
  same_set = gallery_embeddings is None
  if same_set:
    gx, gy = x, y
  else:
    gx = np.asarray(_validation.float_matrix(gallery_embeddings, "gallery_embeddings"),
                    np.float32)
    _validation.same_dim(x, gx, "embeddings", "gallery_embeddings")
    gy = np.asarray(_validation.int_vector(gallery_labels, gx.shape[0], "gallery_labels",
                                           "gallery_embeddings"))
  queries = {"x": x, "label": y, "index": np.arange(x.shape[0])}
  gallery = {"x": gx, "label": gy, "where": np.ones(gx.shape[0], bool)}
  ks = tuple(int(k) for k in ks if k <= gx.shape[0])
  return _average(dict(_per_query(queries, gallery, metric=metric, ks=ks,
                                  chunk_size=chunk_size, same_set=same_set, reid=False)))


def reid_metrics(query_embeddings, query_ids, query_cameras, gallery_embeddings,
                 gallery_ids, gallery_cameras, *, metric: str = "euclidean",
                 ranks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 256
                 ) -> dict[str, float]:
  r"""Re-identification: CMC rank-k and mAP under the Market-1501 protocol.

  For each query, gallery items with the same identity *and* the same camera,
  and junk items (identity -1), are removed from its ranking; identity 0
  (distractors) counts as a wrong match.

  Args:
    query_embeddings: ``[queries, dim]``.
    query_ids, query_cameras: ``[queries]`` integers.
    gallery_embeddings: ``[gallery, dim]``.
    gallery_ids, gallery_cameras: ``[gallery]`` integers.
    metric: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"`` or ``"dot"`` (ranked as -x·y).
    ranks: the k of CMC rank-k.
    chunk_size: queries ranked at once.

  Returns:
    ``{"cmc_rank_1": ..., "mean_average_precision": ..., "num_queries": ...}``.

  Example:
    >>> import numpy as np
    >>> import metric_learning as ml
    >>> q, g = np.array([[0.0]]), np.array([[0.0], [0.1], [0.5]])
    >>> m = ml.metrics.reid_metrics(q, [7], [1], g, [7, 3, 7], [1, 2, 2], ranks=(1, 2))
    >>> m["cmc_rank_1"], m["cmc_rank_2"], m["mean_average_precision"]
    (0.0, 1.0, 0.5)
  """
  _validation.choice(metric, "metric", distances_lib.ALL_METRICS)
  qx = np.asarray(_validation.float_matrix(np.asarray(query_embeddings, np.float32),
                                           "query_embeddings"))
  gx = np.asarray(_validation.float_matrix(np.asarray(gallery_embeddings, np.float32),
                                           "gallery_embeddings"))
  _validation.same_dim(qx, gx, "query_embeddings", "gallery_embeddings")
  vec = lambda v, n, name, of: np.asarray(_validation.int_vector(
      np.asarray(v, np.int32), n, name, of))
  queries = {"x": qx, "label": vec(query_ids, len(qx), "query_ids", "query_embeddings"),
             "camera": vec(query_cameras, len(qx), "query_cameras", "query_embeddings"),
             "index": np.arange(len(qx))}
  gallery = {"x": gx,
             "label": vec(gallery_ids, len(gx), "gallery_ids", "gallery_embeddings"),
             "camera": vec(gallery_cameras, len(gx), "gallery_cameras",
                           "gallery_embeddings"),
             "where": np.ones(len(gx), bool)}
  ks = tuple(int(k) for k in ranks if k <= len(gx))
  per_query = dict(_per_query(queries, gallery, metric=metric, ks=ks,
                              chunk_size=chunk_size, same_set=False, reid=True))
  avg = _average(per_query)
  out = {f"cmc_rank_{k}": avg[f"recall_at_{k}"] for k in ks}
  out["mean_average_precision"] = avg["mean_average_precision"]
  out["num_queries"] = avg["num_queries"]
  return out


def verification_metrics(scores, same, *, far_targets=(1e-3, 1e-2, 1e-1)
                         ) -> dict[str, float]:
  r"""Face-verification style metrics of pair scores (higher = more similar).

  ROC over all thresholds; TAR@FAR (the largest true-accept rate with
  false-accept rate ≤ target); EER (where FAR = FRR, linearly interpolated);
  best-threshold accuracy and that threshold.

  Args:
    scores: ``[pairs]`` similarity scores (e.g. minus the distance).
    same: ``[pairs]`` bool, True for genuine pairs.
    far_targets: FAR values for TAR@FAR.

  Returns:
    A dict of floats, plus ``roc_fpr`` / ``roc_tpr`` lists.

  Example:
    >>> import metric_learning as ml
    >>> m = ml.metrics.verification_metrics([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    >>> m["best_accuracy"], m["eer"]
    (1.0, 0.0)
  """
  s = np.asarray(scores, np.float64).reshape(-1)
  t = np.asarray(same, bool).reshape(-1)
  if s.shape != t.shape:
    raise ValueError(f"scores and same must have the same length; got {s.shape} and "
                     f"{t.shape}.")
  if not t.any() or t.all():
    raise ValueError("same must contain both genuine (True) and impostor (False) pairs.")
  order = np.argsort(-s, kind="stable")
  s, t = s[order], t[order]
  distinct = np.r_[np.diff(s) != 0, True]           # last index of each threshold
  tp = np.cumsum(t)[distinct]
  fp = np.cumsum(~t)[distinct]
  tpr = np.r_[0.0, tp / t.sum()]
  fpr = np.r_[0.0, fp / (~t).sum()]
  thresholds = np.r_[np.inf, s[distinct]]
  out = {}
  for far in far_targets:
    ok = fpr <= far
    out[f"tar_at_far_{far:g}"] = float(tpr[ok].max()) if ok.any() else 0.0
  frr = 1 - tpr
  i = int(np.argmax(fpr >= frr))
  if i == 0:
    eer = float(fpr[0])
  else:   # interpolate between i-1 and i
    a0, a1 = fpr[i - 1] - frr[i - 1], fpr[i] - frr[i]
    w = a0 / (a0 - a1) if a0 != a1 else 0.0
    eer = float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))
  accuracy = (tpr * t.sum() + (1 - fpr) * (~t).sum()) / len(t)
  best = int(np.argmax(accuracy))
  out.update(eer=eer, best_accuracy=float(accuracy[best]),
             best_threshold=float(thresholds[best]), roc_fpr=fpr.tolist(),
             roc_tpr=tpr.tolist())
  return out


def clustering_metrics(embeddings, labels, *, seed: int = 0) -> dict[str, float]:
  """NMI and AMI of k-means clusters (k = number of classes); needs scikit-learn.

  Example:
    >>> import numpy as np
    >>> import metric_learning as ml
    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> ml.metrics.clustering_metrics(x, [3, 3, 8, 8])["nmi"]
    1.0
  """
  from sklearn import cluster  # pylint: disable=import-outside-toplevel
  from sklearn import metrics as sk_metrics
  x = np.asarray(embeddings, np.float64)
  y = np.asarray(labels)
  k = len(np.unique(y))
  pred = cluster.KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
  return {"nmi": float(sk_metrics.normalized_mutual_info_score(y, pred)),
          "ami": float(sk_metrics.adjusted_mutual_info_score(y, pred))}
