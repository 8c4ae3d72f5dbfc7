"""Train state, steps, checkpointing, logging and plots (extra: experiments)."""

from metric_learning.training.state import LOSSES
from metric_learning.training.state import TrainState
from metric_learning.training.state import get_loss
from metric_learning.training.state import make_embed_fn
from metric_learning.training.state import make_optimizer
from metric_learning.training.state import make_train_step
from metric_learning.training.train import train_and_evaluate

__all__ = ("LOSSES", "TrainState", "get_loss", "make_embed_fn", "make_optimizer",
           "make_train_step", "train_and_evaluate")
