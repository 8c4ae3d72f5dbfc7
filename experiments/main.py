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

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli
from experiments import config as config_lib

if __name__ == "__main__":
  # ml_collections reads the overrides from sys.argv as soon as the config flag is
  # defined (for the default config file), so overrides are checked and new fields
  # leave sys.argv first.
  cli.strip_new_fields()

_CONFIG = config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG,
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
  config = cli.config_from_flags()
  logging.warning("JAX process %d/%d, %d local / %d global devices", jax.process_index(),
                  jax.process_count(), jax.local_device_count(), jax.device_count())
  try:
    train.train_and_evaluate(config, _WORKDIR.value, fresh=_FRESH.value)
  except config_lib.ConfigError as e:
    cli.fail(str(e))
  except FileNotFoundError as e:   # a dataset or weights file that is not there
    print(f"FATAL not found: {e}", file=sys.stderr)
    sys.exit(2)
  except train.Interrupted as e:
    print(f"Interrupted: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
