"""Datasets, PK sampling and input pipeline (extra: experiments).

Small datasets are arrays in memory (:class:`Dataset`); image benchmarks are
indices of files (:class:`ImageFiles`, parsed by :mod:`.protocols`) decoded and
augmented per batch by :mod:`.pipeline` with :mod:`.transforms` (imported on use:
they need grain and Pillow).
"""

from metric_learning import _extras

_extras.require_extra("experiments", "metric_learning.data")

from metric_learning.data.datasets import Dataset
from metric_learning.data.datasets import class_disjoint_split
from metric_learning.data.datasets import digits
from metric_learning.data.datasets import load_label_names
from metric_learning.data.datasets import load_npz
from metric_learning.data.datasets import save_label_names
from metric_learning.data.files import ImageFiles
from metric_learning.data.files import VerificationPairs
from metric_learning.data.sampler import PKSampler
from metric_learning.data.sampler import augment
from metric_learning.data.sampler import padded_batches
from metric_learning.data.sampler import prefetch

__all__ = ("Dataset", "ImageFiles", "PKSampler", "VerificationPairs", "augment",
           "class_disjoint_split", "digits", "load_label_names", "load_npz", "padded_batches",
           "prefetch", "save_label_names")
