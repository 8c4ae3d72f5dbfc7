"""Launch an experiment: ``python -m experiments.main --config=... --workdir=...``.

Any config field can be overridden: ``--config.loss.margin=0.1``.
"""

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/default.py", "Experiment configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/default",
                               "Checkpoints, logs, plots and summary.json go here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from metric_learning import training  # pylint: disable=import-outside-toplevel
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
