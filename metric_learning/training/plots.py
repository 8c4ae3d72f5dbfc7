"""PNG plots of a run: embedding map, distance histograms, curves, retrieval grid."""

from __future__ import annotations

import os

import numpy as np


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _pca2(x: np.ndarray) -> np.ndarray:
  x = x - x.mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  return x @ vt[:2].T


def embedding_map(path: str, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
  """One PCA scatter per named (embeddings, labels) set, coloured by label."""
  plt = _plt()
  fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5), squeeze=False)
  for ax, (name, (emb, labels)) in zip(axes[0], sets.items()):
    xy = _pca2(np.asarray(emb, np.float64))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8)
    ax.legend(*sc.legend_elements(), fontsize=7, loc="best", title="class")
    ax.set_title(f"{name}: PCA of embeddings")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def distance_histograms(path: str, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
  """Histograms of positive vs negative pair distances per set."""
  plt = _plt()
  fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.5), squeeze=False)
  for ax, (name, (emb, labels)) in zip(axes[0], sets.items()):
    e = np.asarray(emb, np.float64)
    sq = np.maximum((e * e).sum(1)[:, None] + (e * e).sum(1)[None] - 2 * e @ e.T, 0)
    d = np.sqrt(sq)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), 1)
    ax.hist(d[same & upper], bins=50, alpha=0.6, density=True, label="positive pairs")
    ax.hist(d[~same & upper], bins=50, alpha=0.6, density=True, label="negative pairs")
    ax.set_title(f"{name}: pairwise distances")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def curves(path: str, history: list[dict], keys: list[str]) -> None:
  """Each key against step, one panel per key present in the history."""
  plt = _plt()
  keys = [k for k in keys if any(k in row for row in history)]
  if not keys:
    return
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(row["step"], row[key]) for row in history if key in row]
    ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None)
    ax.set_title(key)
    ax.set_xlabel("step")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def retrieval_grid(path: str, queries: np.ndarray, gallery: np.ndarray,
                   neighbours: np.ndarray, correct: np.ndarray) -> None:
  """Rows: a query image, then its top-k gallery images (green = same label)."""
  plt = _plt()
  n, k = neighbours.shape
  fig, axes = plt.subplots(n, k + 1, figsize=(1.2 * (k + 1), 1.2 * n), squeeze=False)
  show = lambda ax, im: ax.imshow(np.squeeze(im), cmap="gray" if im.shape[-1] == 1 else None)
  for i in range(n):
    show(axes[i, 0], queries[i])
    axes[i, 0].set_title("query", fontsize=7)
    for j in range(k):
      ax = axes[i, j + 1]
      show(ax, gallery[neighbours[i, j]])
      for spine in ax.spines.values():
        spine.set_edgecolor("green" if correct[i, j] else "red")
        spine.set_linewidth(2)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def all_paths(workdir: str) -> dict[str, str]:
  names = ("embedding_map", "distances", "curves", "retrieval_grid")
  return {n: os.path.join(workdir, "plots", f"{n}.png") for n in names}
