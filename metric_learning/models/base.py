"""What every encoder shares: input conversion, compute dtype, frozen BatchNorm.

An encoder maps ``[batch, *input_shape]`` inputs to ``[batch, features]``
pooled features (``features(x)``) and an :class:`~metric_learning.models.heads.EmbeddingHead`
maps those to embeddings (``__call__(x) = head(features(x))``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from metric_learning import _validation

# The ImageNet channel statistics (RGB, of inputs scaled to [0, 1]) that
# torchvision's and timm's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception-style scaling to [-1, 1] (mean = std = 0.5), which TensorFlow's
# EfficientNet-Lite checkpoints (mean 127, std 128 on 0..255) and some timm weights use.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

_STATISTICS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD),
               "inception": (INCEPTION_MEAN, INCEPTION_STD)}
INPUT_NORMS = (None, *_STATISTICS)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(dtype: str) -> Any:
  """The jnp dtype of a ``dtype`` setting (``"float32"`` or ``"bfloat16"``)."""
  _validation.choice(dtype, "model dtype", tuple(DTYPES))
  return DTYPES[dtype]


def check_input_norm(input_norm: str | None, input_shape) -> None:
  if input_norm not in INPUT_NORMS:
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}; got {input_norm!r}.")
  if input_norm is not None and input_shape[-1] not in (1, 3):
    raise ValueError(f"input_norm={input_norm!r} needs 1 (grey) or 3 (RGB) channels last; "
                     f"got input shape {tuple(input_shape)}. Pass input_norm=None.")


def normalize_inputs(x, input_norm: str | None, dtype: Any = jnp.float32):
  """Converts raw inputs to the encoder's compute dtype.

  Integer inputs (``uint8`` images) are first scaled to ``[0, 1]`` in float32;
  ``input_norm="imagenet"`` then standardises each channel with the ImageNet
  mean and standard deviation (a single grey channel with their averages), and
  ``"inception"`` maps ``[0, 1]`` to ``[-1, 1]`` (``(x - 0.5) / 0.5``). Float
  inputs with ``input_norm=None`` pass unchanged (besides the cast).

  Args:
    x: ``[batch, ..., channels]`` inputs, integer (0..255) or floating.
    input_norm: ``None``, ``"imagenet"`` or ``"inception"``.
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
  if input_norm is not None:
    mean, std = (jnp.asarray(s) for s in _STATISTICS[input_norm])
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



class FrozenParam(nnx.Variable):
  """A backbone parameter held fixed (:func:`freeze_backbone`).

  Not an :class:`flax.nnx.Param`: a train step that differentiates and
  optimises ``nnx.Param`` leaves it alone (no gradient is computed for it, and
  no optimizer state or weight decay touches it); checkpoints keep it.
  """


def freeze_backbone(model: nnx.Module) -> nnx.Module:
  """Turns every parameter outside ``model.head`` into a :class:`FrozenParam`, in place.

  Only the embedding head (and, under :class:`~metric_learning.models.EncoderWithProxies`,
  the proxies) then train: the frozen-backbone ("linear probe") baseline of
  transfer learning: the train step differentiates and optimises the head's
  parameters alone (no gradient, optimizer state or weight decay for the
  backbone). The backbone's BatchNorm statistics are not
  parameters: build the model with ``freeze_batch_norm=True`` so that they stay
  fixed too (:func:`~metric_learning.models.create` requires it).

  Returns:
    ``model``.
  """
  nodes = dict(nnx.iter_graph(model))
  for path, node in list(nodes.items()):
    if isinstance(node, nnx.Param) and path[:1] != ("head",):
      setattr(nodes[path[:-1]], str(path[-1]), FrozenParam(node[...]))
  return model

# ------------------------------------------------------------ fast ops ---- #
# XLA's CPU convolutions are fast for the usual shapes but fall off a cliff on a
# few that ResNets hit: a 3×3 convolution whose output is smaller than its kernel
# (ResNet-18's last stage is 2×2 at 64×64 inputs) compiles to a naive loop, about
# 100× slower than the same work as a matrix product, forward and backward; and
# 1×1 convolutions' filter gradients run at a fifth of a plain matmul's speed. Those
# shapes are computed here as patches × kernel (im2col) instead: the same sums,
# in another order (float32 rounding differences only). Depthwise convolutions
# (MobileNet / EfficientNet blocks) are worse still: XLA's CPU grouped convolution
# and its gradients run 4-300× slower than the same sums written as kh·kw shifted
# slices times per-channel weights, which XLA fuses into one loop (e.g. a batch of 32
# at 56×56×144 with a 5×5 kernel: forward and backward 5.3 s → 1.5 s). On GPU and
# TPU the native depthwise kernels are kept.

def _im2col_conv(x, kernel, strides, pads, precision, preferred_element_type):
  """``[B, H, W, C] * [kh, kw, C, O]`` as one matmul over ``[B, Ho, Wo, kh*kw*C]`` patches."""
  kh, kw, c, o = kernel.shape
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  b, h, w, _ = x.shape
  ho, wo = (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
  taps = [lax.slice(x, (0, i, j, 0), (b, i + strides[0] * (ho - 1) + 1,
                                      j + strides[1] * (wo - 1) + 1, c), (1, *strides, 1))
          for i in range(kh) for j in range(kw)]
  patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
  return lax.dot_general(patches, kernel.reshape(kh * kw * c, o), (((3,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def _depthwise_taps_conv(x, kernel, strides, pads, preferred_element_type):
  """A depthwise ``[B, H, W, C] * [kh, kw, 1, C]`` convolution (``feature_group_count=C``)
  as a sum of ``kh·kw`` strided slices, each scaled by its tap's per-channel weights."""
  kh, kw, _, c = kernel.shape
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  b, h, w, _ = x.shape
  ho, wo = (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
  dtype = preferred_element_type or jnp.result_type(x, kernel)
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(x, (0, i, j, 0), (b, i + strides[0] * (ho - 1) + 1,
                                        j + strides[1] * (wo - 1) + 1, c), (1, *strides, 1))
      term = tap.astype(dtype) * kernel[i, j, 0].astype(dtype)
      out = term if out is None else out + term
  return out


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None, **kwargs):
  """``lax.conv_general_dilated`` (as ``nnx.Conv`` calls it), with the shapes XLA's
  CPU backend handles badly computed as one matmul over patches, and (on CPU)
  depthwise convolutions as a sum of shifted slices (see above)."""
  plain = (lhs.ndim == 4 and not kwargs.get("out_sharding")
           and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
           and dimension_numbers == lax.conv_dimension_numbers(
               lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
  depthwise = (plain and feature_group_count == lhs.shape[-1] == rhs.shape[-1] > 1
               and rhs.shape[2] == 1)
  if plain and (feature_group_count == 1 or depthwise):
    kernel = rhs.shape[:2]
    pads = (lax.padtype_to_pads(lhs.shape[1:3], kernel, window_strides, padding)
            if isinstance(padding, str) else tuple(tuple(p) for p in padding))
    if depthwise:
      if jax.default_backend() == "cpu":
        return _depthwise_taps_conv(lhs, rhs, tuple(window_strides), pads,
                                    preferred_element_type)
    else:
      out = [(lhs.shape[1 + i] + sum(pads[i]) - kernel[i]) // window_strides[i] + 1
             for i in range(2)]
      if kernel == (1, 1) or out[0] < kernel[0] or out[1] < kernel[1]:
        return _im2col_conv(lhs, rhs, tuple(window_strides), pads, precision,
                            preferred_element_type)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  precision=precision,
                                  preferred_element_type=preferred_element_type, **kwargs)


def avg_pool_2x2(x):
  """2×2 average pooling, stride 2, of ``[B, H, W, C]`` (``nnx.avg_pool(x, (2, 2),
  strides=(2, 2), padding="SAME")``).

  Even sizes are pooled as a reshape and a mean: XLA's CPU backend fuses that
  with its neighbours, where a reduce-window (and its gradient) runs alone and
  materialises broadcast constants.
  """
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _max_pool_taps(x, window, stride, pad):
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
  b, h, w, c = x.shape
  ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
  taps = [lax.slice(x, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                    (1, stride, stride, 1)) for i in range(window) for j in range(window)]
  return taps


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, pad):
  taps = _max_pool_taps(x, window, stride, pad)
  out = taps[0]
  for t in taps[1:]:
    out = jnp.maximum(out, t)
  return out


def _max_pool_fwd(x, window, stride, pad):
  return _max_pool(x, window, stride, pad), x


def _max_pool_bwd(window, stride, pad, x, g):
  taps = _max_pool_taps(x, window, stride, pad)
  out = taps[0]
  for t in taps[1:]:
    out = jnp.maximum(out, t)
  # Each output's gradient goes to the first maximum of its window in row-major
  # order, as XLA's select-and-scatter (the gradient of lax.reduce_window max) does.
  b, h, w, c = x.shape
  hp, wp = h + 2 * pad, w + 2 * pad
  ho, wo = out.shape[1:3]
  taken = jnp.zeros(out.shape, bool)
  grad = jnp.zeros((b, hp, wp, c), g.dtype)
  for k, t in enumerate(taps):
    i, j = divmod(k, window)
    first = (t == out) & ~taken
    taken = taken | first
    grad = grad + lax.pad(jnp.where(first, g, 0), jnp.zeros((), g.dtype), (
        (0, 0, 0), (i, hp - i - stride * (ho - 1) - 1, stride - 1),
        (j, wp - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
  return (grad[:, pad:pad + h, pad:pad + w],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x, window: int = 3, stride: int = 2, pad: int = 1):
  """Max pooling of ``[B, H, W, C]`` with -inf padding (torch's ``MaxPool2d``; the
  same values and gradients as ``nnx.max_pool(x, (window, window), (stride, stride),
  ((pad, pad), (pad, pad)))``), as a maximum over shifted strided slices, which
  XLA's CPU backend fuses; its select-and-scatter gradient runs several times slower.
  """
  return _max_pool(x, window, stride, pad)


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
