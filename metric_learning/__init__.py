"""metric_learning: deep metric learning in JAX — the triplet loss and online mining.

The public API is imported here explicitly; nothing heavy is
imported at package import (core needs only jax and numpy).
"""

from metric_learning import index
from metric_learning import masks
from metric_learning import memory
from metric_learning import metrics
from metric_learning import mining
from metric_learning.losses import presets
from metric_learning import reductions
from metric_learning import reranking
from metric_learning import serving
from metric_learning.distances import l2_normalize
from metric_learning.distances import paired_distances
from metric_learning.distances import pairwise_distances
from metric_learning.losses import angular_loss
from metric_learning.losses import arcface_loss
from metric_learning.losses import batch_all_triplet_loss
from metric_learning.losses import batch_hard_triplet_loss
from metric_learning.losses import circle_loss
from metric_learning.losses import contrastive_loss
from metric_learning.losses import cosface_loss
from metric_learning.losses import fast_ap_loss
from metric_learning.losses import generalized_lifted_structure_loss
from metric_learning.losses import lifted_structure_loss
from metric_learning.losses import margin_loss
from metric_learning.losses import multi_similarity_loss
from metric_learning.losses import nca_loss
from metric_learning.losses import normalized_softmax_loss
from metric_learning.losses import npair_loss
from metric_learning.losses import ntxent_loss
from metric_learning.losses import proxy_anchor_loss
from metric_learning.losses import proxy_nca_loss
from metric_learning.losses import quadruplet_loss
from metric_learning.losses import selected_triplet_loss
from metric_learning.losses import semi_hard_triplet_loss
from metric_learning.losses import sigmoid_loss
from metric_learning.losses import soft_triple_loss
from metric_learning.losses import subcenter_arcface_loss
from metric_learning.losses import supcon_loss
from metric_learning.losses import triplet_margin_loss
from metric_learning.losses import tuplet_margin_loss
from metric_learning.masks import negative_mask
from metric_learning.masks import positive_mask
from metric_learning.masks import triplet_mask
from metric_learning.masks import valid_anchor_mask
from metric_learning.memory import MemoryBank
from metric_learning.memory import init_memory
from metric_learning.memory import update_memory
from metric_learning.statistics import triplet_statistics

__version__ = "0.1.0"

__all__ = (
    "MemoryBank",
    "angular_loss",
    "arcface_loss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "circle_loss",
    "contrastive_loss",
    "cosface_loss",
    "fast_ap_loss",
    "generalized_lifted_structure_loss",
    "index",
    "init_memory",
    "l2_normalize",
    "lifted_structure_loss",
    "margin_loss",
    "masks",
    "memory",
    "metrics",
    "mining",
    "multi_similarity_loss",
    "nca_loss",
    "negative_mask",
    "normalized_softmax_loss",
    "npair_loss",
    "ntxent_loss",
    "paired_distances",
    "pairwise_distances",
    "positive_mask",
    "presets",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "quadruplet_loss",
    "reductions",
    "reranking",
    "selected_triplet_loss",
    "semi_hard_triplet_loss",
    "serving",
    "sigmoid_loss",
    "soft_triple_loss",
    "subcenter_arcface_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "triplet_mask",
    "triplet_statistics",
    "tuplet_margin_loss",
    "update_memory",
    "valid_anchor_mask",
)
