r"""A metric-learning reality check as one command (Musgrave, Belongie, Lim, ECCV 2020).

  python -m experiments.reality_check --config=experiments/configs/default.py \
      --losses=batch_hard_triplet_loss,multi_similarity_loss --workdir=workdir/rc

The protocol of "A Metric Learning Reality Check", per loss:

1. **Class-disjoint cross-validation.** The classes of the config's training
   split are shuffled (``--fold_seed``) into ``--folds`` groups. A fold trains
   on every sample of the other groups' classes and is scored on its own
   classes (retrieval among themselves, ``--objective``, MAP@R by default):
   validation classes are never trained on, as test classes are not. (A fold
   with fewer training classes than ``sampler.p`` puts all of them in each
   batch, with ``sampler.k`` raised to keep the batch size.)
2. **Hyper-parameter search.** ``--trials`` settings of the loss's search space
   (:data:`SPACES`, or ``--space``) are tried, each scored by its mean over the
   folds: random search, or optuna's TPE when optuna is installed
   (``--search=auto``; ``pip install "metric-learning-jax[tune]"``).
3. **Retraining.** The best setting (highest mean; ties to the earlier trial)
   trains on all training classes once per ``--seeds`` seed.
4. **Test.** Each final model is evaluated on the config's held-out classes
   (``--test_split``); the table gives mean ± 95 % interval (Student's t)
   over seeds. Two baselines use no training: raw pixels, and the config's
   model at initialisation (its pooled backbone features — ImageNet features
   with ``--config.model.weights=...``, random ones otherwise), each ranked by
   euclidean distance and L2-normalised (cosine).

Everything else is the config's: model, optimizer, steps, sampler, augmentation
(``--config.num_steps=300`` etc. apply to every run). Every run is a workdir
under ``--workdir``; a killed sweep, run again with the same command, reuses
finished runs, resumes the interrupted one from its checkpoint and ends with
the same table. ``--workdir`` holds:

==========================  ====================================================
``plan.json``               the settings and folds (a command changing them is refused;
                            other losses, more trials or seeds may be added)
``train_classes.npz``       the training split, in memory datasets only
``LOSS/trial_N/trial.json`` the trial's setting and per-fold scores
``LOSS/trial_N/fold_K/``    one cross-validation run
``LOSS/final_trial_N/seed_S/`` one retraining run of the best trial N
``results.json``            every number of the table
``results.md``              the table (markdown)
``results.png``             test MAP@R per loss with its interval
==========================  ====================================================

Datasets held in memory (``digits``, ``npz``, ``idx``) are supported: the
folds are cut from their training split. Searching the margin of a triplet loss
on image-file datasets would need a file-list fold dataset; those fail with a
message saying so.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import sys
from typing import Any

import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli
from experiments import config as config_lib

# A search dimension: (kind, low, high); kind "uniform", "log" (log-uniform) or "int".
Dimension = tuple[str, float, float]

# Search spaces by loss: dotted config fields (``loss.X`` or a top-level field) →
# dimension. Ranges follow Musgrave et al.'s, narrowed to what our definitions
# take (margins on L2-normalised embeddings, temperatures, proxy learning rates).
SPACES: dict[str, dict[str, Dimension]] = {
    "batch_hard_triplet_loss": {"loss.margin": ("uniform", 0.01, 1.0)},
    "batch_all_triplet_loss": {"loss.margin": ("uniform", 0.01, 1.0)},
    "semi_hard_triplet_loss": {"loss.margin": ("uniform", 0.01, 1.0)},
    "contrastive_loss": {"loss.pos_margin": ("uniform", 0.0, 0.5),
                         "loss.margin": ("uniform", 0.3, 2.0)},
    "multi_similarity_loss": {"loss.alpha": ("log", 0.01, 100.0),
                              "loss.beta": ("log", 0.01, 100.0),
                              "loss.base": ("uniform", 0.0, 1.0)},
    "supcon_loss": {"loss.temperature": ("log", 0.01, 1.0)},
    "ntxent_loss": {"loss.temperature": ("log", 0.01, 1.0)},
    "proxy_anchor_loss": {"loss.margin": ("uniform", 0.0, 0.5),
                          "loss.alpha": ("log", 4.0, 64.0),
                          "loss_lr_scale": ("log", 1.0, 1000.0)},
    "proxy_nca_loss": {"loss_lr_scale": ("log", 1.0, 1000.0)},
    "arcface_loss": {"loss.margin": ("uniform", 0.05, 0.8),
                     "loss.scale": ("log", 4.0, 64.0),
                     "loss_lr_scale": ("log", 1.0, 1000.0)},
    "cosface_loss": {"loss.margin": ("uniform", 0.05, 0.8),
                     "loss.scale": ("log", 4.0, 64.0),
                     "loss_lr_scale": ("log", 1.0, 1000.0)},
}
IN_MEMORY = ("digits", "npz", "idx")
OBJECTIVES = ("map_at_r", "precision_at_1", "r_precision", "mean_average_precision", "mrr")
FORMAT = 1

class SweepError(ValueError):
  """A flag or the workdir is wrong; the message names it."""


# ------------------------------------------------------------------ the plan ---- #

def fold_classes(classes, folds: int, seed: int) -> list[list[int]]:
  """``classes`` shuffled by ``seed`` into ``folds`` disjoint groups of near-equal size."""
  classes = np.asarray(sorted(int(c) for c in classes))
  if not 2 <= folds <= len(classes):
    raise SweepError(f"--folds must be between 2 and the {len(classes)} training classes; "
                     f"got {folds}.")
  order = np.random.default_rng(seed).permutation(classes)
  return [sorted(int(c) for c in group) for group in np.array_split(order, folds)]


def parse_space(specs: list[str], losses: list[str]) -> dict[str, dict[str, Dimension]]:
  """:data:`SPACES` for ``losses``, with ``--space`` replacements."""
  spaces = {name: dict(SPACES.get(name, {})) for name in losses}
  for spec in specs:
    try:
      loss, rest = spec.split(":", 1)
      field, dimension = rest.split("=", 1)
      kind, low, high = dimension.split(":")
      low, high = float(low), float(high)
    except ValueError:
      raise SweepError(f"--space {spec!r}: expected LOSS:FIELD=KIND:LOW:HIGH, e.g. "
                       "batch_hard_triplet_loss:loss.margin=uniform:0.05:0.5.") from None
    if loss not in spaces:
      raise SweepError(f"--space {spec!r}: {loss!r} is not one of --losses {losses}.")
    if kind not in ("uniform", "log", "int") or not low <= high or (kind == "log" and low <= 0):
      raise SweepError(f"--space {spec!r}: KIND must be uniform, log or int with LOW <= HIGH "
                       "(LOW > 0 for log).")
    spaces[loss][field] = (kind, low, high)
  for loss, space in spaces.items():
    if not space:
      raise SweepError(f"--losses: {loss!r} has no search space; give one with "
                       f"--space={loss}:loss.FIELD=KIND:LOW:HIGH (known: {sorted(SPACES)}).")
  return spaces


def check_losses(losses: list[str]) -> None:
  """Every loss is a registry name whose space fields it takes."""
  from metric_learning.losses import registry as loss_registry  # pylint: disable=import-outside-toplevel
  if not losses:
    raise SweepError("--losses is empty; name at least one loss.")
  for name in losses:
    if name not in loss_registry.LOSSES:
      raise SweepError(f"--losses: unknown loss {name!r}; the losses are "
                       f"{', '.join(sorted(loss_registry.LOSSES))}.")


# ---------------------------------------------------------------- the search ---- #

def sample_random(space: dict[str, Dimension], rng: np.random.Generator) -> dict[str, float]:
  """One setting drawn independently per dimension (log: uniform in log space)."""
  out = {}
  for field in sorted(space):
    kind, low, high = space[field]
    if kind == "log":
      out[field] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    elif kind == "int":
      out[field] = int(rng.integers(int(low), int(high) + 1))
    else:
      out[field] = float(rng.uniform(low, high))
  return out


def suggest(space: dict[str, Dimension], history: list[tuple[dict, float]], number: int,
            method: str, seed: int) -> dict[str, float]:
  """The setting of trial ``number`` given the finished trials before it.

  A function of its arguments alone (no state carried between calls), so a
  resumed sweep proposes exactly what the uninterrupted one did: random search
  draws from ``default_rng([seed, number])``; TPE replays ``history`` into a
  fresh optuna study whose sampler is seeded with ``seed + number``.
  """
  if method == "random":
    return sample_random(space, np.random.default_rng([seed, number]))
  import optuna  # pylint: disable=import-outside-toplevel
  optuna.logging.set_verbosity(optuna.logging.WARNING)

  def distribution(kind, low, high):
    if kind == "int":
      return optuna.distributions.IntDistribution(int(low), int(high))
    return optuna.distributions.FloatDistribution(low, high, log=kind == "log")

  distributions = {f: distribution(*space[f]) for f in sorted(space)}
  study = optuna.create_study(direction="maximize",
                              sampler=optuna.samplers.TPESampler(seed=seed + number))
  for params, value in history:
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              value=value))
  trial = study.ask(distributions)
  return {f: trial.params[f] for f in sorted(space)}


def search_method(flag: str) -> str:
  if flag != "auto":
    if flag == "tpe":
      from metric_learning import _extras  # pylint: disable=import-outside-toplevel
      _extras.import_optional("optuna", extra="tune", what="--search=tpe")
    return flag
  return "tpe" if importlib.util.find_spec("optuna") is not None else "random"


# ------------------------------------------------------------------ the runs ---- #

def apply_setting(config, setting: dict[str, Any]) -> None:
  """Sets dotted fields (``loss.margin``, ``loss_lr_scale``) of ``config`` in place."""
  for field, value in setting.items():
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    with node.unlocked() if hasattr(node, "unlocked") else contextlib.nullcontext():
      node[leaf] = value


def loss_config(base, loss: str, setting: dict[str, Any]):
  """``base`` training ``loss`` with its own defaults and ``setting``."""
  c = copy.deepcopy(base)
  with c.unlocked():
    c.loss = {"name": loss}
    c.progress_bar, c.plots = False, False
  apply_setting(c, setting)
  return c


def fold_run_config(base, loss, setting, data_path, train_classes, held_out):
  """Trains on ``train_classes`` minus ``held_out``; evaluates on ``held_out``."""
  c = loss_config(base, loss, setting)
  with c.unlocked():
    c.data = {"name": "npz", "path": data_path, "test_fraction": 0.0, "split_seed": 0,
              "seen_classes": tuple(int(k) for k in train_classes if k not in held_out)}
    c.evals = {"valid": {"name": "retrieval", "split": "unseen"}}
    c.raw_baseline = False
    c.eval_every = 0
    # A fold trains on fewer classes than the whole: when they are fewer than
    # sampler.p, each batch takes all of them, with k raised to keep the batch size.
    train_count = len(c.data.seen_classes)
    if c.sampler.p > train_count:
      c.sampler.k = -(-c.sampler.p * c.sampler.k // train_count)
      c.sampler.p = train_count
  return c


def final_run_config(base, loss, setting, seed, test_split):
  c = loss_config(base, loss, setting)
  with c.unlocked():
    c.seed = int(seed)
    c.evals = {"test": {"name": "retrieval", "split": test_split}}
    c.raw_baseline = False     # once for the sweep: baselines()
    c.eval_every = 0
  return c


def train_once(config, workdir: str) -> dict[str, Any]:
  """The run's summary: read when the run finished before, else trained (resuming
  from the run's own checkpoint if it was interrupted)."""
  from experiments import train  # pylint: disable=import-outside-toplevel
  from metric_learning.training import rundir  # pylint: disable=import-outside-toplevel
  run = rundir.RunDir(workdir)
  summary = run.read_json(rundir.SUMMARY) if run.exists(rundir.SUMMARY) else None
  if summary is not None and summary.get("steps") == config.num_steps:
    return summary
  return train.train_and_evaluate(config, workdir)


def write_json(path: str, value) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def interval(values) -> tuple[float, float]:
  """Mean and the half-width of its 95 % Student-t interval (0 for one value)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), 0.0
  half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
  return float(values.mean()), float(half)


# ---------------------------------------------------------------- the sweep ---- #

def prepare(base, workdir: str, *, losses, folds, trials, seeds, method, search_seed,
            fold_seed, objective, train_split, test_split, spaces) -> dict[str, Any]:
  """Checks the sweep, writes (or checks) ``plan.json`` and the training data;
  returns the plan and the test split (the data is read once)."""
  from metric_learning.data import registry as data_registry  # pylint: disable=import-outside-toplevel
  config_lib.validate(base)
  if base.data.name not in IN_MEMORY:
    raise SweepError(f"config.data.name {base.data.name!r}: the reality check cuts its folds "
                     f"from a dataset held in memory ({', '.join(IN_MEMORY)}); image-file "
                     "datasets are not supported yet.")
  if trials < 1:
    raise SweepError(f"--trials must be >= 1; got {trials}.")
  if objective not in OBJECTIVES:
    raise SweepError(f"--objective={objective!r}: choose one of {', '.join(OBJECTIVES)} "
                     "(retrieval metrics of the validation fold).")
  if not seeds:
    raise SweepError("--seeds is empty; give at least one seed.")
  splits = data_registry.create(base.data.name, **config_lib.part_settings(base.data))
  for flag, split in (("--train_split", train_split), ("--test_split", test_split)):
    if split not in splits:
      raise SweepError(f"{flag}={split!r} is not a split of data {base.data.name!r}; its "
                       f"splits are {sorted(splits)}.")
  train = splits[train_split]
  classes = np.unique(train.labels)
  plan = {"format": FORMAT, "config": config_lib.to_json(base), "losses": list(losses),
          "folds": fold_classes(classes, folds, fold_seed), "trials": trials,
          "seeds": [int(s) for s in seeds], "search": method, "search_seed": search_seed,
          "fold_seed": fold_seed, "objective": objective, "train_split": train_split,
          "test_split": test_split,
          "spaces": {k: {f: list(d) for f, d in v.items()} for k, v in spaces.items()}}
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "plan.json")
  saved = read_json(path)
  if saved is not None:
    keep = ("losses", "trials", "seeds", "spaces")   # may change: other losses, more runs
    fixed = {k: v for k, v in saved.items() if k not in keep}
    now = {k: v for k, v in json.loads(json.dumps(plan)).items() if k not in keep}
    # The config as the trainer compares a resumed run's: a plan recorded before a
    # setting existed (e.g. embed_chunk) holds what its default does today.
    config_diff = config_lib.config_differences(
        config_lib.upgrade_saved(copy.deepcopy(fixed.pop("config", {}))), now.pop("config"))
    differ = sorted(k for k in set(fixed) | set(now) if fixed.get(k) != now.get(k))
    differ += [f"config ({d})" for d in config_diff]
    differ += [f"the search space of {loss}" for loss in sorted(
        set(saved["spaces"]) & set(plan["spaces"]))
               if saved["spaces"][loss] != json.loads(json.dumps(plan["spaces"][loss]))]
    if differ:
      raise SweepError(f"--workdir {workdir!r} holds a sweep with other settings "
                       f"({', '.join(differ)}); use another --workdir.")
  if saved is not None:   # remember the spaces of losses this command does not name
    plan["spaces"] = {**saved["spaces"], **plan["spaces"]}
  write_json(path, plan)
  data_path = os.path.join(workdir, "train_classes.npz")
  if not os.path.exists(data_path):
    tmp = data_path + ".tmp.npz"
    np.savez(tmp, inputs=train.inputs, labels=train.labels)
    os.replace(tmp, data_path)
  plan["data_path"] = data_path
  plan["classes"] = classes.tolist()
  return plan, splits[test_split]


def cross_validate(base, plan, loss: str, number: int, setting: dict, workdir: str) -> dict:
  """Trial ``number`` of ``loss``: one run per fold; its scores, written to trial.json."""
  trial_dir = os.path.join(workdir, loss, f"trial_{number}")
  path = os.path.join(trial_dir, "trial.json")
  record = read_json(path)
  if record is not None and "objective" in record:
    return record
  os.makedirs(trial_dir, exist_ok=True)
  write_json(path, {"setting": setting})          # proposed: a resumed sweep reuses it
  scores = []
  for k, held_out in enumerate(plan["folds"]):
    c = fold_run_config(base, loss, setting, plan["data_path"], plan["classes"], held_out)
    summary = train_once(c, os.path.join(trial_dir, f"fold_{k}"))
    scores.append(float(summary[f"valid/{plan['objective']}"]))
  record = {"setting": setting, "folds": scores, "objective": float(np.mean(scores))}
  write_json(path, record)
  return record


def search(base, plan, loss: str, workdir: str) -> list[dict]:
  """Every trial of ``loss``, proposed in order from the finished ones before it."""
  space = {f: tuple(d) for f, d in plan["spaces"][loss].items()}
  records = []
  for number in range(plan["trials"]):
    path = os.path.join(workdir, loss, f"trial_{number}", "trial.json")
    saved = read_json(path)
    if saved is not None:
      setting = saved["setting"]
    else:
      history = [(r["setting"], r["objective"]) for r in records]
      setting = suggest(space, history, number, plan["search"], plan["search_seed"])
    records.append(cross_validate(base, plan, loss, number, setting, workdir))
    logging.info("%s trial %d %s: %s %.4f", loss, number, setting, plan["objective"],
                 records[-1]["objective"])
  return records


def ranking_scores(x, labels) -> tuple[dict[str, float], dict[str, float]]:
  """MAP@R, P@1 and R-precision of ``x`` (flattened) ranked by euclidean distance, and
  L2-normalised (cosine ranking): the trained embeddings of most recipes are
  L2-normalised, and pretrained features rank better so."""
  from metric_learning import metrics  # pylint: disable=import-outside-toplevel
  keys = ("map_at_r", "precision_at_1", "r_precision")
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  euclidean, normalised = ({k: float(r[k]) for k in keys}
                           for r in (metrics.retrieval_metrics(v, labels) for v in (x, unit)))
  return euclidean, normalised


def initial_features(base, inputs) -> np.ndarray:
  """The config's model at initialisation (its ``weights``, if any): pooled backbone
  features of ``inputs``, in evaluation mode."""
  from metric_learning import models  # pylint: disable=import-outside-toplevel
  from metric_learning.evaluators import base as eval_base  # pylint: disable=import-outside-toplevel
  model = models.create(base.model.name, tuple(inputs.shape[1:]), seed=base.seed,
                        **config_lib.part_settings(base.model))
  model.eval()
  return eval_base.embed_dataset(lambda x: np.asarray(model.features(x)), inputs,
                                 batch_size=base.eval_batch_size)


def baselines(base, test) -> dict[str, dict[str, float]]:
  """Raw pixels, and the config's model at initialisation (pooled features), on the test
  split, each by euclidean distance and L2-normalised (:func:`ranking_scores`)."""
  name = f"{base.model.name} features at initialisation"
  rows = dict(zip(("raw pixels", "raw pixels, L2-normalised"),
                  ranking_scores(test.inputs, test.labels)))
  rows.update(zip((name, f"{name}, L2-normalised"),
                  ranking_scores(initial_features(base, test.inputs), test.labels)))
  return rows


def summarise(plan, per_loss: dict, base_rows: dict) -> dict[str, Any]:
  rows = []
  for loss, (records, finals) in per_loss.items():
    best = max(range(len(records)), key=lambda i: (records[i]["objective"], -i))
    row = {"loss": loss, "setting": records[best]["setting"], "trial": best,
           "validation": records[best]["objective"],
           "validation_folds": records[best]["folds"], "seeds": plan["seeds"]}
    for key in ("map_at_r", "precision_at_1", "r_precision"):
      values = [f[f"test/{key}"] for f in finals]
      row[key] = dict(zip(("mean", "half_width"), interval(values)), values=values)
    rows.append(row)
  return {"rows": rows, "baselines": base_rows, "folds": plan["folds"],
          "trials": plan["trials"], "search": plan["search"], "objective": plan["objective"],
          "config": plan["config"]}


def _format_setting(setting: dict) -> str:
  return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in sorted(setting.items()))


def markdown(results: dict) -> str:
  n = len(results["rows"][0]["seeds"]) if results["rows"] else 0
  lines = [f"| loss | chosen setting | validation {results['objective']} "
           f"({len(results['folds'])} folds) | test MAP@R | test P@1 | test R-precision |",
           "|---|---|---|---|---|---|"]
  for r in sorted(results["rows"], key=lambda r: -r["map_at_r"]["mean"]):
    cells = [f"{r[k]['mean']:.4f} ± {r[k]['half_width']:.4f}"
             for k in ("map_at_r", "precision_at_1", "r_precision")]
    lines.append(f"| {r['loss']} | {_format_setting(r['setting'])} | "
                 f"{r['validation']:.4f} | " + " | ".join(cells) + " |")
  for name, b in results["baselines"].items():
    lines.append(f"| {name} (no training) | — | — | {b['map_at_r']:.4f} | "
                 f"{b['precision_at_1']:.4f} | {b['r_precision']:.4f} |")
  lines.append("")
  search = {"random": "random search",
            "tpe": "optuna's TPE, whose first 10 trials are random draws"}[results["search"]]
  lines.append(f"Test: mean ± 95 % interval (Student's t) over {n} seeds of the retrained "
               f"model; {results['trials']} trials per loss ({search}).")
  return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  rows = sorted(results["rows"], key=lambda r: -r["map_at_r"]["mean"])
  fig = Figure(figsize=(7, 0.5 * (len(rows) + len(results["baselines"])) + 1.5))
  ax = fig.add_subplot()
  names = [r["loss"] for r in rows]
  ax.barh(names, [r["map_at_r"]["mean"] for r in rows],
          xerr=[r["map_at_r"]["half_width"] for r in rows], color="tab:blue", capsize=3)
  # Raw pixels red, the untrained model grey; dashed by euclidean distance, dotted L2-normalised.
  for name, b in sorted(results["baselines"].items(), key=lambda kv: "raw" not in kv[0]):
    ax.axvline(b["map_at_r"], color="tab:red" if name.startswith("raw") else "tab:gray",
               linestyle=":" if "L2-normalised" in name else "--",
               label=f"{name} (no training)")
  ax.invert_yaxis()
  ax.set_xlabel("test MAP@R (held-out classes), mean ± 95 % interval")
  ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1, fontsize=8, frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=100, bbox_inches="tight")   # the legend above the axes included


def run_sweep(base, workdir: str, *, losses, folds=4, trials=10, seeds=(0, 1, 2),
              search_flag="auto", search_seed=0, fold_seed=0, objective="map_at_r",
              train_split="train", test_split="unseen", space_specs=()) -> dict[str, Any]:
  """The whole protocol; returns (and writes) the results. See the module docstring."""
  check_losses(list(losses))
  spaces = parse_space(list(space_specs), list(losses))
  method = search_method(search_flag)
  plan, test = prepare(base, workdir, losses=list(losses), folds=folds, trials=trials,
                       seeds=list(seeds), method=method, search_seed=search_seed,
                       fold_seed=fold_seed, objective=objective, train_split=train_split,
                       test_split=test_split, spaces=spaces)
  per_loss = {}
  for loss in losses:
    records = search(base, plan, loss, workdir)
    best = max(range(len(records)), key=lambda i: (records[i]["objective"], -i))
    # Under the best trial's number: a sweep resumed with more trials and a new
    # best retrains, rather than reusing runs of the old setting.
    finals = [train_once(final_run_config(base, loss, records[best]["setting"], seed,
                                          test_split),
                         os.path.join(workdir, loss, f"final_trial_{best}", f"seed_{seed}"))
              for seed in plan["seeds"]]
    per_loss[loss] = (records, finals)
  results = summarise(plan, per_loss, baselines(base, test))
  write_json(os.path.join(workdir, "results.json"), results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(results))
  plot(results, os.path.join(workdir, "results.png"))
  return results


def define_flags() -> None:
  """The command line's flags; defined only when the module runs as a program, so
  that importing it (tests, other launchers) claims no flag names."""
  config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG,
                                  "The experiment every run starts from.")
  flags.DEFINE_string("workdir", "workdir/reality_check", "Where the sweep goes.")
  flags.DEFINE_list("losses", ["batch_hard_triplet_loss"],
                    "Losses to compare (registry names), comma-separated.")
  flags.DEFINE_integer("folds", 4, "Class-disjoint cross-validation folds (>= 2).")
  flags.DEFINE_integer("trials", 10, "Hyper-parameter settings tried per loss.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the final runs.")
  flags.DEFINE_enum("search", "auto", ["auto", "random", "tpe"],
                    "auto: TPE when optuna is installed, else random search.")
  flags.DEFINE_integer("search_seed", 0, "Seed of the search.")
  flags.DEFINE_integer("fold_seed", 0, "Seed of the classes' fold assignment.")
  flags.DEFINE_string("objective", "map_at_r",
                      "Retrieval metric the search maximises (validation folds).")
  flags.DEFINE_string("train_split", "train", "The split the folds are cut from.")
  flags.DEFINE_string("test_split", "unseen", "The held-out classes' split.")
  flags.DEFINE_multi_string(
      "space", [], "LOSS:FIELD=KIND:LOW:HIGH replaces a search dimension (KIND uniform, log "
      "or int), e.g. batch_hard_triplet_loss:loss.margin=uniform:0.05:0.5; repeatable.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    try:
      seeds = [int(s) for s in f.seeds]
    except ValueError:
      raise SweepError(f"--seeds must be integers; got {','.join(f.seeds)!r}.") from None
    results = run_sweep(
        cli.config_from_flags(), f.workdir, losses=f.losses, folds=f.folds, trials=f.trials, seeds=seeds,
        search_flag=f.search, search_seed=f.search_seed, fold_seed=f.fold_seed,
        objective=f.objective, train_split=f.train_split, test_split=f.test_split,
        space_specs=f.space)
  except (SweepError, config_lib.ConfigError) as e:
    print(f"FATAL: {e}", file=sys.stderr)
    sys.exit(2)
  print(markdown(results))
  print(f"written: {os.path.join(f.workdir, 'results.md')}, results.json, results.png")


if __name__ == "__main__":
  cli.strip_new_fields()     # before the config flag reads sys.argv (see experiments.cli)
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
