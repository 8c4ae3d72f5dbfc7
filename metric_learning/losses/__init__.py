"""Loss functions: the triplet family and its classic relatives."""

from metric_learning.losses.pairs import contrastive_loss
from metric_learning.losses.pairs import lifted_structure_loss
from metric_learning.losses.pairs import margin_loss
from metric_learning.losses.pairs import multi_similarity_loss
from metric_learning.losses.pairs import npair_loss
from metric_learning.losses.triplet import batch_all_triplet_loss
from metric_learning.losses.triplet import batch_hard_triplet_loss
from metric_learning.losses.triplet import quadruplet_loss
from metric_learning.losses.triplet import selected_triplet_loss
from metric_learning.losses.triplet import semi_hard_triplet_loss
from metric_learning.losses.triplet import triplet_margin_loss

__all__ = (
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "contrastive_loss",
    "lifted_structure_loss",
    "margin_loss",
    "multi_similarity_loss",
    "npair_loss",
    "quadruplet_loss",
    "selected_triplet_loss",
    "semi_hard_triplet_loss",
    "triplet_margin_loss",
)
