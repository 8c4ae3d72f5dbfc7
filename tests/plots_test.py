"""Figures built with matplotlib's object API: labels, scales, PNGs, notebook display."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from metric_learning.training import plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = [{"step": s, "train/loss": 2.0 / (1 + s), "train/active_anchor_fraction": 1 - s / 20}
           for s in range(10)] + [{"step": 9, "eval/unseen/map_at_r": 0.4}]


def _sets(seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(3), 10)
  centres = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
  emb = centres[labels] + 0.3 * rng.normal(size=(30, 4))
  return {"seen": (emb[:15], labels[:15]), "unseen": (emb[15:], labels[15:])}


def _texts(fig):
  """Every string drawn on the figure: titles, labels, legends, texts."""
  return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def _check_png(fig, path, min_size=(300, 200)):
  plots.save(fig, path)
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
    pixels = np.asarray(im.convert("L"))
  assert pixels.std() > 5                 # something is drawn, not a blank canvas
  assert os.path.getsize(path) > 10_000


def test_embedding_map_labels_axes_with_variance_and_names_classes(tmp_path):
  fig = plots.embedding_map(_sets(), class_names={0: "albatross", 1: "cardinal"})
  assert isinstance(fig, Figure)
  axes = fig.axes
  assert len(axes) == 2
  for ax in axes:
    assert ax.get_xlabel().startswith("PC 1 (") and "% of variance" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("PC 2 (")
  assert axes[0].get_title().startswith("seen") and axes[1].get_title().startswith("unseen")
  legend = [t.get_text() for t in fig.legends[0].get_texts()]
  assert legend == ["albatross", "cardinal", "2"]          # unnamed labels stay numbers
  # Three well-separated clusters in 4-D: two components carry most of the variance.
  first = float(axes[0].get_xlabel().split("(")[1].split("%")[0])
  assert first > 40
  _check_png(fig, str(tmp_path / "nested" / "embedding_map.png"))
  assert plots.embedding_map(_sets(), class_names=("a", "b", "c")).legends


def test_embedding_map_many_classes_and_degenerate_sets(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.arange(60) % 30
  fig = plots.embedding_map({"many": (rng.normal(size=(60, 3)), labels)})
  assert not fig.legends and any("30 classes" in t for t in _texts(fig))
  emb = rng.normal(size=(4, 1))
  emb[0] = np.nan
  fig = plots.embedding_map({"one-d": (emb, np.array([0, 0, 1, 1]))})
  assert "non-finite" in fig.axes[0].get_title()
  _check_png(fig, str(tmp_path / "degenerate.png"), min_size=(200, 200))
  with pytest.raises(ValueError, match="sets"):
    plots.embedding_map({})
  with pytest.raises(ValueError, match=r"sets\['x'\]"):
    plots.embedding_map({"x": (np.zeros((3, 2)), np.zeros(4))})


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_distance_histograms_name_the_metric(tmp_path, metric):
  fig = plots.distance_histograms(_sets(), metric=metric)
  assert isinstance(fig, Figure) and len(fig.axes) == 2
  for ax in fig.axes:
    assert metric.replace("sqeuclidean", "squared euclidean") in ax.get_xlabel()
    assert ax.get_ylabel() == "density"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("positive pairs (n=") and legend[1].startswith("negative")
  _check_png(fig, str(tmp_path / f"{metric}.png"))


def test_distance_histograms_count_each_pair_once_and_subsample():
  emb = np.array([[0.0], [1.0], [3.0], [6.0]])
  fig = plots.distance_histograms({"toy": (emb, np.array([0, 0, 1, 1]))})
  legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  # Positive pairs (0,1), (2,3): distances 1, 3; negatives: 3, 6, 2, 5.
  assert legend == ["positive pairs (n=2, median 2)", "negative pairs (n=4, median 4)"]
  n = plots.MAX_HISTOGRAM_POINTS + 10
  big = {"big": (np.random.default_rng(0).normal(size=(n, 2)), np.arange(n) % 5)}
  assert "of " + str(n) in plots.distance_histograms(big).axes[0].get_title()
  with pytest.raises(ValueError, match="metric"):
    plots.distance_histograms(_sets(), metric="manhattan")


def test_curves_panels_titles_and_log_scale_for_losses(tmp_path):
  keys = ["train/loss", "train/active_anchor_fraction", "eval/unseen/map_at_r", "not/logged"]
  fig = plots.curves(HISTORY, keys)
  assert isinstance(fig, Figure)
  visible = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in visible] == [
      "train: loss", "train: active anchor fraction", "eval / unseen: MAP@R"]
  assert [ax.get_xlabel() for ax in visible] == ["step"] * 3
  assert [ax.get_yscale() for ax in visible] == ["log", "linear", "linear"]
  x, y = visible[0].lines[0].get_data()
  np.testing.assert_array_equal(x, np.arange(10))
  np.testing.assert_allclose(y, 2.0 / (1 + np.arange(10)))
  _check_png(fig, str(tmp_path / "curves.png"))
  # A loss that reaches zero (or goes negative) stays on a linear axis.
  zero = [{"step": 0, "train/loss": 1.0}, {"step": 1, "train/loss": 0.0}]
  assert plots.curves(zero, ["train/loss"]).axes[0].get_yscale() == "linear"
  # Non-finite and non-numeric values are left out; the rest is drawn.
  odd = [{"step": 0, "x": float("nan")}, {"step": 1, "x": 2.0}, {"step": 2, "x": "n/a"}]
  assert plots.curves(odd, ["x"]).axes[0].lines[0].get_xydata().tolist() == [[1.0, 2.0]]
  assert plots.curves(HISTORY, ["never/logged"]) is None
  assert plots.curves([], ["train/loss"]) is None


def test_retrieval_grid_marks_right_and_wrong_with_distances(tmp_path):
  rng = np.random.default_rng(0)
  gallery = rng.uniform(size=(12, 8, 8, 1)).astype(np.float32)
  neighbours = np.array([[1, 2, 3], [4, 5, 6]])
  correct = np.array([[True, False, True], [False, False, True]])
  distances = np.array([[0.1, 0.25, 0.5], [1.0, 1.5, 2.25]])
  title = "unseen classes: query → 3 nearest in the same set (itself excluded)"
  fig = plots.retrieval_grid(gallery[:2], gallery, neighbours, correct, distances, title=title)
  assert isinstance(fig, Figure)
  assert fig.get_suptitle().startswith(title) and "3 of 6 neighbours right" in fig.get_suptitle()
  axes = np.array(fig.axes).reshape(2, 4)
  assert [ax.get_title() for ax in axes[:, 0]] == ["query", "query"]
  assert [ax.get_title() for ax in axes[0, 1:]] == ["#1 ✓ right", "#2 ✗ wrong", "#3 ✓ right"]
  assert [ax.get_xlabel() for ax in axes[1, 1:]] == ["d = 1.000", "d = 1.500", "d = 2.250"]
  frames = [ax.spines["left"].get_edgecolor() for ax in axes[0, 1:]]
  assert frames[0] == frames[2] != frames[1]
  assert frames[0][1] > frames[0][0] and frames[1][0] > frames[1][1]   # green, red
  shown = axes[0, 2].images[0].get_array()
  np.testing.assert_allclose(shown, gallery[2, ..., 0])
  _check_png(fig, str(tmp_path / "grid.png"), min_size=(400, 200))
  rgb = plots.retrieval_grid(rng.uniform(size=(1, 6, 6, 3)), rng.uniform(size=(3, 6, 6, 3)),
                             np.array([[0, 2]]), np.array([[True, False]]),
                             np.array([[0.5, 0.7]]), title="rgb")
  assert rgb.axes[1].images[0].get_array().shape == (6, 6, 3)
  with pytest.raises(ValueError, match="distances"):
    plots.retrieval_grid(gallery[:2], gallery, neighbours, correct, distances[:, :2], title="t")
  with pytest.raises(ValueError, match="neighbours"):
    plots.retrieval_grid(gallery[:2], gallery, neighbours + 10, correct, distances, title="t")
  with pytest.raises(ValueError, match="queries"):
    plots.retrieval_grid(gallery[:3], gallery, neighbours, correct, distances, title="t")


def test_save_and_all_paths(tmp_path):
  fig = Figure()
  fig.add_subplot().plot([0, 1], [1, 0])
  path = str(tmp_path / "a" / "b" / "plain.png")
  plots.save(fig, path)                    # any Figure, parent folders created
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size == (640, 480)     # default size at dpi 100
  with pytest.raises(TypeError, match="fig"):
    plots.save(None, path)
  paths = plots.all_paths("/run")
  assert paths["curves"] == os.path.join("/run", "plots", "curves.png")
  assert sorted(paths) == ["curves", "distances", "embedding_map", "retrieval_grid"]


@pytest.mark.parametrize("backend", [None, "svg"])
def test_import_and_use_leave_backend_and_pyplot_alone(tmp_path, backend):
  script = f"""
import json, sys
import matplotlib
import numpy as np
before = matplotlib.get_backend(auto_select=False)
from metric_learning.training import plots
h = [{{"step": 0, "train/loss": 1.0}}, {{"step": 1, "train/loss": 0.5}}]
plots.save(plots.curves(h, ["train/loss"]), {str(tmp_path / "c.png")!r})
plots.curves(h, ["train/loss"])._repr_png_()
print(json.dumps([before, matplotlib.get_backend(auto_select=False),
                  "matplotlib.pyplot" in sys.modules]))
"""
  env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
  if backend:
    env["MPLBACKEND"] = backend
  out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  before, after, pyplot = json.loads(out.strip().splitlines()[-1])
  assert before == after == backend and not pyplot


def test_returned_figure_displays_inline_in_a_notebook(monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.delenv("MPLBACKEND", raising=False)    # the kernel picks its own (inline)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  history = [{"step": 0, "train/loss": 1.0}, {"step": 1, "train/loss": 0.5}]
  cells = [
      "from metric_learning.training import plots",
      f"plots.curves({history!r}, ['train/loss'])",
      # With pyplot and the inline backend active too, the figure is still shown once.
      f"import matplotlib.pyplot as plt\nplots.curves({history!r}, ['train/loss'])",
  ]
  book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
  nbclient.NotebookClient(book, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  for cell in book.cells[1:]:
    pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, cell.outputs
    assert len(pngs[0]["data"]["image/png"]) > 1000
