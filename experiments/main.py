"""Launch an experiment: ``python -m experiments.main --config=... --workdir=...``.

Any config field can be overridden: ``--config.loss.margin=0.1``. Overriding a
part's name (``--config.loss.name=multi_similarity_loss``) switches to that part
with its own defaults: the config file's other settings of that section were
meant for the file's part and are dropped (``--config.loss.FIELD=...`` on the
command line still applies, also for a field the file does not set). A config
error stops before training with one line naming the field; SIGINT / SIGTERM
save a checkpoint and stop with one line.

For several processes (hosts), give each the same ``--coordinator_address`` and
``--num_processes`` and its own ``--process_id`` (or set ML_COORDINATOR_ADDRESS,
ML_NUM_PROCESSES, ML_PROCESS_ID); on TPU pods and SLURM, ``--distributed``
alone lets ``jax.distributed.initialize`` discover them.
"""

import ast
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import config as config_lib

DEFAULT_CONFIG = "experiments/configs/default.py"

# Sections whose fields are the arguments of a part chosen by name: the command
# line may set a field the config file leaves out (the part's own default).
PART_SECTIONS = ("data", "model", "loss", "sampler", "optimizer", "schedule", "augment")
_NEW_FIELDS: dict[str, object] = {}


def _literal(text: str):
  """A command-line value as Python: numbers, tuples, booleans, None; else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def take_new_fields(argv: list[str]) -> list[str]:
  """Removes ``--config.SECTION.FIELD=VALUE`` for fields the config file lacks from
  ``argv`` (ml_collections only overrides existing fields) and keeps them in
  ``_NEW_FIELDS``; :func:`main` adds them to the config, and validation checks them
  against the part's own arguments."""
  config_file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
                     DEFAULT_CONFIG)
  if not os.path.isfile(config_file):
    return argv
  file_config = config_lib.load_config_file(config_file)
  config_lib.check_overrides(file_config, argv[1:], PART_SECTIONS)
  kept = []
  for arg in argv:
    key, _, value = arg.partition("=")
    parts = key[len("--config."):].split(".") if key.startswith("--config.") else []
    if (len(parts) == 2 and parts[0] in PART_SECTIONS and parts[0] in file_config
        and parts[1] not in file_config[parts[0]]):
      _NEW_FIELDS[".".join(parts)] = _literal(value)
    else:
      kept.append(arg)
  return kept


if __name__ == "__main__":
  # ml_collections reads the overrides from sys.argv as soon as the config flag is
  # defined (for the default config file), so overrides are checked and new fields
  # leave sys.argv first.
  try:
    sys.argv[:] = take_new_fields(sys.argv)
  except config_lib.ConfigError as e:
    print(f"FATAL config error: {e}", file=sys.stderr)
    sys.exit(2)

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                          "Experiment configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/default",
                               "Checkpoints, logs, plots and summary.json go here.")
_FRESH = flags.DEFINE_bool("fresh", False,
                           "Move an existing workdir aside (WORKDIR.old-TIMESTAMP) and start "
                           "anew, instead of resuming it.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize (auto-detected cluster).")
_COORDINATOR = flags.DEFINE_string("coordinator_address",
                                   os.environ.get("ML_COORDINATOR_ADDRESS", ""),
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes",
                                      int(os.environ.get("ML_NUM_PROCESSES", "1")),
                                      "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", int(os.environ.get("ML_PROCESS_ID", "0")),
                                   "This process's index.")

def initialize_distributed() -> None:
  if _COORDINATOR.value and _NUM_PROCESSES.value > 1:
    if jax.config.jax_platforms in (None, "", "cpu"):
      # Cross-process collectives on CPU need gloo.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Library INFO logs (orbax) would bury the summary table; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  initialize_distributed()
  from experiments import train  # pylint: disable=import-outside-toplevel
  flag = flags.FLAGS["config"]
  config = _CONFIG.value
  with config.unlocked():
    for path, value in _NEW_FIELDS.items():
      section, field = path.split(".")
      config[section][field] = value
  try:
    config = config_lib.resolve_part_overrides(
        config, config_lib.load_config_file(config_flags.get_config_filename(flag)),
        {**config_flags.get_override_values(flag), **_NEW_FIELDS})
  except config_lib.ConfigError as e:
    _fail(str(e))
  logging.warning("JAX process %d/%d, %d local / %d global devices", jax.process_index(),
                  jax.process_count(), jax.local_device_count(), jax.device_count())
  try:
    train.train_and_evaluate(config, _WORKDIR.value, fresh=_FRESH.value)
  except config_lib.ConfigError as e:
    _fail(str(e))
  except FileNotFoundError as e:   # a dataset or weights file that is not there
    print(f"FATAL not found: {e}", file=sys.stderr)
    sys.exit(2)
  except train.Interrupted as e:
    print(f"Interrupted: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)


def _fail(message: str) -> None:
  """One line on stderr and exit status 2, like absl's flag errors; no traceback."""
  print(f"FATAL config error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl flag parsing whose config mistakes end in one line naming the field."""
  for arg in argv[1:]:
    if arg.startswith("--config=") and not os.path.isfile(arg.split("=", 1)[1]):
      _fail(f"--config: no such config file {arg.split('=', 1)[1]!r} (relative paths start "
            "at the current directory; run from the repository root).")
  try:
    kept = take_new_fields(argv)
  except config_lib.ConfigError as e:
    _fail(str(e))
  try:
    return flags.FLAGS(kept)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:   # an override of a field the config lacks
    field = str(e).strip("\"'")
    bad = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")
           and a.split("=", 1)[0].rsplit(".", 1)[-1] == field]
    _fail(f"{bad[0] if bad else field}: the config has no field {field!r}.")
  except (TypeError, ValueError) as e:
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
