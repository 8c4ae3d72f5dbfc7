"""Reusable training pieces with explicit arguments (extra: experiments).

No module here reads a configuration object: the config-reading trainer lives
in ``experiments/train.py`` and composes these.
"""

from metric_learning import _extras

_extras.require_extra("experiments", "metric_learning.training")

from metric_learning.training.embedder import export_embedder
from metric_learning.training.embedder import load_embedder
from metric_learning.training.embedder import load_model
from metric_learning.training.embedder import model_identity
from metric_learning.training.embedder import same_model
from metric_learning.training.embedder import save_model_spec
from metric_learning.training.health import HealthMonitor
from metric_learning.training.optim import OPTIMIZERS
from metric_learning.training.optim import SCHEDULES
from metric_learning.training.optim import make_optimizer
from metric_learning.training.optim import make_schedule
from metric_learning.training.parallel import make_runner
from metric_learning.training.rundir import RunDir
from metric_learning.training.state import TrainState
from metric_learning.training.state import init_state
from metric_learning.training.state import make_embed_fn
from metric_learning.training.state import make_train_step

__all__ = ("HealthMonitor", "OPTIMIZERS", "RunDir", "SCHEDULES", "TrainState",
           "export_embedder", "init_state", "load_embedder", "load_model", "make_embed_fn", "make_optimizer", "make_runner",
           "make_schedule", "make_train_step", "model_identity", "same_model",
           "save_model_spec")
