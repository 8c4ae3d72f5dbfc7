"""Figures of a run: embedding map, distance histograms, curves, retrieval grid.

Every function builds and returns a :class:`matplotlib.figure.Figure` through
matplotlib's object API; nothing here imports ``matplotlib.pyplot`` or selects a
backend, so a notebook's inline backend (or any other) is left as it was.
:func:`save` writes a figure as a PNG.

The figures are instances of :class:`InlineFigure`, a ``Figure`` that also knows
how to render itself as a PNG (``_repr_png_``): a figure returned as the last
value of a Jupyter cell is shown inline even though it was never registered with
pyplot (a bare ``Figure`` only shows its text ``repr`` there).

Example:
  >>> from metric_learning.training import plots
  >>> history = [{"step": 0, "train/loss": 1.0}, {"step": 10, "train/loss": 0.25}]
  >>> fig = plots.curves(history, ["train/loss", "eval/unseen/map_at_r"])
  >>> [(ax.get_title(), ax.get_xlabel(), ax.get_yscale()) for ax in fig.axes]
  [('train: loss', 'step', 'log')]
  >>> fig._repr_png_()[:4]
  b'\\x89PNG'
"""

from __future__ import annotations

import io
import math
import os
from typing import Mapping
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from metric_learning.training import rundir

DPI = 100
METRICS = ("euclidean", "sqeuclidean", "cosine")
# Distances are computed on at most this many points per set (n² pairs).
MAX_HISTOGRAM_POINTS = 2000
# Classes beyond this many get colours from a continuous map and no legend.
MAX_LEGEND_CLASSES = 20

_TITLE_SIZE = 12
_LABEL_SIZE = 10
_TICK_SIZE = 9
_SUPTITLE_SIZE = 13
_RIGHT = "#1a9850"
_WRONG = "#d73027"
_QUERY = "#4575b4"
_PRETTY = {"map_at_r": "MAP@R", "nmi": "NMI", "ami": "AMI", "lr": "learning rate"}

SetsType = Mapping[str, tuple[np.ndarray, np.ndarray]]
ClassNames = Mapping[int, str] | Sequence[str] | None


class InlineFigure(Figure):
  """A ``Figure`` that renders itself as a PNG for IPython / Jupyter display."""

  def _repr_png_(self) -> bytes:
    return _png_bytes(self)


def _png_bytes(fig: Figure) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  return buf.getvalue()


def _new_figure(width: float, height: float) -> InlineFigure:
  """An empty figure with an Agg canvas (for saving) and constrained layout."""
  fig = InlineFigure(figsize=(width, height), dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)   # attaches itself as fig.canvas; draws PNGs without pyplot
  return fig


def save(fig: Figure, path: str) -> None:
  """Writes ``fig`` as a PNG at ``DPI`` dots per inch, creating the parent folder.

  Args:
    fig: a figure from one of this module's functions (any ``Figure`` works).
    path: the ``.png`` file to write.
  """
  if not isinstance(fig, Figure):
    raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}.")
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=DPI)


def all_paths(workdir: str) -> dict[str, str]:
  """The PNG path of each figure of a run: ``WORKDIR/plots/NAME.png``."""
  names = ("embedding_map", "distances", "curves", "retrieval_grid")
  return {n: rundir.RunDir(workdir).path(rundir.PLOTS, f"{n}.png") for n in names}


def _check_sets(sets: SetsType) -> list[tuple[str, np.ndarray, np.ndarray]]:
  if not isinstance(sets, Mapping) or not sets:
    raise ValueError("sets must be a non-empty dict {name: (embeddings [n, d], labels [n])}; "
                     f"got {sets!r:.80}.")
  out = []
  for name, pair in sets.items():
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise ValueError(f"sets[{name!r}] must be a pair (embeddings [n, d], labels [n]).")
    emb, labels = np.asarray(pair[0], np.float64), np.asarray(pair[1])
    if emb.ndim != 2 or labels.shape != emb.shape[:1]:
      raise ValueError(f"sets[{name!r}]: embeddings must be [n, d] and labels [n]; got "
                       f"shapes {emb.shape} and {labels.shape}.")
    out.append((str(name), emb, labels))
  return out


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The first two principal coordinates ``[n, 2]`` and their variance fractions ``[2]``."""
  x = x - x.mean(0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  xy, var = np.zeros((len(x), 2)), np.zeros(2)
  m = min(2, len(s))
  xy[:, :m] = x @ vt[:m].T
  total = float((s ** 2).sum())
  if total > 0:
    var[:m] = s[:m] ** 2 / total
  return xy, var


def _class_colours(labels: np.ndarray) -> dict:
  """One colour per class, the same in every panel: tab10/tab20, else a continuous map."""
  n = len(labels)
  if n <= 10:
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(i) for i in range(n)]
  elif n <= 20:
    cmap = matplotlib.colormaps["tab20"]
    colours = [cmap(i) for i in range(n)]
  else:
    cmap = matplotlib.colormaps["turbo"]
    colours = [cmap(v) for v in np.linspace(0.05, 0.95, n)]
  return {label: c for label, c in zip(labels.tolist(), colours)}


def _class_name(label, class_names: ClassNames) -> str:
  if class_names is None:
    return str(label)
  if isinstance(class_names, Mapping):
    return str(class_names.get(label, label))
  return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _style(ax) -> None:
  ax.tick_params(labelsize=_TICK_SIZE)
  ax.grid(alpha=0.3, linewidth=0.6)


def embedding_map(sets: SetsType, *, class_names: ClassNames = None) -> InlineFigure:
  """One scatter per set of its embeddings on their first two principal axes.

  Points are coloured by class, with the same colour for a class in every panel;
  the legend names the classes (up to ``MAX_LEGEND_CLASSES`` of them).

  Args:
    sets: ``{name: (embeddings [n, d], labels [n])}``, one panel each, in order.
    class_names: the name of each integer label, as a dict ``{label: name}`` or
      a sequence indexed by label; labels without a name are shown as numbers.

  Returns:
    The figure; axes are labelled "PC 1" / "PC 2" with their explained variance.
  """
  checked = _check_sets(sets)
  classes = np.unique(np.concatenate([labels for _, _, labels in checked]))
  colours = _class_colours(classes)
  legend = len(classes) <= MAX_LEGEND_CLASSES
  fig = _new_figure(5.4 * len(checked) + (1.6 if legend else 0.0), 4.8)
  axes = fig.subplots(1, len(checked), squeeze=False)[0]
  for ax, (name, emb, labels) in zip(axes, checked):
    finite = np.isfinite(emb).all(1)
    emb, labels = emb[finite], labels[finite]
    dropped = f", {int((~finite).sum())} non-finite dropped" if not finite.all() else ""
    ax.set_title(f"{name}: {len(labels)} points, {len(np.unique(labels))} classes{dropped}",
                 fontsize=_TITLE_SIZE)
    if len(labels) == 0:
      ax.text(0.5, 0.5, "no finite embeddings", ha="center", va="center",
              transform=ax.transAxes, fontsize=_LABEL_SIZE)
      ax.set_xlabel("PC 1", fontsize=_LABEL_SIZE)
      ax.set_ylabel("PC 2", fontsize=_LABEL_SIZE)
      continue
    xy, var = _pca2(emb)
    size = float(np.clip(4000 / len(labels), 4, 36))
    for label in np.unique(labels).tolist():
      at = labels == label
      ax.scatter(xy[at, 0], xy[at, 1], s=size, color=colours[label], alpha=0.8,
                 linewidths=0, label=_class_name(label, class_names))
    ax.set_xlabel(f"PC 1 ({var[0]:.0%} of variance)", fontsize=_LABEL_SIZE)
    ax.set_ylabel(f"PC 2 ({var[1]:.0%} of variance)", fontsize=_LABEL_SIZE)
    _style(ax)
  if legend:
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7,
                      color=colours[c], label=_class_name(c, class_names))
               for c in classes.tolist()]
    fig.legend(handles=handles, title="class", loc="outside right center",
               fontsize=_TICK_SIZE, title_fontsize=_LABEL_SIZE, frameon=False)
  note = "" if legend else f"\n{len(classes)} classes, told apart by colour only (no legend)"
  fig.suptitle(f"Embeddings on their first two principal components{note}",
               fontsize=_SUPTITLE_SIZE)
  return fig


def _pairwise_distances(x: np.ndarray, metric: str) -> np.ndarray:
  """``[n, n]`` distances in float64 numpy (plots stay off the accelerator)."""
  if metric == "cosine":
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / np.where(norm > 0, norm, 1.0)
    return np.clip(1.0 - u @ u.T, 0.0, 2.0)
  sq = np.maximum((x * x).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * x @ x.T, 0.0)
  return sq if metric == "sqeuclidean" else np.sqrt(sq)


_METRIC_LABEL = {"euclidean": "euclidean distance", "sqeuclidean": "squared euclidean distance",
                 "cosine": "cosine distance (1 − cos)"}


def distance_histograms(sets: SetsType, *, metric: str = "euclidean",
                        seed: int = 0) -> InlineFigure:
  """Per set, the distributions of positive-pair and negative-pair distances.

  A well-trained embedding separates the two; their overlap is where retrieval
  fails. Sets with more than ``MAX_HISTOGRAM_POINTS`` points are subsampled.

  Args:
    sets: ``{name: (embeddings [n, d], labels [n])}``, one panel each, in order.
    metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
    seed: the subsampling seed.

  Returns:
    The figure; x is labelled with the metric, y "density".
  """
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))}; got {metric!r}.")
  checked = _check_sets(sets)
  fig = _new_figure(5.4 * len(checked), 4.2)
  axes = fig.subplots(1, len(checked), squeeze=False)[0]
  rng = np.random.default_rng(seed)
  for ax, (name, emb, labels) in zip(axes, checked):
    keep = np.flatnonzero(np.isfinite(emb).all(1))
    note = ""
    if len(keep) > MAX_HISTOGRAM_POINTS:
      note = f", {MAX_HISTOGRAM_POINTS} of {len(keep)} points"
      keep = np.sort(rng.choice(keep, MAX_HISTOGRAM_POINTS, replace=False))
    d = _pairwise_distances(emb[keep], metric)
    same = labels[keep][:, None] == labels[keep][None, :]
    upper = np.triu(np.ones_like(same), 1)
    pos, neg = d[same & upper], d[~same & upper]
    ax.set_title(f"{name}{note}", fontsize=_TITLE_SIZE)
    ax.set_xlabel(_METRIC_LABEL[metric], fontsize=_LABEL_SIZE)
    ax.set_ylabel("density", fontsize=_LABEL_SIZE)
    _style(ax)
    if len(pos) + len(neg) == 0:
      ax.text(0.5, 0.5, "fewer than two finite points", ha="center", va="center",
              transform=ax.transAxes, fontsize=_LABEL_SIZE)
      continue
    bins = np.histogram_bin_edges(np.concatenate([pos, neg]), bins=50)
    for values, what, colour in ((pos, "positive", _RIGHT), (neg, "negative", _WRONG)):
      if len(values) == 0:
        continue
      median = float(np.median(values))
      ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour,
              label=f"{what} pairs (n={len(values)}, median {median:.3g})")
      ax.axvline(median, color=colour, linestyle="--", linewidth=1.2)
    ax.legend(fontsize=_TICK_SIZE)
  fig.suptitle("Distances of same-class (positive) and different-class (negative) pairs",
               fontsize=_SUPTITLE_SIZE)
  return fig


def _readable(key: str) -> str:
  """``"eval/unseen/map_at_r"`` -> ``"eval / unseen: MAP@R"``."""
  *scope, name = key.split("/")
  name = _PRETTY.get(name, name.replace("_", " "))
  return f"{' / '.join(scope)}: {name}" if scope else name


def curves(history: Sequence[Mapping], keys: Sequence[str]) -> InlineFigure | None:
  """Each logged value against the step, one panel per key found in the history.

  Keys whose name contains "loss" get a log-scale y axis when all their values are
  positive; non-finite values are left out.

  Args:
    history: logged rows, each ``{"step": int, key: value, ...}``.
    keys: the values to draw, in panel order; keys never logged are skipped.

  Returns:
    The figure, or None when no key occurs in the history.
  """
  series = {}
  for key in keys:
    pts = sorted((float(row["step"]), float(row[key])) for row in history
                 if key in row and "step" in row and _is_number(row[key]))
    if pts:
      series[key] = np.asarray(pts)
  if not series:
    return None
  cols = min(3, len(series))
  rows = math.ceil(len(series) / cols)
  fig = _new_figure(4.6 * cols, 3.4 * rows)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax, (key, pts) in zip(axes, series.items()):
    pts = pts[np.isfinite(pts).all(1)]
    ax.plot(pts[:, 0], pts[:, 1], marker="o" if len(pts) < 30 else None, markersize=4,
            linewidth=1.5, color=_QUERY)
    ax.set_title(_readable(key), fontsize=_TITLE_SIZE)
    ax.set_xlabel("step", fontsize=_LABEL_SIZE)
    if "loss" in key and len(pts) and (pts[:, 1] > 0).all():
      ax.set_yscale("log")
    _style(ax)
  for ax in axes[len(series):]:
    ax.set_visible(False)
  return fig


def _is_number(value) -> bool:
  try:
    float(value)
  except (TypeError, ValueError):
    return False
  return True


def _as_image(im: np.ndarray) -> tuple[np.ndarray, str | None]:
  """An image ready for imshow in [0, 1], and its colour map (gray for one channel)."""
  im = np.asarray(im, np.float64)
  if im.ndim == 3 and im.shape[-1] == 1:
    im = im[..., 0]
  lo, hi = float(np.nanmin(im)), float(np.nanmax(im))
  if lo < 0 or hi > 1:                  # not in the [0, 1] of data.Dataset: rescale
    im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)
  return im, ("gray" if im.ndim == 2 else None)


def _frame(ax, colour: str, width: float) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_edgecolor(colour)
    spine.set_linewidth(width)


def retrieval_grid(queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray,
                   correct: np.ndarray, distances: np.ndarray, *, title: str
                   ) -> InlineFigure:
  """Rows of a query image followed by its nearest gallery images.

  Each neighbour is framed green and titled "✓ right" when it has the query's
  class, framed red and titled "✗ wrong" otherwise; its distance is printed under it.

  Args:
    queries: query images ``[n, h, w, c]`` (or ``[n, h, w]``), values in [0, 1].
    gallery: gallery images ``[m, h, w, c]``.
    neighbours: ``[n, k]`` gallery indices of each query's neighbours, nearest first.
    correct: ``[n, k]`` bool, whether each neighbour has the query's class.
    distances: ``[n, k]`` query-to-neighbour distances.
    title: what is shown, e.g. "unseen classes: query → 5 nearest in the same set
      (itself excluded)"; the figure's title.

  Returns:
    The figure: ``n`` rows of ``k + 1`` images.
  """
  queries, gallery = np.asarray(queries), np.asarray(gallery)
  neighbours, correct = np.asarray(neighbours), np.asarray(correct, bool)
  distances = np.asarray(distances, np.float64)
  if neighbours.ndim != 2 or 0 in neighbours.shape:
    raise ValueError(f"neighbours must be a non-empty [n, k] index array; got shape "
                     f"{neighbours.shape}.")
  n, k = neighbours.shape
  for arr, arg in ((correct, "correct"), (distances, "distances")):
    if arr.shape != (n, k):
      raise ValueError(f"{arg} must have the shape of neighbours {(n, k)}; got {arr.shape}.")
  if len(queries) != n:
    raise ValueError(f"queries must hold one image per row of neighbours ({n}); got "
                     f"shape {queries.shape}.")
  if not np.issubdtype(neighbours.dtype, np.integer) or (
      (neighbours < 0) | (neighbours >= len(gallery))).any():
    raise ValueError(f"neighbours must be integer indices into gallery (0..{len(gallery) - 1});"
                     f" got {neighbours.dtype} in [{neighbours.min()}, {neighbours.max()}].")
  cell = 1.55
  fig = _new_figure(cell * (k + 1) + 0.3, cell * 1.25 * n + 0.7)
  axes = fig.subplots(n, k + 1, squeeze=False)
  for i in range(n):
    ax = axes[i, 0]
    im, cmap = _as_image(queries[i])
    ax.imshow(im, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    _frame(ax, _QUERY, 3.0)
    ax.set_title("query", fontsize=_LABEL_SIZE, color=_QUERY, fontweight="bold")
    for j in range(k):
      ax = axes[i, j + 1]
      im, cmap = _as_image(gallery[neighbours[i, j]])
      ax.imshow(im, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
      colour = _RIGHT if correct[i, j] else _WRONG
      _frame(ax, colour, 3.0)
      ax.set_title(f"#{j + 1} {'✓ right' if correct[i, j] else '✗ wrong'}",
                   fontsize=_LABEL_SIZE, color=colour)
      ax.set_xlabel(f"d = {distances[i, j]:.3f}", fontsize=_TICK_SIZE, labelpad=2)
  right = int(correct.sum())
  fig.suptitle(f"{title}\n{right} of {correct.size} neighbours right "
               f"({right / correct.size:.0%})", fontsize=_SUPTITLE_SIZE - 1)
  return fig
