"""What a run evaluates and what it leaves behind: evaluators on embedded splits,
the raw-input baseline, plots, the enrollment index and the summary table.

Shared by the trainer (``experiments/train.py``) and the eval-only tool
(``experiments/tools/evaluate.py``). Splits are
:class:`metric_learning.data.sources.Source` objects, so arrays and image files
are evaluated by the same lines.
"""

from __future__ import annotations

from typing import Callable
from typing import Mapping

import numpy as np

from experiments.config import ConfigError
import metric_learning as ml
from metric_learning import evaluators
from metric_learning import training
from metric_learning.data import sources as sources_lib
from metric_learning.training import plots
from metric_learning.training import rundir

# The metric of each evaluator drawn against the step in plots/curves.png.
HEADLINE_METRICS = ("/map_at_r", "/mean_average_precision", "/lfw_accuracy", "/accuracy_at_1")
# The training curves drawn beside them (logged by the train step's statistics).
TRAINING_CURVES = ("train/loss", "train/active_anchor_fraction", "train/hardest_positive_mean",
                   "train/hardest_negative_mean")


def make_evaluators(config) -> dict[str, evaluators.Evaluator]:
  """``config.evals`` as evaluators, each chosen by its ``name``."""
  out = {}
  for name, spec in dict(config.evals).items():
    spec = dict(spec)
    out[name] = evaluators.create(spec.pop("name"), **spec)
  return out


def label_names(splits: Mapping[str, sources_lib.Source]) -> dict[int, str]:
  """Label → class name over every split (the label when a split has no names)."""
  out = {}
  for s in splits.values():
    names = getattr(s.split, "class_names", None)
    for label in np.unique(s.labels).tolist():
      out[int(label)] = names[label] if names is not None and 0 <= label < len(names) \
          else str(label)
  return out


def raw_pixels(x) -> np.ndarray:
  """The raw-input baseline's "embedding": the flattened pixels in [0, 1]."""
  x = np.asarray(x)
  flat = x.reshape(len(x), -1).astype(np.float32)
  return flat / 255.0 if x.dtype == np.uint8 else flat


def run_evaluators(evals: Mapping[str, evaluators.Evaluator], embed: Callable,
                   splits: Mapping[str, sources_lib.Source], batch_size: int,
                   workers: int = 0) -> tuple[dict, dict]:
  """Every evaluator on the splits it needs, each split embedded once.

  Returns:
    ``(results, embeddings)``: ``{"{eval}/{metric}": value}`` and ``{split: [n, dim]}``.
  """
  needed = sorted({s for ev in evals.values() for s in ev.splits})
  missing = [s for s in needed if s not in splits]
  if missing:
    raise ConfigError(f"config.evals need splits {missing}, which this dataset does not "
                      f"have; its splits are {sorted(splits)}.")
  emb = {s: splits[s].embed(embed, batch_size, workers=workers) for s in needed}
  datasets = {s: src.split for s, src in splits.items()}
  results = {}
  for name, ev in evals.items():
    results.update({f"{name}/{k}": v for k, v in ev.run(emb, datasets).items()})
  return results, emb


def output_splits(embedded: dict) -> list[str]:
  """The splits the plots and the enrollment index show: every split an
  evaluator declared, in the order they were embedded, the training split
  aside unless it is the only one."""
  names = list(embedded)
  return [n for n in names if n != "train"] or names


def _retrieval_grid(name: str, src: sources_lib.Source, emb: np.ndarray):
  """Six random queries of split ``name`` and their nearest neighbours in it."""
  index = ml.index.EmbeddingIndex.create(emb, src.labels)
  n = len(src.labels)
  picks = np.random.default_rng(0).choice(n, size=min(6, n), replace=False)
  k = min(6, n)
  nn, dist = index.search(emb[picks], k=k)
  keep = nn != picks[:, None]              # drop the query itself
  nn = np.stack([row[m][:k - 1] for row, m in zip(nn, keep)])
  dist = np.stack([row[m][:k - 1] for row, m in zip(dist, keep)])
  same = src.labels[nn] == src.labels[picks][:, None]
  shown = np.unique(np.concatenate([picks, nn.ravel()]))   # only these are read
  images = src.images(shown)
  return plots.retrieval_grid(
      images[np.searchsorted(shown, picks)], images, np.searchsorted(shown, nn), same, dist,
      title=f"{name} set: each query, then its {k - 1} nearest in the {name} set "
            "(itself excluded)")


def write_outputs(workdir: str, summary: dict, emb: dict,
                  splits: Mapping[str, sources_lib.Source], history: list[dict],
                  *, draw: bool = True) -> None:
  """Plots, the enrollment index, summary.json (atomically) and the summary table."""
  run = rundir.RunDir(workdir)
  shown = output_splits(emb)
  sets = {k: (emb[k], splits[k].labels) for k in shown}
  names = label_names(splits)
  paths = plots.all_paths(workdir)
  if draw and sets:
    plots.save(plots.embedding_map(sets, class_names=names), paths["embedding_map"])
    plots.save(plots.distance_histograms(sets), paths["distances"])
    headline = sorted({k for row in history for k in row
                       if k.startswith("eval/") and k.endswith(HEADLINE_METRICS)})
    fig = plots.curves(history, [*TRAINING_CURVES, *headline])
    if fig is not None:
      plots.save(fig, paths["curves"])
    last = shown[-1]
    if len(splits[last].input_shape) == 3 and len(splits[last].labels) > 1:   # images
      plots.save(_retrieval_grid(last, splits[last], emb[last]), paths["retrieval_grid"])
  if sets:   # enrollment without retraining: the gallery index of every evaluated class
    gallery = ml.index.EmbeddingIndex.create(
        emb[shown[0]], splits[shown[0]].labels, names=names,
        model=training.model_identity(workdir, summary["steps"]))
    for k in shown[1:]:
      gallery = gallery.add(emb[k], splits[k].labels)
    gallery.save(run.path(rundir.INDEX))
  run.write_json(rundir.SUMMARY, summary)
  print(format_summary(summary))


def format_summary(summary: dict) -> str:
  """The figures of every evaluator, beside the raw-input baseline when present."""
  rows = [(k, v, summary.get(f"raw/{k}")) for k, v in summary.items()
          if "/" in k and not k.startswith("raw/") and isinstance(v, float)]
  width = max([len(k) for k, _, _ in rows] + [6])
  lines = [f"{'metric':<{width}} {'model':>8} {'raw input':>10}"]
  for k, v, r in rows:
    raw = f"{r:>10.4f}" if isinstance(r, float) else f"{'':>10}"
    lines.append(f"{k:<{width}} {v:>8.4f} {raw}")
  lines.append(f"steps {summary['steps']}, wall time {summary['wall_time_s']} s, "
               f"skipped updates {summary['skipped_updates']}, health warnings "
               f"{len(summary['health_warnings'])}"
               + (f", bad image files left out {summary['skipped_bad_files']}"
                  if summary.get("skipped_bad_files") else ""))
  return "\n".join(lines)
