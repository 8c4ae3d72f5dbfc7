"""``train_and_evaluate(config, workdir)``: one straight-line training run.

Sections: setup (validate the config, claim the workdir) → data → model and
optimizer → restore → train loop (log, health, evaluate, checkpoint, signals)
→ final evaluation, plots and summary. Every part is chosen by name from a
registry and configured by its own section (see ``experiments/configs/default.py``);
the maths lives in the library.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

import metric_learning as ml
from experiments import config as config_lib
from experiments import evaluation
from experiments.config import ConfigError
from metric_learning import models
from metric_learning import training
from metric_learning.data import registry as data_registry
from metric_learning.data import sampler as sampler_lib
from metric_learning.data import sources
from metric_learning.losses import registry as loss_registry
from metric_learning.training import checkpoint
from metric_learning.training import logger as logger_lib
from metric_learning.training import optim
from metric_learning.training import parallel
from metric_learning.training import rundir


class Interrupted(Exception):
  """SIGINT / SIGTERM stopped the run after saving a checkpoint at ``step``."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    name = signal.Signals(signum).name
    super().__init__(f"{name} at step {step}: checkpoint saved in {workdir}; run the same "
                     "command again to resume.")


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
  try:   # arrays in memory or image files decoded per batch: one interface
    splits = {k: sources.source(v, config.augment) for k, v in datasets.items()}
    sampler = sampler_lib.PKSampler(splits["train"].labels, p=config.sampler.p,
                                    k=config.sampler.k, seed=config.seed)
  except ValueError as e:
    raise ConfigError(f"config.{e}" if str(e).startswith("augment") else
                      f"config.sampler: {e}") from None
  train = splits["train"]
  evals = evaluation.make_evaluators(config)
  input_shape = train.input_shape

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
    train = dataclasses.replace(train, split=dataclasses.replace(
        train.split, class_names=None,
        labels=np.searchsorted(classes, train.labels).astype(np.int32)))

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
                                 num_steps=config.num_steps,
                                 **config_lib.part_settings(config.schedule))
  tx = optim.make_optimizer(config.optimizer.name, schedule, **opt, lr_scales=(
      None if proxies is None else {"proxies": config.loss_lr_scale}))
  graphdef, state = training.init_state(model, tx, config.seed)
  # Training statistics, computed inside the step at log steps on the embeddings the
  # loss saw, over the global batch. Their triplet margin: the loss's own for a
  # triplet hinge (trait ``triplet_margin``), else the statistics' default 0.2.
  hinge_margin = loss_registry.triplet_margin(config.loss.name, loss_settings)
  margin = 0.2 if hinge_margin is None else hinge_margin
  runner = parallel.make_runner(
      config.parallel, graphdef, tx, make_loss, sampler.batch_size, local_rows=train.local_rows,
      statistics=lambda e, y, w: ml.triplet_statistics(e, y, margin=margin, where=w),
      statistics_at=lambda s: (s % config.log_every == 0) | (s == config.num_steps),
      embed_chunk=config.embed_chunk or None)
  embed_fn = training.make_embed_fn(graphdef)

  # ---------------------------------------------------------- restore ---- #
  # Claimed only now: a wrong data path, sampler or weights file writes nothing.
  if is_main:
    config_lib.claim_workdir(config, workdir, fresh=fresh)
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
    run.write_json(rundir.LABELS, {str(k): v for k, v in evaluation.label_names(
        splits).items()}, sort_keys=False)
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
    results, emb = evaluation.run_evaluators(evals, lambda x: embed_fn(host, x), splits,
                                             config.eval_batch_size, config.workers)
    log.write(step, {f"eval/{k}": v for k, v in results.items()
                     if isinstance(v, (int, float))})
    return results, emb

  # ------------------------------------------------------- train loop ---- #
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  batches = train.train_batches(   # this process's rows where the source decodes them
      sampler, seed=config.seed, start_step=first_step, num_steps=config.num_steps,
      workers=config.workers, process_index=jax.process_index(),
      process_count=jax.process_count())
  bar = tqdm(total=config.num_steps, initial=first_step, desc="train", unit="step",
             disable=not (is_main and config.progress_bar), dynamic_ncols=True)
  step = first_step
  for step in range(first_step + 1, config.num_steps + 1):
    if stop.signum is not None:
      step -= 1
      break
    state, metrics = runner.step(state, next(batches))
    bar.update(1)
    if step % config.log_every == 0 or step == config.num_steps:
      stats = {k: float(v) for k, v in jax.device_get(metrics).items()}
      scalars = {f"train/{k}": v for k, v in stats.items()}
      scalars["train/learning_rate"] = float(schedule(step - 1))
      bad = int(runner.get_state(state).first_nonfinite_step)
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
    raw, _ = evaluation.run_evaluators(evals, evaluation.raw_pixels, splits,
                                       config.eval_batch_size, config.workers)
    summary.update({f"raw/{k}": v for k, v in raw.items()})
    # Beside the model's figures in TensorBoard and metrics.jsonl, at the final step.
    log.write(int(state.step), {f"raw/{k}": v for k, v in raw.items()
                                if isinstance(v, (int, float))})
  summary.update({"steps": int(state.step), "skipped_updates": int(state.skipped),
                  "wall_time_s": round(elapsed_before + time.time() - start, 2),
                  "resumed_from_step": first_step, "health_warnings": warnings,
                  "skipped_bad_files": skipped_files})
  if is_main:
    evaluation.write_outputs(workdir, summary, emb, splits, log.history(), draw=config.plots)
  log.close()
  if manager is not None:
    manager.close()
  return summary
