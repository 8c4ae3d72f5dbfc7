"""Datasets, PK sampling and input pipeline (extra: experiments)."""

from metric_learning.data.datasets import Dataset
from metric_learning.data.datasets import class_disjoint_split
from metric_learning.data.datasets import digits
from metric_learning.data.datasets import image_folder
from metric_learning.data.datasets import load_label_names
from metric_learning.data.datasets import load_npz
from metric_learning.data.datasets import market1501
from metric_learning.data.datasets import save_label_names
from metric_learning.data.sampler import PKSampler
from metric_learning.data.sampler import augment
from metric_learning.data.sampler import padded_batches
from metric_learning.data.sampler import prefetch

__all__ = ("Dataset", "PKSampler", "augment", "class_disjoint_split", "digits",
           "image_folder", "load_label_names", "load_npz", "market1501", "padded_batches",
           "prefetch", "save_label_names")
