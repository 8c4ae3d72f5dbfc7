"""``train_and_evaluate(config, workdir)``: one straight-line training run.

Sections: setup → data → model and optimizer → restore → train loop (log,
evaluate, checkpoint) → final evaluation, plots and summary.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

import metric_learning as ml
from metric_learning import data as data_lib
from metric_learning import models
from metric_learning.training import logger as logger_lib
from metric_learning.training import parallel
from metric_learning.training import plots
from metric_learning.training import state as state_lib

EVAL_KEYS = ("map_at_r", "precision_at_1", "r_precision", "recall_at_4")
SUMMARY_KEYS = EVAL_KEYS + ("nmi", "ami")


# ---------------------------------------------------------------- data ------ #

def load_data(cfg) -> dict[str, data_lib.Dataset]:
  """``{"train", "seen", "unseen"}`` for the configured dataset."""
  name = cfg.name
  if name == "digits":
    full = data_lib.digits()
  elif name == "npz":
    full = data_lib.load_npz(cfg.path)
  elif name == "image_folder":
    full = data_lib.image_folder(cfg.path, image_size=cfg.image_size)
  elif name == "market1501":
    train = data_lib.market1501(cfg.path, "train", image_size=cfg.image_size)
    query = data_lib.market1501(cfg.path, "query", image_size=cfg.image_size)
    gallery = data_lib.market1501(cfg.path, "gallery", image_size=cfg.image_size)
    return {"train": train, "query": query, "gallery": gallery}
  else:
    raise ValueError("data.name must be one of ['digits', 'image_folder', 'market1501', "
                     f"'npz']; got {name!r}.")
  return data_lib.class_disjoint_split(full, seen_classes=tuple(cfg.seen_classes),
                                       test_fraction=cfg.test_fraction, seed=cfg.split_seed)


def train_batch(dataset, sampler, step: int, cfg) -> dict[str, np.ndarray]:
  """Batch ``step``: a function of (seed, step) only, so a resumed run repeats it."""
  index = sampler.batch(step)
  inputs = dataset.inputs[index]
  if cfg.augment.max_shift > 0 or cfg.augment.flip:
    rng = np.random.default_rng([cfg.seed, step, 1])
    inputs = data_lib.augment(rng, inputs, max_shift=cfg.augment.max_shift,
                              flip=cfg.augment.flip)
  return {"inputs": inputs, "labels": dataset.labels[index],
          "where": np.ones(len(index), bool)}


def batch_statistics(embed_fn, state, batch, margin) -> dict[str, float]:
  """Mining statistics of a training batch under the current parameters (log steps only)."""
  emb = embed_fn(state, batch["inputs"])
  stats = ml.triplet_statistics(emb, batch["labels"], margin=margin, where=batch["where"])
  return {f"train/{k}": float(v) for k, v in stats.items()}


def embed_all(embed_fn, state, dataset, batch_size: int) -> np.ndarray:
  """Embeddings of every sample, in fixed-size padded batches (one compile)."""
  out = []
  for index, where in data_lib.padded_batches(len(dataset), batch_size):
    out.append(np.asarray(embed_fn(state, dataset.inputs[index]))[where])
  return np.concatenate(out)


# ---------------------------------------------------------- evaluation ----- #

def evaluate(embeddings: dict[str, np.ndarray], datasets, metric: str) -> dict[str, float]:
  results = {}
  for name, emb in embeddings.items():
    m = ml.metrics.retrieval_metrics(emb, datasets[name].labels, metric=metric)
    results.update({f"{name}/{k}": m[k] for k in EVAL_KEYS})
  return results


def _reid_eval(embed_fn, state, datasets, cfg) -> dict[str, float]:
  q, g = datasets["query"], datasets["gallery"]
  qe = embed_all(embed_fn, state, q, cfg.eval_batch_size)
  ge = embed_all(embed_fn, state, g, cfg.eval_batch_size)
  m = ml.metrics.reid_metrics(qe, q.labels, q.cameras, ge, g.labels, g.cameras,
                              metric=cfg.eval_metric)
  return {f"reid/{k}": v for k, v in m.items()}


# --------------------------------------------------------- checkpoints ---- #

def checkpoint_manager(workdir: str, cfg) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  extra = {"create": True}
  if jax.process_count() > 1:
    # Every process holds the same replicated state; process 0 alone writes it.
    os.makedirs(directory, exist_ok=True)
    extra = {"create": False, "multiprocessing_options": ocp.options.MultiprocessingOptions(
        primary_host=0, active_processes={0})}
  options = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, **extra)
  return ocp.CheckpointManager(directory, options=options)


def _is_key(a) -> bool:
  return jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def storable(state):
  """Host numpy copy of the state, typed PRNG keys as their key data.

  Checkpoints hold plain arrays: the same bytes whatever device layout (one
  device, pmap, mesh, several processes) wrote them.
  """
  return jax.tree.map(
      lambda a: np.asarray(jax.random.key_data(a) if _is_key(a) else a), state)


def from_storable(template, stored):
  return jax.tree.map(
      lambda t, s: jax.random.wrap_key_data(jnp.asarray(s), impl=jax.random.key_impl(t))
      if _is_key(t) else jnp.asarray(s), template, stored)


def restore_latest(manager: ocp.CheckpointManager, state):
  """The newest checkpoint that restores; a corrupt one falls back to the previous."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(storable(state)))
      logging.info("Resumed from checkpoint at step %d.", step)
      return from_storable(state, restored)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Checkpoint at step %d could not be restored (%s); trying an "
                      "older one.", step, e)
  return state


def _broadcast_from_process_0(tree):
  """Process 0's values everywhere; typed PRNG keys travel as their key data."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return from_storable(tree, multihost_utils.broadcast_one_to_all(storable(tree)))


# ---------------------------------------------------------------- main ----- #

def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates and writes checkpoints, events, metrics, plots and summary.json."""
  start = time.time()
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  is_main = jax.process_index() == 0

  datasets = load_data(config.data)
  train = datasets["train"]
  sampler = data_lib.PKSampler(train.labels, p=config.sampler.p, k=config.sampler.k,
                               seed=config.seed)

  model_kwargs = dict(config.model)
  name, init_weights = model_kwargs.pop("name"), model_kwargs.pop("init_weights", "")
  model = models.create(name, train.inputs.shape[1:], seed=config.seed, **model_kwargs)
  if init_weights:
    model = models.load_weights(model, init_weights)
  loss_kwargs = dict(config.loss)
  loss_name = loss_kwargs.pop("name")
  state_lib.get_loss(loss_name, **loss_kwargs)         # unknown names fail here
  tx = state_lib.make_optimizer(config.optimizer, config.num_steps)
  graphdef, state = state_lib.init_state(model, tx, config.seed)
  runner = parallel.make_runner(config.parallel, graphdef, tx, loss_name, loss_kwargs,
                                sampler.batch_size)
  embed_fn = state_lib.make_embed_fn(graphdef)

  manager = checkpoint_manager(workdir, config) if is_main else None
  if manager is not None:
    state = restore_latest(manager, state)
  if jax.process_count() > 1:   # every process resumes from process 0's checkpoint
    state = _broadcast_from_process_0(state)
  first_step = int(state.step)
  state = runner.put_state(state)
  log = logger_lib.MetricLogger(workdir, enabled=is_main)
  eval_sets = [k for k in ("seen", "unseen") if k in datasets]

  def run_eval(step):
    host = runner.get_state(state)
    emb = {k: embed_all(embed_fn, host, datasets[k], config.eval_batch_size)
           for k in eval_sets}
    result = evaluate(emb, datasets, config.eval_metric)
    if "query" in datasets:
      result.update(_reid_eval(embed_fn, host, datasets, config))
    log.write(step, {f"eval/{k}": v for k, v in result.items()})
    return result, emb

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  batches = data_lib.prefetch(
      (train_batch(train, sampler, s, config) for s in range(first_step, config.num_steps)))
  bar = tqdm(total=config.num_steps, initial=first_step, desc="train", unit="step",
             disable=not (is_main and config.progress_bar), dynamic_ncols=True)
  step = first_step
  for step in range(first_step + 1, config.num_steps + 1):
    last_batch = next(batches)
    state, metrics = runner.step(state, last_batch)
    bar.update(1)
    if step % config.log_every == 0 or step == config.num_steps:
      scalars = {f"train/{k}": v for k, v in jax.device_get(metrics).items()}
      scalars.update(batch_statistics(embed_fn, runner.get_state(state), last_batch,
                                      loss_kwargs.get("margin", 0.2)))
      bad = int(runner.get_state(state).first_nonfinite_step)
      if bad >= 0 and config.nonfinite == "stop":
        raise FloatingPointError(
            f"non-finite loss or gradient at step {bad} (nonfinite='stop'); the update was "
            f"not applied and the last checkpoint holds finite values.")
      log.write(step, scalars)
      bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
    if config.eval_every and step % config.eval_every == 0 and step != config.num_steps:
      run_eval(step)
    if manager is not None and (step % config.checkpoint_every == 0
                                or step == config.num_steps):
      manager.save(step, args=ocp.args.StandardSave(storable(runner.get_state(state))))
  bar.close()
  if manager is not None:
    manager.wait_until_finished()

  state = runner.get_state(state)
  runner = parallel.make_runner("none", graphdef, tx, loss_name, loss_kwargs,
                                sampler.batch_size)   # evaluation on one copy
  final, emb = run_eval(int(state.step))
  raw = evaluate({k: datasets[k].inputs.reshape(len(datasets[k]), -1) for k in eval_sets},
                 datasets, "euclidean")
  for k in eval_sets:
    if np.all(np.isfinite(emb[k])):
      clusters = ml.metrics.clustering_metrics(emb[k], datasets[k].labels, seed=config.seed)
    else:
      logging.warning("%s embeddings are not finite: no clustering metrics.", k)
      clusters = {"nmi": float("nan"), "ami": float("nan")}
    final.update({f"{k}/{name}": v for name, v in clusters.items()})
  summary = {**final, **{f"raw/{k}": v for k, v in raw.items()},
             "steps": int(state.step), "skipped_updates": int(state.skipped),
             "wall_time_s": round(time.time() - start, 2),
             "resumed_from_step": first_step}
  if is_main:
    _write_outputs(workdir, summary, emb, datasets, eval_sets, log, config)
  log.close()
  if manager is not None:
    manager.close()
  return summary


def _write_outputs(workdir, summary, emb, datasets, eval_sets, log, config):
  paths = plots.all_paths(workdir)
  if config.plots and eval_sets:
    sets = {k: (emb[k], datasets[k].labels) for k in eval_sets}
    plots.embedding_map(paths["embedding_map"], sets)
    plots.distance_histograms(paths["distances"], sets)
    plots.curves(paths["curves"], log.history(),
                 ["train/loss", "train/active_anchor_fraction",
                  "train/hardest_positive_mean", "train/hardest_negative_mean",
                  "eval/seen/map_at_r", "eval/unseen/map_at_r"])
    name = eval_sets[-1]
    d = datasets[name]
    if d.inputs.ndim == 4:
      index = ml.index.EmbeddingIndex.create(emb[name], d.labels, metric=config.eval_metric)
      picks = np.random.default_rng(0).choice(len(d), size=min(6, len(d)), replace=False)
      nn, _ = index.search(emb[name][picks], k=min(6, len(d)))
      nn = nn[:, 1:]                                    # drop the query itself
      plots.retrieval_grid(paths["retrieval_grid"], d.inputs[picks], d.inputs, nn,
                           d.labels[nn] == d.labels[picks][:, None])
  # Enrollment without retraining: the gallery index of every evaluated class.
  if eval_sets:
    gallery = ml.index.EmbeddingIndex.create(emb[eval_sets[0]],
                                             datasets[eval_sets[0]].labels,
                                             metric=config.eval_metric)
    for k in eval_sets[1:]:
      gallery = gallery.add(emb[k], datasets[k].labels)
    gallery.save(os.path.join(workdir, "index.npz"))
  tmp = os.path.join(workdir, "summary.json.tmp")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, "summary.json"))
  print(format_summary(summary))


def format_summary(summary: dict) -> str:
  rows = []
  for split in ("seen", "unseen"):
    if f"{split}/map_at_r" not in summary:
      continue
    for key in SUMMARY_KEYS:
      rows.append((f"{split}/{key}", summary[f"{split}/{key}"],
                   summary.get(f"raw/{split}/{key}", float("nan"))))
  lines = [f"{'metric':<28} {'model':>8} {'raw pixels':>11}"]
  lines += [f"{k:<28} {v:>8.4f} {r:>11.4f}" for k, v, r in rows]
  lines += [f"{k:<28} {v:>8.4f}" for k, v in summary.items() if k.startswith("reid/")]
  lines.append(f"steps {summary['steps']}, wall time {summary['wall_time_s']} s, "
               f"skipped updates {summary['skipped_updates']}")
  return "\n".join(lines)
