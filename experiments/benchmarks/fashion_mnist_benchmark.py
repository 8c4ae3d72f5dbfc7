r"""Fashion-MNIST retrieval: our recipe against pytorch-metric-learning's batch-hard and raw pixels.

Protocol (``experiments/configs/fashion_mnist.py``): all 70,000 images of the
IDX files; classes 0-4 of the training file train, the same classes of the
official test file (t10k) are the ``seen`` held-out set, and every image of
classes 5-9 (both files, 35,000) is ``unseen``. Each query retrieves from its
own split, itself excluded (MAP@R, R-precision, P@1:
:func:`metric_learning.metrics.retrieval_metrics`).

Three methods, each evaluated by our evaluators on its embeddings:

* ``ours`` — the config's recipe, trained by ``experiments.train`` per seed;
* ``pml``  — when ``torch`` and ``pytorch_metric_learning`` import: the same CNN
  (widths, BatchNorm, head BatchNorm, embedding size, L2 normalisation) written
  in PyTorch, trained with PML's ``BatchHardMiner`` + ``TripletMarginLoss(margin=0.2)``
  and ``torch.optim.Adam(lr=1e-3)`` for the same number of steps on the very
  same P×K batches (our sampler and augmentation, same seed); PML's recipe
  as the issue measured it — no warm-up, no schedule;
* ``raw pixels`` — the flattened pixels (no training, one value), ranked by
  euclidean distance and L2-normalised;
* ``init`` (not run by default) — the config's model at initialisation: its pooled
  backbone features (ImageNet's, with ``--config.model.weights``), both rankings.

The table gives the mean over seeds ± the half-width of a 95 % t-interval
(``t_{0.975, n-1} · s / √n``), writes ``--out`` (JSON, every seed's numbers
and the training health: the smallest mean hardest-negative distance seen at
a log step, and the trainer's health warnings) and ``--plot`` (PNG).

  python -m experiments.benchmarks.fashion_mnist_benchmark --seeds=0,1,2 \
      --out=fashion_mnist_benchmark.json --plot=fashion_mnist_benchmark.png

``--config=FILE`` picks another recipe and ``--config.FIELD=VALUE`` changes one of
its fields, as ``experiments.main`` reads them (``experiments.cli``).

Run it with an interpreter that has torch and pytorch-metric-learning for the
``pml`` rows (e.g. a separate venv with this package installed ``-e``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.benchmarks import harness

_PATH = flags.DEFINE_string("path", "", "Folder of the four IDX files (default: the config's, "
                            "/usr/share/datasets/fashion-mnist).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (model init, batches).")
_STEPS = flags.DEFINE_integer("steps", 0, "Training steps (0: the config's num_steps).")
_METHODS = flags.DEFINE_list("methods", ["ours", "pml", "raw"], "Methods: ours, pml (when torch "
                             "and pytorch_metric_learning import), raw (raw pixels), init (the "
                             "config's model at initialisation: pooled features, e.g. ImageNet's).")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where our runs go (default: a temporary folder).")
_OUT = flags.DEFINE_string("out", "fashion_mnist_benchmark.json", "JSON output path.")
_PLOT = flags.DEFINE_string("plot", "", "PNG bar plot path ('' for none).")
CONFIG = "experiments/configs/fashion_mnist.py"

METRICS = ("map_at_r", "precision_at_1", "r_precision")
SPLITS = ("seen", "unseen")
PML_MARGIN, PML_LEARNING_RATE = 0.2, 1e-3


def _config():
  from experiments import cli  # pylint: disable=import-outside-toplevel
  c = cli.config_from_flags()
  if _PATH.value:
    c.data.path = _PATH.value
  if _STEPS.value:
    c.num_steps = _STEPS.value
  c.evals = {s: dict(name="retrieval", split=s) for s in SPLITS}
  c.eval_every = 0
  c.checkpoint_every = c.num_steps
  c.raw_baseline = c.plots = c.progress_bar = False
  return c


def _scores(results: dict) -> dict:
  return {f"{s}/{m}": float(results[f"{s}/{m}"]) for s in SPLITS for m in METRICS}


def interval(values) -> tuple[float, float | None]:
  """(mean, half-width of the 95 % t-interval); no interval for one value."""
  mean = statistics.fmean(values)
  if len(values) < 2:
    return mean, None
  from scipy import stats  # pylint: disable=import-outside-toplevel
  half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
  return mean, float(half)


# ----------------------------------------------------------------- ours ---- #

def _ours(config, seed: int, workdir: str) -> dict:
  from experiments import train  # pylint: disable=import-outside-toplevel
  c = config.copy_and_resolve_references()
  c.seed = seed
  start = time.time()
  summary = train.train_and_evaluate(c, workdir, fresh=True)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  negatives = [r["train/hardest_negative_mean"] for r in rows
               if "train/hardest_negative_mean" in r]
  return {"seed": seed, **_scores(summary), "seconds": round(time.time() - start, 1),
          "min_hardest_negative_mean": min(negatives), "final_hardest_negative_mean":
          negatives[-1], "health_warnings": summary["health_warnings"]}


# ----------------------------------------------------------------- PML ----- #

def _pml_available() -> str | None:
  """None when torch and pytorch_metric_learning import, else why not."""
  try:
    import pytorch_metric_learning  # pylint: disable=import-outside-toplevel,unused-import
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    return f"{type(e).__name__}: {e}"
  return None


def torch_cnn(model: dict, channels: int):
  """Our ``cnn`` (``metric_learning.models.CNN`` + ``EmbeddingHead``) in PyTorch:
  [Conv 3×3 (same padding) → BatchNorm → ReLU] per width, 2×2 average pooling
  between, global average, [BatchNorm →] Linear [→ L2 normalise]. PyTorch's own
  initialisation; BatchNorm momentum 0.01 (Flax's 0.99)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel

  widths = (channels, *model["widths"])
  if model.get("head_hidden"):
    raise ValueError("torch_cnn has no head_hidden layers.")

  class CNN(nn.Module):
    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
      self.norms = nn.ModuleList(nn.BatchNorm2d(b, momentum=0.01) for b in widths[1:])
      self.head_norm = nn.BatchNorm1d(widths[-1], momentum=0.01) \
          if model.get("head_batch_norm") else nn.Identity()
      self.linear = nn.Linear(widths[-1], model["embedding_dim"])

    def forward(self, x):
      for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
        x = F.relu(norm(conv(x)))
        if i < len(self.convs) - 1:
          x = F.avg_pool2d(x, 2, ceil_mode=True)
      x = self.linear(self.head_norm(x.mean((2, 3))))
      return F.normalize(x, dim=1) if model.get("normalize") else x

  del torch
  return CNN()


def _pml(config, seed: int, splits, sampler) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from pytorch_metric_learning import losses  # pylint: disable=import-outside-toplevel
  from pytorch_metric_learning import miners  # pylint: disable=import-outside-toplevel

  from experiments import evaluation  # pylint: disable=import-outside-toplevel

  torch.manual_seed(seed)
  train = splits["train"]
  net = torch_cnn(dict(config.model), train.input_shape[-1])
  opt = torch.optim.Adam(net.parameters(), lr=PML_LEARNING_RATE)
  miner, loss_fn = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=PML_MARGIN)
  start = time.time()
  negatives = []
  net.train()
  for step, batch in enumerate(train.train_batches(sampler, seed=seed, start_step=0,
                                                   num_steps=config.num_steps), start=1):
    x = torch.from_numpy(np.ascontiguousarray(batch["inputs"], np.float32)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(batch["labels"], np.int64))
    e = net(x)
    triplets = miner(e, y)
    loss = loss_fn(e, y, triplets)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % config.log_every == 0 or step == config.num_steps:
      with torch.no_grad():   # the mined hardest negatives' mean distance, as our health stat
        a, _, n = triplets
        d = torch.nn.functional.normalize(e, dim=1)
        negatives.append(float((d[a] - d[n]).norm(dim=1).mean()) if len(a) else float("nan"))
  net.eval()

  def embed(inputs):
    with torch.no_grad():
      x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).permute(0, 3, 1, 2)
      return net(x).numpy()

  results, _ = evaluation.run_evaluators(evaluation.make_evaluators(config), embed, splits,
                                         config.eval_batch_size)
  return {"seed": seed, **_scores(results), "seconds": round(time.time() - start, 1),
          "min_hardest_negative_mean": min(negatives),
          "final_hardest_negative_mean": negatives[-1], "torch": torch.__version__}


# ----------------------------------------------------------------- main ---- #

def _ranked(datasets, transform) -> tuple[dict, dict]:
  """Scores of ``transform(inputs)`` on each split with no training, ranked by
  euclidean distance and L2-normalised
  (:func:`experiments.reality_check.ranking_scores`)."""
  from experiments import reality_check  # pylint: disable=import-outside-toplevel
  rows = ({"seed": None}, {"seed": None})
  for s in SPLITS:
    for row, scores in zip(rows, reality_check.ranking_scores(transform(datasets[s].inputs),
                                                              datasets[s].labels)):
      row.update({f"{s}/{m}": v for m, v in scores.items()})
  return rows


def _summaries(runs: list[dict]) -> dict:
  return {k: interval([r[k] for r in runs]) for k in _scores_keys()}


def _scores_keys():
  return [f"{s}/{m}" for s in SPLITS for m in METRICS]


def _plot(path: str, methods: dict, trained):
  """Writes the bar chart of every method's scores; returns its Figure."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  keys = _scores_keys()
  fig = Figure(figsize=(9.5, 3.6))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / len(methods)
  for i, (name, summary) in enumerate(methods.items()):
    means = [summary[k][0] for k in keys]
    errors = [summary[k][1] or 0.0 for k in keys]
    ax.bar([j + i * width for j in range(len(keys))], means, width, yerr=errors, capsize=3,
           label=name)
  ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
  ax.set_xticklabels([k.replace("/", "\n") for k in keys], fontsize=8)
  ax.set_ylim(0, 1)
  ax.set_title(f"classes {', '.join(map(str, trained))} trained: mean and 95 % interval "
               "over seeds")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # clear of the bars
  ax.grid(True, axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print(f"wrote {path}")
  return fig


def main(argv):
  del argv
  from experiments import config as config_lib  # pylint: disable=import-outside-toplevel
  from experiments import evaluation  # pylint: disable=import-outside-toplevel
  from metric_learning.data import registry as data_registry  # pylint: disable=import-outside-toplevel
  from metric_learning.data import sampler as sampler_lib  # pylint: disable=import-outside-toplevel
  from metric_learning.data import sources  # pylint: disable=import-outside-toplevel

  config = _config()
  try:
    config_lib.validate(config)      # a mistaken field ends here, in one line, before any run
  except config_lib.ConfigError as e:
    from experiments import cli  # pylint: disable=import-outside-toplevel
    cli.fail(str(e))
  seeds = [int(s) for s in _SEEDS.value]
  base = _WORKDIR.value or tempfile.mkdtemp(prefix="fashion_mnist_benchmark_")
  datasets = data_registry.create(config.data.name, **config_lib.part_settings(config.data))
  splits = {k: sources.source(v, config.augment) for k, v in datasets.items()}
  sizes = {k: len(v.labels) for k, v in splits.items()}
  print(f"splits {sizes}, {config.num_steps} steps, seeds {seeds}", flush=True)

  unknown = set(_METHODS.value) - {"ours", "pml", "raw", "init"}
  if unknown:
    raise app.UsageError(f"--methods: unknown {sorted(unknown)}; the methods are ours, pml, raw, "
                         "init.")
  runs = {}
  if "ours" in _METHODS.value:
    runs["ours"] = [_ours(config, s, os.path.join(base, f"ours-seed{s}")) for s in seeds]
  note = _pml_available() if "pml" in _METHODS.value else "not in --methods"
  if note is None:
    runs["pml"] = []
    for s in seeds:
      sampler = sampler_lib.PKSampler(splits["train"].labels, p=config.sampler.p,
                                      k=config.sampler.k, seed=s)
      runs["pml"].append(_pml(config, s, splits, sampler))
  if "raw" in _METHODS.value:
    raw, _ = evaluation.run_evaluators(evaluation.make_evaluators(config),
                                       evaluation.raw_pixels, splits, config.eval_batch_size)
    runs["raw pixels"] = [{"seed": None, **_scores(raw)}]
    runs["raw pixels, L2-normalised"] = [_ranked(datasets, lambda x: x)[1]]
  if "init" in _METHODS.value:
    from experiments import reality_check  # pylint: disable=import-outside-toplevel
    name = f"{config.model.name} features at initialisation"
    rows = _ranked(datasets, lambda x: reality_check.initial_features(config, x))
    runs[name], runs[f"{name}, L2-normalised"] = ([r] for r in rows)

  methods = {name: _summaries(r) for name, r in runs.items()}
  keys = _scores_keys()

  def cell(mean, half):
    return f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"

  print(f"\nFashion-MNIST, {config.num_steps} steps, {len(seeds)} seeds, "
        "mean ± 95 % t-interval half-width")
  print(harness.table([("method", "<11")] + [(k, ">17") for k in keys],
                      [[name] + [cell(*m[k]) for k in keys] for name, m in methods.items()]))
  if note is not None:
    print(f"  (pml rows skipped: {note})")
  for name in ("ours", "pml"):
    for r in runs.get(name, []):
      print(f"  {name} seed {r['seed']}: smallest mean hardest-negative distance "
            f"{r['min_hardest_negative_mean']:.3f} (final {r['final_hardest_negative_mean']:.3f})"
            + (f", health warnings {len(r['health_warnings'])}" if "health_warnings" in r
               else "") + f", {r['seconds']} s")
  meta = {**harness.machine(), "steps": config.num_steps, "seeds": seeds, "splits": sizes,
          "config": config_flags.get_config_filename(flags.FLAGS["config"]),
          "recipe": config.to_dict(), "pml_note": note,
          "pml": {"miner": "BatchHardMiner()", "loss": f"TripletMarginLoss(margin={PML_MARGIN})",
                  "optimizer": f"Adam(lr={PML_LEARNING_RATE})"},
          "loadavg_end": harness.loadavg()}
  harness.write_json(_OUT.value, {"meta": meta, "runs": runs, "summary": {
      name: {k: {"mean": m[k][0], "ci95": m[k][1]} for k in keys}
      for name, m in methods.items()}})
  if _PLOT.value:
    _plot(_PLOT.value, methods, sorted(set(datasets["train"].labels.tolist())))


if __name__ == "__main__":
  from experiments import cli  # pylint: disable=ungrouped-imports
  cli.strip_new_fields()     # before the config flag reads sys.argv (see experiments.cli)
  config_flags.DEFINE_config_file("config", CONFIG, "Our recipe's config file (its get_config()); "
                                  "--config.FIELD=VALUE overrides a field.")
  app.run(main, flags_parser=cli.parse_flags)
