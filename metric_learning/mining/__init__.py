r"""Online mining: which positives and negatives each anchor uses.

The package, by role (every name below is importable from here):

* :mod:`~metric_learning.mining.anchors` -- per-anchor miners (batch-hard,
  semi-hard, batch-all, ...), one choice per anchor;
* :mod:`~metric_learning.mining.pairs` -- pytorch-metric-learning's pair and
  triplet miners, as fixed-shape masks (:class:`MinedPairs`, :class:`MinedTriplets`);
* :mod:`~metric_learning.mining.selections` -- what the per-anchor miners return;
* :mod:`~metric_learning.mining.blocks` -- the building blocks they share with
  the losses.

Every miner reads a distance matrix (``[batch, batch]`` from
:func:`metric_learning.pairwise_distances`) and integer labels, and returns a
small pytree dataclass of indices, distances and validity, so a training loop
can log what was chosen. Miners are pure and jit-able; the selection is
piecewise constant, so losses compute it under ``stop_gradient`` and let the
gradient flow only through the selected distances.

Notation as in :mod:`metric_learning.masks`. Where an anchor has nothing to
select, its ``valid`` flag is False, its indices are -1 and its distances 0:
no ±inf ever leaves a miner. An empty batch (zero rows) gives zero-size fields.

References:
  Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
  Re-Identification. 2017. https://arxiv.org/abs/1703.07737
  Schroff, Kalenichenko, Philbin. FaceNet. CVPR 2015.
  https://arxiv.org/abs/1503.03832
  Xuan, Stylianou, Pless. Improved Embeddings with Easy Positive Triplet
  Mining. WACV 2020. https://arxiv.org/abs/1904.04370
  Wu, Manmatha, Smola, Krähenbühl. Sampling Matters in Deep Embedding
  Learning. ICCV 2017. https://arxiv.org/abs/1706.07567
"""
from metric_learning.mining.anchors import SEMI_HARD_DEFINITIONS
from metric_learning.mining.anchors import batch_all
from metric_learning.mining.anchors import batch_hard
from metric_learning.mining.anchors import distance_weighted
from metric_learning.mining.anchors import easy_positive
from metric_learning.mining.anchors import rank_range
from metric_learning.mining.anchors import semi_hard
from metric_learning.mining.anchors import statistics
from metric_learning.mining.blocks import POSITIVE_BOUNDS
from metric_learning.mining.blocks import SortedNegatives
from metric_learning.mining.blocks import anchor_slots
from metric_learning.mining.blocks import bounded_softplus_sums
from metric_learning.mining.blocks import bounded_tfa_pairs
from metric_learning.mining.blocks import bounded_tfa_selection
from metric_learning.mining.blocks import bounded_window_sums
from metric_learning.mining.blocks import by_positive_count
from metric_learning.mining.blocks import count_below
from metric_learning.mining.blocks import facenet_cube
from metric_learning.mining.blocks import first_argmax
from metric_learning.mining.blocks import gather_rows
from metric_learning.mining.blocks import hard_indices
from metric_learning.mining.blocks import label_slots
from metric_learning.mining.blocks import map_anchors
from metric_learning.mining.blocks import masked_argmax
from metric_learning.mining.blocks import masked_argmin
from metric_learning.mining.blocks import positive_slots
from metric_learning.mining.blocks import select_triplets
from metric_learning.mining.blocks import semi_hard_counts
from metric_learning.mining.blocks import slot_argmax
from metric_learning.mining.blocks import sort_rows
from metric_learning.mining.blocks import sorted_tfa_selection
from metric_learning.mining.blocks import sorted_window_sums
from metric_learning.mining.blocks import square_batch
from metric_learning.mining.blocks import symmetric_window_sums
from metric_learning.mining.blocks import tfa_negatives
from metric_learning.mining.blocks import tfa_selection
from metric_learning.mining.blocks import triplet_cube
from metric_learning.mining.blocks import window_sums
from metric_learning.mining.pairs import TRIPLET_TYPES
from metric_learning.mining.pairs import MinedPairs
from metric_learning.mining.pairs import MinedTriplets
from metric_learning.mining.pairs import multi_similarity_pairs
from metric_learning.mining.pairs import multi_similarity_selection
from metric_learning.mining.pairs import pair_margin
from metric_learning.mining.pairs import triplet_margin
from metric_learning.mining.selections import PairSelection
from metric_learning.mining.selections import RankSelection
from metric_learning.mining.selections import TripletCounts
from metric_learning.mining.selections import TripletSelection

__all__ = (
    "MinedPairs",
    "MinedTriplets",
    "POSITIVE_BOUNDS",
    "PairSelection",
    "RankSelection",
    "SEMI_HARD_DEFINITIONS",
    "SortedNegatives",
    "TRIPLET_TYPES",
    "TripletCounts",
    "TripletSelection",
    "anchor_slots",
    "batch_all",
    "batch_hard",
    "bounded_softplus_sums",
    "bounded_tfa_pairs",
    "bounded_tfa_selection",
    "bounded_window_sums",
    "by_positive_count",
    "count_below",
    "distance_weighted",
    "easy_positive",
    "facenet_cube",
    "first_argmax",
    "gather_rows",
    "hard_indices",
    "label_slots",
    "map_anchors",
    "masked_argmax",
    "masked_argmin",
    "multi_similarity_pairs",
    "multi_similarity_selection",
    "pair_margin",
    "positive_slots",
    "rank_range",
    "select_triplets",
    "semi_hard",
    "semi_hard_counts",
    "slot_argmax",
    "sort_rows",
    "sorted_tfa_selection",
    "sorted_window_sums",
    "square_batch",
    "statistics",
    "symmetric_window_sums",
    "tfa_negatives",
    "tfa_selection",
    "triplet_cube",
    "triplet_margin",
    "window_sums",
)
