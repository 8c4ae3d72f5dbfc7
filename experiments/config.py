"""The experiment config: checked, resolved and compared before anything is written.

``validate(config)`` checks every field against the registry of the part it
names (one line naming the field, the closest valid name when there is one);
``resolve(config)`` fills every section with the defaults its part uses, so
that ``config.json`` says how a run was made; ``config_differences`` decides
whether a workdir may be resumed, and ``claim_workdir`` records the config in a
workdir (or refuses one made by another config). The trainer (``experiments/train.py``) and
the tools read configs only through this module.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import numbers
import os
import subprocess
import time

import jax
import ml_collections
from absl import logging

import metric_learning as ml
from metric_learning import _validation
from metric_learning import evaluators
from metric_learning import models
from metric_learning.data import registry as data_registry
from metric_learning.data import sources
from metric_learning.losses import registry as loss_registry
from metric_learning.training import optim
from metric_learning.training import parallel
from metric_learning.training import rundir

# Top-level fields: (type, check, what it must be). Sections are checked against
# the registries of their parts.
SCALARS = {
    "seed": (int, lambda v: True, "an integer"),
    "num_steps": (int, lambda v: v >= 1, ">= 1"),
    "log_every": (int, lambda v: v >= 1, ">= 1"),
    "eval_every": (int, lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    "checkpoint_every": (int, lambda v: v >= 1, ">= 1"),
    "keep_checkpoints": (int, lambda v: v >= 1, ">= 1"),
    "eval_batch_size": (int, lambda v: v >= 1, ">= 1"),
    "parallel": (str, lambda v: v in parallel.MODES, f"one of {list(parallel.MODES)}"),
    "nonfinite": (str, lambda v: v in ("skip", "stop"), "one of ['skip', 'stop']"),
    "plots": (bool, lambda v: True, "True or False"),
    "progress_bar": (bool, lambda v: True, "True or False"),
    "raw_baseline": (bool, lambda v: True, "True or False"),
    "health_patience": (int, lambda v: v >= 1, ">= 1"),
    "workers": (int, lambda v: v >= 0, ">= 0 (0 = decode image files in the main process)"),
    "embed_chunk": (int, lambda v: v >= 0,
                    ">= 0 (rows embedded at a time with gradient caching; 0 = all at once)"),
    "loss_lr_scale": (numbers.Real, lambda v: v > 0,
                      "a number > 0 (the loss parameters' learning rate / the encoder's)"),
}
KINDS = {"data": "dataset", "model": "model", "loss": "loss", "optimizer": "optimizer",
         "schedule": "schedule"}
SECTIONS = ("data", "model", "loss", "sampler", "optimizer", "schedule", "augment", "evals")
# Fields that may change when a run resumes: they change no figure of the run.
RESUMABLE_CHANGES = ("progress_bar", "plots", "keep_checkpoints", "checkpoint_every",
                     "workers")


class ConfigError(ValueError):
  """A configuration field is wrong; the message names it (absl UsageError style)."""


def part_settings(section) -> dict:
  """A section's settings without its ``name``."""
  return {k: v for k, v in dict(section).items() if k != "name"}


def validate(config) -> None:
  """Checks every field before anything is written; raises :class:`ConfigError`."""
  known = set(SCALARS) | set(SECTIONS)
  for key in config.keys():
    if key not in known:
      raise ConfigError(not_a_field(f"config.{key}", known))
  for key in list(SCALARS) + list(SECTIONS):
    if key not in config:
      raise ConfigError(f"config.{key} is missing.")
  for key, (kind, ok, what) in SCALARS.items():
    value = config[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)) \
        or not ok(value):
      raise ConfigError(f"config.{key} must be {what}; got {value!r}.")

  def part(section: str, arguments, names):
    cfg = config[section]
    if "name" not in cfg:
      raise ConfigError(f"config.{section}.name is missing; choose one of {sorted(names)}.")
    if cfg.name not in names:
      raise ConfigError(_validation.unknown_name(cfg.name, names, field=f"config.{section}.name",
                                                 kind=KINDS[section]))
    try:
      _validation.known_settings(part_settings(cfg), arguments(cfg.name), field=f"config.{section}",
                                 owner=f"{section} {cfg.name!r}")
    except ValueError as e:
      raise ConfigError(str(e)) from None

  part("data", data_registry.arguments, data_registry.DATASETS)
  part("model", models.arguments, models.MODELS)
  part("loss", loss_registry.arguments, loss_registry.LOSSES)
  opt_args = lambda n: {**optim.optimizer_arguments(n), "learning_rate": 0, "grad_clip": 0}
  part("optimizer", opt_args, optim.OPTIMIZERS)
  if config.loss_lr_scale != 1 and loss_registry.proxies_per_class(
      config.loss.name, part_settings(config.loss)) is None:
    raise ConfigError(f"config.loss_lr_scale sets the learning rate of a proxy (classifier) "
                      f"loss's class vectors; loss {config.loss.name!r} has none (leave it at "
                      f"1.0); got {config.loss_lr_scale!r}.")
  lr = config.optimizer.get("learning_rate")
  if lr is None:
    raise ConfigError("config.optimizer.learning_rate is missing.")
  if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
    raise ConfigError(f"config.optimizer.learning_rate must be a number > 0; got {lr!r} (a "
                      "negative rate would train by gradient ascent).")
  part("schedule", lambda n: {**optim.schedule_arguments(n), "warmup_steps": 0},
       optim.SCHEDULES)
  for key in config.sampler:
    if key not in ("p", "k"):
      raise ConfigError(f"config.sampler.{key} is not a field; the sampler takes p and k.")
  p, k = config.sampler.get("p"), config.sampler.get("k")
  if not isinstance(p, int) or p < 1 or not isinstance(k, int) or k < 2:
    raise ConfigError(f"config.sampler needs p >= 1 and k >= 2; got p={p!r}, k={k!r}.")
  validate_augment(config.data.name, config.augment)
  for name, spec in dict(config.evals).items():
    spec = dict(spec)
    if "name" not in spec:
      hint = " (evaluators are chosen by name, no longer by type)" if "type" in spec else ""
      raise ConfigError(f"config.evals.{name}.name is missing{hint}; choose one of "
                        f"{sorted(evaluators.EVALUATORS)}.")
    try:
      evaluators.create(spec.pop("name"), **spec)
    except ValueError as e:
      raise ConfigError(f"config.evals.{name}: {e}") from None
  if config.parallel != "none" and (p * k) % jax.device_count():
    raise ConfigError(f"config.sampler: the batch of p*k = {p * k} rows must divide over the "
                      f"{jax.device_count()} devices of parallel={config.parallel!r}.")
  rows = p * k // jax.device_count() if config.parallel == "pmap" else p * k
  if config.embed_chunk and rows % config.embed_chunk:
    where = "each device's" if config.parallel == "pmap" else "the"
    raise ConfigError(f"config.embed_chunk={config.embed_chunk} must divide {where} batch of "
                      f"{rows} rows (sampler p*k = {p * k}, parallel={config.parallel!r}).")


def validate_augment(data_name: str, augment) -> None:
  """``config.augment``: one :class:`~metric_learning.data.transforms.Transform`
  for either kind of data (:mod:`metric_learning.data.sources`), checked for the
  kind ``data_name`` is (arrays take no colour jitter, image files need a size)."""
  try:
    sources.kind(data_name).check_augment(dict(augment))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.{e}") from None


def to_json(config) -> dict:
  """The resolved config as plain JSON values (tuples as lists)."""
  return json.loads(json.dumps(config.to_dict(), default=list))


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: dict, current: dict, defaults=()) -> list[str]:
  """``field: saved → current`` for every field that differs (resumable ones aside).

  ``defaults``: the fields of ``current`` that hold a part's default (see
  :func:`resolve`); one absent from ``saved`` is not a difference (a run
  recorded before defaults were written out used the same default).
  """
  a, b = _flatten(saved), _flatten(current)
  defaults = set(defaults)
  return [f"{k}: {a.get(k, '<absent>')!r} → {b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b))
          if a.get(k, "<absent>") != b.get(k, "<absent>") and k not in RESUMABLE_CHANGES
          and not (k not in a and k in defaults)]


# Evaluator settings renamed since runs were first recorded: {evaluator: {old: new}}.
_RENAMED_EVAL_SETTINGS = {"knn": {"k": "ks"}, "reid": {"ranks": "ks"}}


def upgrade_saved(saved: dict) -> dict:
  """A recorded ``config.json`` in today's schema: runs recorded before every
  section chose its part with ``name`` named their evaluators by ``type``, and
  the cut-offs of the k-NN and re-ID evaluators ``k`` and ``ranks`` (``ks`` now),
  runs recorded before ``loss_lr_scale`` trained every parameter at one rate, and
  a run on image files recorded before ``augment.size`` was required used 224×224
  (:func:`metric_learning.data.sources.upgrade_augment`)."""
  saved.setdefault("loss_lr_scale", 1.0)   # recorded before it existed: the encoder's rate
  saved.setdefault("embed_chunk", 0)       # ... and before gradient caching
  saved["augment"] = sources.upgrade_augment(saved.get("data", {}).get("name"),
                                             saved.get("augment", {}))
  for spec in saved.get("evals", {}).values():
    if not isinstance(spec, dict):
      continue
    if "type" in spec and "name" not in spec:
      spec["name"] = spec.pop("type")
    for old, new in _RENAMED_EVAL_SETTINGS.get(spec.get("name"), {}).items():
      if old in spec and new not in spec:
        spec[new] = spec.pop(old)
  return saved


def load_config_file(path: str):
  """``get_config()`` of a config file, as the file alone defines it."""
  spec = importlib.util.spec_from_file_location("_experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def resolve_part_overrides(config, file_config, overrides: dict):
  """A section whose ``name`` the command line changed keeps only the
  command line's settings: the file's were meant for the file's part."""
  for section in ("data", "model", "loss", "optimizer", "schedule"):
    if f"{section}.name" not in overrides:
      continue
    _check_part_name(section, config[section].get("name"))
    if file_config[section].get("name") == config[section].name:
      continue
    _keep_given(config, section, overrides, f"--config.{section}.name={config[section].name}")
  return config


def _check_part_name(section: str, name) -> None:
  names = {"data": data_registry.DATASETS, "model": models.MODELS, "loss": loss_registry.LOSSES,
           "optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES}[section]
  if name not in names:
    raise ConfigError(_validation.unknown_name(name, names, field=f"config.{section}.name",
                                               kind=KINDS[section]))


def _keep_given(config, section, overrides, why):
  given = {k: config[section][k] for k in config[section]
           if k == "name" or f"{section}.{k}" in overrides}
  dropped = sorted(set(config[section]) - set(given))
  if dropped:
    logging.warning("%s: using its defaults, not the config file's %s.", why,
                    ", ".join(f"{section}.{k}" for k in dropped))
  with config.unlocked():
    config[section] = given


def not_a_field(field: str, known) -> str:
  """``{field} is not a field``, with the closest field when one is close."""
  parent, _, key = field.rpartition(".")
  close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
  if close:
    return f"{field} is not a field; did you mean {parent}.{close[0]}?"
  return f"{field} is not a field; the fields are {sorted(known)}."


def _evaluator_defaults(kind: str) -> dict:
  cls = evaluators.EVALUATORS[kind]
  return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def section_defaults(config) -> dict:
  """Every setting each section's part uses when the config leaves it out.

  ``{section: {field: default}}`` (``evals`` by evaluator name) for a config
  that :func:`validate` accepted.
  """
  out = {
      "data": data_registry.arguments(config.data.name),
      "model": models.arguments(config.model.name),
      "loss": loss_registry.arguments(config.loss.name),
      "optimizer": {"grad_clip": 0.0, **optim.optimizer_arguments(config.optimizer.name)},
      "schedule": {"warmup_steps": 0, **optim.schedule_arguments(config.schedule.name)},
      "augment": sources.augment_defaults(),
  }
  out["evals"] = {name: _evaluator_defaults(spec["name"])
                  for name, spec in config.evals.items()}
  return out


def resolve(config) -> tuple[dict, list[str]]:
  """The config as plain JSON with every default in effect written out.

  Returns:
    ``(resolved, added)``: the resolved config (what ``config.json`` records)
    and the dotted fields that came from a part's defaults rather than from
    the config (a workdir written before defaults were recorded lacks exactly
    those).
  """
  resolved = to_json(config)
  added = []
  for section, defaults in section_defaults(config).items():
    groups = ({name: (resolved[section][name], d) for name, d in defaults.items()}
              if section == "evals" else {"": (resolved[section], defaults)})
    for prefix, (target, values) in groups.items():
      for key, value in json.loads(json.dumps(values, default=list)).items():
        if key not in target:
          target[key] = value
          added.append(".".join(p for p in (section, prefix, key) if p))
  return resolved, sorted(added)


def check_overrides(file_config, argv: list[str], part_sections) -> None:
  """Fails on a ``--config.PATH=VALUE`` whose path the config does not have.

  A new field of a part section (``--config.loss.FIELD``) is allowed here and
  checked against the part's own arguments by :func:`validate`.
  """
  for arg in argv:
    key = arg.partition("=")[0]
    if not key.startswith("--config."):
      continue
    parts = key[len("--config."):].split(".")
    node, path = file_config, "config"
    for i, part in enumerate(parts):
      if isinstance(node, (dict, ml_collections.ConfigDict)) and part in node:
        node, path = node[part], f"{path}.{part}"
        continue
      if i == 1 and len(parts) == 2 and parts[0] in part_sections:
        break                          # a part's own argument the file leaves out
      if not isinstance(node, (dict, ml_collections.ConfigDict)):
        raise ConfigError(f"--config.{'.'.join(parts)}: {path} is a value, not a section.")
      message = not_a_field(f"{path}.{part}", list(node.keys()))
      raise ConfigError(message)


def check_loss(loss, config, dim: int, proxies) -> None:
  """Traces the configured loss once on a dummy batch (no compute), so that a
  value the loss refuses (a negative margin) is a config error before anything
  is written."""
  p, k = config.sampler.p, config.sampler.k
  emb = jax.ShapeDtypeStruct((p * k, dim), jax.numpy.float32)
  labels = jax.ShapeDtypeStruct((p * k,), jax.numpy.int32)
  where = jax.ShapeDtypeStruct((p * k,), bool)
  args = () if proxies is None else (
      jax.ShapeDtypeStruct((proxies[0] * proxies[2], dim), jax.numpy.float32),)
  try:
    jax.eval_shape(lambda e, y, w, *a: loss(e, y, *a, where=w), emb, labels, where, *args)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.loss ({config.loss.name!r}): {e}") from None


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
  current, defaults = resolve(config)
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
    saved = upgrade_saved(run.read_json(rundir.CONFIG))
    diff = config_differences(saved, current, defaults)
    if diff:
      raise ConfigError(f"workdir {workdir!r} was made by a different config ("
                        + "; ".join(diff) + "); use another --workdir, or --fresh to move "
                        "the old run aside and start anew.")
  run.write_json(rundir.CONFIG, current)
  run.write_json(rundir.PROVENANCE, _provenance())
