"""Evaluate a trained run again, with its own or other evaluators: no retraining.

``python -m experiments.tools.evaluate --workdir=W [--step=N] [--config.evals.NAME.FIELD=V ...]
[--evals_from=CONFIG_FILE]``

The run's recorded config (``W/config.json``) gives the data and the
evaluators; ``--config.evals...`` changes an evaluator's settings (e.g.
``--config.evals.unseen_fewshot.ways=3``) and ``--evals_from`` takes the
``evals`` section of another config file instead. Only the evaluation may
change: overriding any other field is refused, since the checkpoint was not
trained with it. The newest checkpoint is used unless ``--step`` names one.

Results go to ``W/evals/step_N.json`` (the figures, the evaluators used and the
checkpoint step) and to stdout as the trainer's summary table. Checkpoints,
``config.json``, ``metrics.jsonl`` and TensorBoard are never written.
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import config as config_lib
from experiments.tools import embed as embed_lib
from experiments import evaluation
from metric_learning.data import registry as data_registry
from metric_learning.data import sources
from metric_learning.training import embedder
from metric_learning.training import rundir

# What an evaluation may change; everything else is how the model was trained.
EVALUATION_FIELDS = ("evals", "eval_batch_size", "workers", "raw_baseline")


def _workdir_argument(argv: list[str]) -> str | None:
  for arg in argv[1:]:
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
  return None


def recorded_config(workdir: str) -> ml_collections.ConfigDict:
  """``W/config.json`` as a ConfigDict (lists as tuples, as the config files write them)."""
  saved = rundir.RunDir(workdir).read_json(rundir.CONFIG)
  if saved is None:
    raise embed_lib.ToolError(f"--workdir: {rundir.RunDir(workdir).path(rundir.CONFIG)!r} not "
                              "found; give the --workdir of a training run (python -m "
                              "experiments.main --workdir=...).")
  saved = config_lib.upgrade_saved(saved)

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x
  return ml_collections.ConfigDict(tuples(saved))


def run(workdir: str, config, *, step: int | None = None) -> dict:
  """Evaluates checkpoint ``step`` (None: the newest) of ``workdir`` with ``config.evals``.

  Returns:
    ``{"step": N, "results": {...}, "evals": {...}}``, also written to
    ``workdir/evals/step_N.json``.
  """
  saved = recorded_config(workdir)
  changed = [d for d in config_lib.config_differences(
      config_lib.to_json(saved), config_lib.to_json(config))
      if d.split(":")[0].split(".")[0] not in EVALUATION_FIELDS]
  if changed:
    raise embed_lib.ToolError("only the evaluation may change (" + ", ".join(
        f"config.{f}" for f in EVALUATION_FIELDS) + "); these fields are how the model was "
        "trained: " + "; ".join(changed) + ".")
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as e:
    raise embed_lib.ToolError(f"config error: {e}") from None
  embed = embed_lib.load_embedder(workdir) if step is None else _load_at(workdir, step)
  datasets = data_registry.create(config.data.name, **config_lib.part_settings(config.data))
  splits = {k: sources.source(v, config.augment) for k, v in datasets.items()}
  evals = evaluation.make_evaluators(config)
  results, _ = evaluation.run_evaluators(evals, embed, splits, config.eval_batch_size,
                                         config.workers)
  if config.raw_baseline:
    raw, _ = evaluation.run_evaluators(evals, evaluation.raw_pixels, splits,
                                       config.eval_batch_size, config.workers)
    results.update({f"raw/{k}": v for k, v in raw.items()})
  out = {"step": int(embed.step), "results": results,
         "evals": config_lib.to_json(config)["evals"]}
  path = rundir.RunDir(workdir).write_json(rundir.EVALS, out, f"step_{embed.step}.json")
  table = evaluation.format_summary({**results, "steps": embed.step, "wall_time_s": 0,
                                "skipped_updates": 0, "health_warnings": []})
  print("\n".join(table.splitlines()[:-1]))
  print(f"checkpoint step {embed.step}; written to {path}")
  return out


def _load_at(workdir: str, step: int):
  try:
    embed = embedder.load_embedder(workdir, step=step)
  except FileNotFoundError as e:
    raise embed_lib.ToolError(f"--step: {e}") from e
  return embed


def main() -> None:
  workdir = _workdir_argument(sys.argv)
  try:
    base = recorded_config(workdir) if workdir else ml_collections.ConfigDict()
  except embed_lib.ToolError as e:
    embed_lib.fail(str(e))
  config = config_flags.DEFINE_config_dict("config", base, "The run's recorded config; "
                                           "override evaluators with --config.evals...")
  workdir_flag = flags.DEFINE_string("workdir", None, "A training run's --workdir.")
  step = flags.DEFINE_integer("step", None, "The checkpoint step (default: the newest).")
  evals_from = flags.DEFINE_string("evals_from", None, "A config file whose evals section "
                                   "replaces the run's.")
  flags.mark_flags_as_required(["workdir"])

  def evaluate():
    cfg = config.value
    if evals_from.value:
      if not os.path.isfile(evals_from.value):
        raise embed_lib.ToolError(f"--evals_from: no such config file {evals_from.value!r}.")
      with cfg.unlocked():
        cfg.evals = config_lib.load_config_file(evals_from.value).evals
    run(workdir_flag.value, cfg, step=step.value)

  app.run(embed_lib.main_of(evaluate), flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    embed_lib.fail(f"Flags parsing error: {e}")
  except (AttributeError, KeyError) as e:
    embed_lib.fail(f"config error: {str(e).strip(chr(39))}")


if __name__ == "__main__":
  main()
