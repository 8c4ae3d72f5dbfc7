"""``train_and_evaluate(config, workdir)``: one straight-line training run.

Sections: setup (validate the config, claim the workdir) → data → model and
optimizer → restore → train loop (log, health, evaluate, checkpoint, signals)
→ final evaluation, plots and summary. Every part is chosen by name from a
registry and configured by its own section (see ``experiments/configs/default.py``);
the maths lives in the library.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from experiments import config as config_lib
from experiments.config import ConfigError
import metric_learning as ml
from metric_learning import evaluators
from metric_learning import models
from metric_learning import training
from metric_learning.data import files as files_lib
from metric_learning.data import pipeline
from metric_learning.data import registry as data_registry
from metric_learning.data import sampler as sampler_lib
from metric_learning.data import transforms
from metric_learning.losses import registry as loss_registry
from metric_learning.training import checkpoint
from metric_learning.training import logger as logger_lib
from metric_learning.training import optim
from metric_learning.training import parallel
from metric_learning.training import plots
from metric_learning.training import rundir

class Interrupted(Exception):
  """SIGINT / SIGTERM stopped the run after saving a checkpoint at ``step``."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    name = signal.Signals(signum).name
    super().__init__(f"{name} at step {step}: checkpoint saved in {workdir}; run the same "
                     "command again to resume.")


# ------------------------------------------------------------- workdir --- #

def _provenance() -> dict:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = {"metric_learning_version": ml.__version__, "jax_version": jax.__version__}
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=root, capture_output=True, text=True, timeout=10).stdout
    out.update(git_commit=commit, git_dirty=bool(dirty.strip()))
  except (OSError, subprocess.SubprocessError):
    out.update(git_commit=None, git_dirty=None)
  return out



def claim_workdir(config, workdir: str, *, fresh: bool) -> None:
  """Records the config in ``workdir``; refuses one whose saved config differs.

  ``fresh=True`` moves an existing workdir aside (``WORKDIR.old-TIMESTAMP``) —
  nothing is deleted — and starts anew.
  """
  run = rundir.RunDir(workdir)
  current, defaults = config_lib.resolve(config)
  used = run.used()
  if used and fresh:
    aside = f"{os.path.normpath(workdir)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(workdir, aside)
    logging.warning("--fresh: moved the previous run in %s to %s.", workdir, aside)
  elif used:
    if not run.exists(rundir.CONFIG):
      raise ConfigError(f"workdir {workdir!r} holds checkpoints but no config.json, so it "
                        "cannot be checked against this config; use another --workdir or "
                        "--fresh.")
    saved = config_lib.upgrade_saved(run.read_json(rundir.CONFIG))
    diff = config_lib.config_differences(saved, current, defaults)
    if diff:
      raise ConfigError(f"workdir {workdir!r} was made by a different config ("
                        + "; ".join(diff) + "); use another --workdir, or --fresh to move "
                        "the old run aside and start anew.")
  run.write_json(rundir.CONFIG, current)
  run.write_json(rundir.PROVENANCE, _provenance())



# ---------------------------------------------------------------- data ----- #

def train_batch(dataset, sampler, step: int, seed: int, augment) -> dict[str, np.ndarray]:
  """Batch ``step``: a function of (seed, step) only, so a resumed run repeats it."""
  index = sampler.batch(step)
  inputs = dataset.inputs[index]
  if augment.get("max_shift", 0) > 0 or augment.get("flip", False):
    rng = np.random.default_rng([seed, step, 1])
    inputs = sampler_lib.augment(rng, inputs, max_shift=augment.get("max_shift", 0),
                                 flip=augment.get("flip", False))
  return {"inputs": inputs, "labels": dataset.labels[index],
          "where": np.ones(len(index), bool)}


def label_names(datasets) -> dict[int, str]:
  """Label → class name over every split (the label when a dataset has no names)."""
  out = {}
  for d in datasets.values():
    names = getattr(d, "class_names", None)
    for label in np.unique(d.labels).tolist():
      out[int(label)] = names[label] if names is not None and 0 <= label < len(names) \
          else str(label)
  return out


# ----------------------------------------------------------- evaluation ---- #

def make_evaluators(config) -> dict[str, evaluators.Evaluator]:
  out = {}
  for name, spec in dict(config.evals).items():
    spec = dict(spec)
    out[name] = evaluators.create(spec.pop("name"), **spec)
  return out


def embed_split(embed, dataset, batch_size: int, transform=None, workers: int = 0):
  """``[n, dim]`` embeddings of a split: arrays in padded batches, image files
  decoded per batch with the evaluation views of ``transform`` (averaged)."""
  if isinstance(dataset, files_lib.ImageFiles):
    return pipeline.embed_files(embed, dataset, transform, batch_size, workers=workers)
  return evaluators.embed_dataset(embed, dataset.inputs, batch_size)


def run_evaluators(evals, embed, datasets, batch_size: int, transform=None,
                   workers: int = 0) -> tuple[dict, dict]:
  """Every evaluator on the splits it needs, each split embedded once (padded batches)."""
  needed = sorted({s for ev in evals.values() for s in ev.splits})
  missing = [s for s in needed if s not in datasets]
  if missing:
    raise ConfigError(f"config.evals need splits {missing}, which this dataset does not "
                      f"have; its splits are {sorted(datasets)}.")
  emb = {s: embed_split(embed, datasets[s], batch_size, transform, workers) for s in needed}
  results = {}
  for name, ev in evals.items():
    results.update({f"{name}/{k}": v for k, v in ev.run(emb, datasets).items()})
  return results, emb


# --------------------------------------------------------------- signals --- #

class _StopRequest:
  """SIGINT / SIGTERM set a flag the loop reads after each step (main thread only)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGINT, signal.SIGTERM):
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


# ---------------------------------------------------------------- main ----- #

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       fresh: bool = False) -> dict:
  """Trains, evaluates and writes checkpoints, events, metrics, plots and summary.json.

  Args:
    config: an experiment config (``experiments/configs/*.py``).
    workdir: the run's directory; a restarted run resumes from its newest
      checkpoint, and a workdir made by a different config is refused.
    fresh: move an existing workdir aside and start anew.

  Returns:
    The summary (also written to ``workdir/summary.json``).
  """
  with _StopRequest() as stop:
    return _train_and_evaluate(config, workdir, fresh, stop)


def _train_and_evaluate(config, workdir, fresh, stop) -> dict:
  # ------------------------------------------------------------ setup ---- #
  config_lib.validate(config)
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------- data ---- #
  # Read before the workdir is claimed: a wrong path writes nothing.
  try:
    datasets = data_registry.create(config.data.name, **config_lib.part_settings(config.data))
  except FileNotFoundError:
    raise
  except ValueError as e:
    raise ConfigError(f"config.data ({config.data.name!r}): {e}") from None
  skipped_files = data_registry.skipped_files(datasets)
  if "train" not in datasets:
    raise ConfigError(f"config.data: {config.data.name!r} has no train split; its splits "
                      f"are {sorted(datasets)}.")
  train = datasets["train"]
  try:
    sampler = sampler_lib.PKSampler(train.labels, p=config.sampler.p, k=config.sampler.k,
                                    seed=config.seed)
  except ValueError as e:
    raise ConfigError(f"config.sampler: {e}") from None
  evals = make_evaluators(config)
  # Image files are decoded and augmented per batch; arrays stay in memory.
  streamed = isinstance(train, files_lib.ImageFiles)
  transform = transforms.Transform(**dict(config.augment)) if streamed else None
  input_shape = transform.input_shape if streamed else train.inputs.shape[1:]

  # ------------------------------------------------- model, optimizer ---- #
  model_settings = config_lib.part_settings(config.model)
  try:
    model = models.create(config.model.name, input_shape, seed=config.seed,
                          **model_settings)
  except FileNotFoundError:
    raise
  except ValueError as e:     # weights that do not fit, inputs the model cannot take
    raise ConfigError(f"config.model ({config.model.name!r}): {e}") from None
  loss_settings = config_lib.part_settings(config.loss)
  per_class = loss_registry.proxies_per_class(config.loss.name, loss_settings)
  proxies = None
  if per_class is not None:
    # A proxy loss: class vectors trained with the encoder; its labels index them.
    classes = np.unique(train.labels)
    dim = model_settings.get("embedding_dim", models.arguments(config.model.name)
                             ["embedding_dim"])
    proxies = (len(classes), dim, per_class)
    model = models.EncoderWithProxies(model, len(classes), dim, per_class=per_class,
                                      rngs=nnx.Rngs(config.seed + 1))
    train = dataclasses.replace(train, class_names=None, labels=np.searchsorted(
        classes, train.labels).astype(np.int32))

  loss = loss_registry.create(config.loss.name, **loss_settings)
  config_lib.check_loss(loss, config, model_settings.get(
      "embedding_dim", models.arguments(config.model.name)["embedding_dim"]), proxies)

  def make_loss(axis_name):
    extra = {} if axis_name is None else {"axis_name": axis_name}
    if per_class is not None:
      return lambda e, y, w, proxies: loss(e, y, proxies, where=w, **extra)
    return lambda e, y, w: loss(e, y, where=w, **extra)

  opt = config_lib.part_settings(config.optimizer)
  schedule = optim.make_schedule(config.schedule.name, learning_rate=opt.pop("learning_rate"),
                                 num_steps=config.num_steps, **config_lib.part_settings(config.schedule))
  tx = optim.make_optimizer(config.optimizer.name, schedule, **opt)
  graphdef, state = training.init_state(model, tx, config.seed)
  runner = parallel.make_runner(config.parallel, graphdef, tx, make_loss, sampler.batch_size,
                                local_rows=streamed)
  embed_fn = training.make_embed_fn(graphdef)
  train_embed_fn = training.make_embed_fn(graphdef, train=True)   # what the loss sees
  # The triplet margin of the training statistics: the loss's own for a triplet
  # hinge (trait ``triplet_margin``), else the statistics' default 0.2.
  hinge_margin = loss_registry.triplet_margin(config.loss.name, loss_settings)
  margin = 0.2 if hinge_margin is None else hinge_margin

  # ---------------------------------------------------------- restore ---- #
  # Claimed only now: a wrong data path, sampler or weights file writes nothing.
  if is_main:
    claim_workdir(config, workdir, fresh=fresh)
  manager = checkpoint.manager(workdir, max_to_keep=config.keep_checkpoints) \
      if is_main else None
  first_step = 0
  if manager is not None:
    state, first_step = checkpoint.restore_latest(manager, state)
  if jax.process_count() > 1:   # every process resumes from process 0's checkpoint
    state = checkpoint.broadcast_from_process_0(state)
    first_step = int(state.step)
  run = rundir.RunDir(workdir)
  progress = (run.read_json(rundir.PROGRESS) if is_main else None) or {}
  elapsed_before = float(progress.get(str(first_step), 0.0))
  start = time.time()
  if is_main:
    training.save_model_spec(workdir, config.model.name, input_shape,
                             {**models.arguments(config.model.name), **model_settings},
                             proxies=proxies)
    run.write_json(rundir.LABELS, {str(k): v for k, v in label_names(datasets).items()},
                   sort_keys=False)
  state = runner.put_state(state)
  log = logger_lib.MetricLogger(workdir, enabled=is_main, resume_step=first_step)
  # "No active anchor" means "no gradient" only for hinge losses with a margin;
  # a soft margin (softplus) is never exactly 0.
  monitor = training.HealthMonitor(patience=config.health_patience,
                                   check_inactive=hinge_margin is not None)
  warnings = []

  saved = [first_step]

  def save(step):
    if manager is None or saved[-1] == step:
      return
    checkpoint.save(manager, step, runner.get_state(state))
    saved.append(step)
    progress[str(step)] = round(elapsed_before + time.time() - start, 3)
    run.write_json(rundir.PROGRESS, progress, indent=None, sort_keys=False)

  def evaluate(step, host):
    results, emb = run_evaluators(evals, lambda x: embed_fn(host, x), datasets,
                                  config.eval_batch_size, transform, config.workers)
    log.write(step, {f"eval/{k}": v for k, v in results.items()
                     if isinstance(v, (int, float))})
    return results, emb

  # ------------------------------------------------------- train loop ---- #
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  if streamed:   # this process's rows of each global batch, decoded by workers
    batches = pipeline.train_batches(
        train, sampler, transform, seed=config.seed, start_step=first_step,
        num_steps=config.num_steps, workers=config.workers,
        process_index=jax.process_index(), process_count=jax.process_count())
  else:
    batches = sampler_lib.prefetch(
        (train_batch(train, sampler, s, config.seed, config.augment)
         for s in range(first_step, config.num_steps)))
  bar = tqdm(total=config.num_steps, initial=first_step, desc="train", unit="step",
             disable=not (is_main and config.progress_bar), dynamic_ncols=True)
  step = first_step
  for step in range(first_step + 1, config.num_steps + 1):
    if stop.signum is not None:
      step -= 1
      break
    last_batch = next(batches)
    state, metrics = runner.step(state, last_batch)
    bar.update(1)
    if step % config.log_every == 0 or step == config.num_steps:
      scalars = {f"train/{k}": v for k, v in jax.device_get(metrics).items()}
      host = runner.get_state(state)
      emb = train_embed_fn(host, last_batch["inputs"])
      stats = {k: float(v) for k, v in ml.triplet_statistics(
          emb, last_batch["labels"], margin=margin, where=last_batch["where"]).items()}
      scalars.update({f"train/{k}": v for k, v in stats.items()})
      scalars["train/learning_rate"] = float(schedule(step - 1))
      bad = int(host.first_nonfinite_step)
      if bad >= 0 and config.nonfinite == "stop":
        raise FloatingPointError(
            f"non-finite loss or gradient at step {bad} (nonfinite='stop'); the update was "
            f"not applied and the last checkpoint holds finite values.")
      log.write(step, scalars)
      for message in monitor.update(step, stats):
        warnings.append(message)
        if is_main:
          logging.warning("%s", message)
      bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
    if config.eval_every and step % config.eval_every == 0 and step != config.num_steps:
      evaluate(step, runner.get_state(state))
    if step % config.checkpoint_every == 0 or step == config.num_steps:
      save(step)
  bar.close()
  if stop.signum is not None:
    save(step)
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
    log.close()
    raise Interrupted(stop.signum, step, workdir)
  if manager is not None:
    manager.wait_until_finished()

  # ------------------------------------------------ final evaluation ---- #
  state = runner.get_state(state)
  final, emb = evaluate(int(state.step), state)
  summary = dict(final)
  if config.raw_baseline:
    raw, _ = run_evaluators(evals, _raw_pixels, datasets, config.eval_batch_size,
                            transform, config.workers)
    summary.update({f"raw/{k}": v for k, v in raw.items()})
    # Beside the model's figures in TensorBoard and metrics.jsonl, at the final step.
    log.write(int(state.step), {f"raw/{k}": v for k, v in raw.items()
                                if isinstance(v, (int, float))})
  summary.update({"steps": int(state.step), "skipped_updates": int(state.skipped),
                  "wall_time_s": round(elapsed_before + time.time() - start, 2),
                  "resumed_from_step": first_step, "health_warnings": warnings,
                  "skipped_bad_files": skipped_files})
  if is_main:
    write_outputs(workdir, summary, emb, datasets, log, config, transform)
  log.close()
  if manager is not None:
    manager.close()
  return summary


def _raw_pixels(x):
  """The raw-input baseline's "embedding": the flattened pixels in [0, 1]."""
  x = np.asarray(x)
  flat = x.reshape(len(x), -1).astype(np.float32)
  return flat / 255.0 if x.dtype == np.uint8 else flat


# The metric of each evaluator drawn against the step in plots/curves.png.
HEADLINE_METRICS = ("/map_at_r", "/mean_average_precision", "/lfw_accuracy", "/accuracy_at_1")


def output_splits(embedded: dict) -> list[str]:
  """The splits the plots and the enrollment index show: every split an
  evaluator declared, in the order they were embedded, the training split
  aside unless it is the only one."""
  names = list(embedded)
  return [n for n in names if n != "train"] or names


def write_outputs(workdir, summary, emb, datasets, log, config, transform=None) -> None:
  """Plots, the enrollment index, summary.json (atomically) and the summary table."""
  sets = {k: (emb[k], datasets[k].labels) for k in output_splits(emb)}
  names = label_names(datasets)
  paths = plots.all_paths(workdir)
  if config.plots and sets:
    plots.save(plots.embedding_map(sets, class_names=names), paths["embedding_map"])
    plots.save(plots.distance_histograms(sets), paths["distances"])
    history = log.history()
    headline = sorted({k for row in history for k in row
                       if k.startswith("eval/") and k.endswith(HEADLINE_METRICS)})
    fig = plots.curves(history, [
        "train/loss", "train/active_anchor_fraction", "train/hardest_positive_mean",
        "train/hardest_negative_mean", *headline])
    if fig is not None:
      plots.save(fig, paths["curves"])
    name = list(sets)[-1]
    d = datasets[name]
    streamed = isinstance(d, files_lib.ImageFiles)
    if (streamed or d.inputs.ndim == 4) and len(d) > 1:
      index = ml.index.EmbeddingIndex.create(emb[name], d.labels)
      picks = np.random.default_rng(0).choice(len(d), size=min(6, len(d)), replace=False)
      k = min(6, len(d))
      nn, dist = index.search(emb[name][picks], k=k)
      keep = nn != picks[:, None]              # drop the query itself
      nn = np.stack([row[m][:k - 1] for row, m in zip(nn, keep)])
      dist = np.stack([row[m][:k - 1] for row, m in zip(dist, keep)])
      same = d.labels[nn] == d.labels[picks][:, None]
      if streamed:   # decode only the shown images (the first evaluation view)
        shown = np.unique(np.concatenate([picks, nn.ravel()]))
        images = np.stack([transform.eval_views(transforms.decode(d.paths[i]))[0]
                           for i in shown])
        queries, nn = images[np.searchsorted(shown, picks)], np.searchsorted(shown, nn)
      else:
        images, queries = d.inputs, d.inputs[picks]
      plots.save(plots.retrieval_grid(
          queries, images, nn, same, dist,
          title=f"{name} set: each query, then its {k - 1} nearest in the {name} set "
                "(itself excluded)"), paths["retrieval_grid"])
  # Enrollment without retraining: the gallery index of every evaluated class.
  if sets:
    parts = list(sets)
    gallery = ml.index.EmbeddingIndex.create(
        emb[parts[0]], datasets[parts[0]].labels, names=names,
        model=training.model_identity(workdir, summary["steps"]))
    for k in parts[1:]:
      gallery = gallery.add(emb[k], datasets[k].labels)
    gallery.save(rundir.RunDir(workdir).path(rundir.INDEX))
  rundir.RunDir(workdir).write_json(rundir.SUMMARY, summary)
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
