"""Loss functions: the triplet family, its classic relatives, the contrastive family,
pair-based and proxy (classifier) losses."""

from metric_learning.losses.contrastive import ntxent_loss
from metric_learning.losses.contrastive import sigmoid_loss
from metric_learning.losses.contrastive import supcon_loss
from metric_learning.losses.pair_based import angular_loss
from metric_learning.losses.pair_based import circle_loss
from metric_learning.losses.pair_based import fast_ap_loss
from metric_learning.losses.pair_based import generalized_lifted_structure_loss
from metric_learning.losses.pair_based import nca_loss
from metric_learning.losses.pair_based import tuplet_margin_loss
from metric_learning.losses.pairs import contrastive_loss
from metric_learning.losses.pairs import lifted_structure_loss
from metric_learning.losses.pairs import margin_loss
from metric_learning.losses.pairs import multi_similarity_loss
from metric_learning.losses.pairs import npair_loss
from metric_learning.losses.proxies import arcface_loss
from metric_learning.losses.proxies import cosface_loss
from metric_learning.losses.proxies import normalized_softmax_loss
from metric_learning.losses.proxies import proxy_anchor_loss
from metric_learning.losses.proxies import proxy_nca_loss
from metric_learning.losses.proxies import soft_triple_loss
from metric_learning.losses.proxies import subcenter_arcface_loss
from metric_learning.losses.triplet import batch_all_triplet_loss
from metric_learning.losses.triplet import batch_hard_triplet_loss
from metric_learning.losses.triplet import quadruplet_loss
from metric_learning.losses.triplet import selected_triplet_loss
from metric_learning.losses.triplet import semi_hard_triplet_loss
from metric_learning.losses.triplet import triplet_margin_loss

__all__ = (
    "angular_loss",
    "arcface_loss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "circle_loss",
    "contrastive_loss",
    "cosface_loss",
    "fast_ap_loss",
    "generalized_lifted_structure_loss",
    "lifted_structure_loss",
    "margin_loss",
    "multi_similarity_loss",
    "nca_loss",
    "normalized_softmax_loss",
    "npair_loss",
    "ntxent_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "quadruplet_loss",
    "selected_triplet_loss",
    "semi_hard_triplet_loss",
    "sigmoid_loss",
    "soft_triple_loss",
    "subcenter_arcface_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "tuplet_margin_loss",
)
