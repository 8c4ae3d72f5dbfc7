"""What every encoder shares: input conversion, compute dtype, frozen BatchNorm.

An encoder maps ``[batch, *input_shape]`` inputs to ``[batch, features]``
pooled features (``features(x)``) and an :class:`~metric_learning.models.heads.EmbeddingHead`
maps those to embeddings (``__call__(x) = head(features(x))``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from metric_learning import _validation

# The ImageNet channel statistics (RGB, of inputs scaled to [0, 1]) that
# torchvision's and timm's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INPUT_NORMS = (None, "imagenet")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(dtype: str) -> Any:
  """The jnp dtype of a ``dtype`` setting (``"float32"`` or ``"bfloat16"``)."""
  _validation.choice(dtype, "model dtype", tuple(DTYPES))
  return DTYPES[dtype]


def check_input_norm(input_norm: str | None, input_shape) -> None:
  if input_norm not in INPUT_NORMS:
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}; got {input_norm!r}.")
  if input_norm == "imagenet" and input_shape[-1] not in (1, 3):
    raise ValueError("input_norm='imagenet' needs 1 (grey) or 3 (RGB) channels last; got "
                     f"input shape {tuple(input_shape)}. Pass input_norm=None.")


def normalize_inputs(x, input_norm: str | None, dtype: Any = jnp.float32):
  """Converts raw inputs to the encoder's compute dtype.

  Integer inputs (``uint8`` images) are first scaled to ``[0, 1]`` in float32;
  ``input_norm="imagenet"`` then standardises each channel with the ImageNet
  mean and standard deviation (a single grey channel with their averages).
  Float inputs with ``input_norm=None`` pass unchanged (besides the cast).

  Args:
    x: ``[batch, ..., channels]`` inputs, integer (0..255) or floating.
    input_norm: ``None`` or ``"imagenet"``.
    dtype: the compute dtype of the result.

  Returns:
    ``x`` in ``dtype``, same shape.

  Example:
    >>> import numpy as np
    >>> x = np.full((1, 1, 1, 3), 255, np.uint8)
    >>> np.asarray(normalize_inputs(x, "imagenet")).round(3)
    array([[[[2.249, 2.429, 2.64 ]]]], dtype=float32)
  """
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer):
    x = x.astype(jnp.float32) / 255.0
  if input_norm == "imagenet":
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    if x.shape[-1] == 1:
      mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    x = (x.astype(jnp.float32) - mean) / std
  return x.astype(dtype)


class FrozenBatchNorm(nnx.BatchNorm):
  """BatchNorm that always normalises with (and never updates) its running statistics.

  Its scale and bias still train. Musgrave et al. (A Metric Learning Reality
  Check, 2020) freeze the backbone's BatchNorm statistics this way when
  fine-tuning ImageNet weights on small metric-learning datasets.
  """

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    del use_running_average  # training mode changes nothing
    return super().__call__(x, use_running_average=True, mask=mask)


def batch_norm(features: int, *, frozen: bool, rngs: nnx.Rngs, **kwargs) -> nnx.BatchNorm:
  """A backbone BatchNorm: :class:`FrozenBatchNorm` when ``frozen``."""
  return (FrozenBatchNorm if frozen else nnx.BatchNorm)(features, rngs=rngs, **kwargs)


class Encoder(nnx.Module):
  """Base class: ``__call__(x) = head(features(x))``.

  Subclasses set ``self.head`` and implement ``features``; ``classifier_prefixes``
  names the source library's classifier tensors that
  :func:`~metric_learning.models.load_pretrained` ignores.
  """

  classifier_prefixes: tuple[str, ...] = ()

  def features(self, x):
    raise NotImplementedError

  def __call__(self, x):
    return self.head(self.features(x))
