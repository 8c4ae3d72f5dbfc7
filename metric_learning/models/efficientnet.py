"""EfficientNet-Lite0 in the layout of the ``efficientnet_lite_pytorch`` package (Tan & Le,
EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, 2019; the Lite
variants of the TensorFlow TPU repository's ``efficientnet/lite``).

EfficientNet-B0's stages of mobile inverted-residual blocks (Sandler et al.,
MobileNetV2: Inverted Residuals and Linear Bottlenecks, 2018), made friendlier to
quantised mobile inference: ReLU6 in place of swish, no squeeze-and-excitation, and a
stem (32 channels) and head (1280 channels) that width scaling leaves fixed.

The modules and their attribute names mirror that package's ``EfficientNet``
(``_conv_stem``, ``_bn0``, ``_blocks.1._expand_conv``, ``_blocks.1._depthwise_conv``,
``_blocks.1._project_conv``, ``_conv_head``, ``_bn1``, ...), so its ``state_dict``
saved as ``.safetensors`` loads by name (:func:`~metric_learning.models.load_pretrained`)
and gives the same features. A depthwise convolution's torch weight ``[C, 1, k, k]``
(OIHW with ``groups=C``) transposes to ``[k, k, 1, C]``, which is exactly the HWIO kernel
of a flax convolution with ``feature_group_count=C``: the mechanical mapping holds.

Padding is TensorFlow's ``"SAME"`` (as the weights were trained, and as the package
reproduces with explicit zero padding): a stride-2 layer pads ``total = max((⌈n/s⌉ - 1)·s
+ k - n, 0)`` with ``⌊total/2⌋`` before and the rest after, i.e. one more row and column
at the bottom/right than the top/left on even sizes. That is flax's ``"SAME"``; torch's
symmetric ``k // 2`` would shift every stride-2 sampling grid by a pixel.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning.models import base
from metric_learning.models import heads

# Tan & Le's Table 1 (EfficientNet-B0), stages 2-8: (repeats, kernel, stride, expansion,
# output width). Lite0 has the same stages without squeeze-and-excitation.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_WIDTH = 32
HEAD_WIDTH = 1280

# Convolutions: He-normal over the fan-out (Tan & Le's initialiser). A depthwise
# kernel [k, k, 1, C] has k·k outputs per input; flax's fan_out would count k·k·C.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
_DEPTHWISE_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
  """A stage's width scaled by ``multiplier``, rounded to a multiple of ``divisor``.

  ``max(divisor, ⌊w·m + divisor/2⌋ rounded down to a multiple of divisor)``, plus one
  more ``divisor`` when that rounds down by more than 10 % (Tan & Le's rule).

  Example:
    >>> round_width(40, 1.0), round_width(40, 0.25), round_width(112, 0.25)
    (40, 16, 32)
  """
  scaled = width * multiplier
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype, rngs: nnx.Rngs, *,
          depthwise: bool = False) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME", use_bias=False,
                  feature_group_count=cin if depthwise else 1,
                  kernel_init=_DEPTHWISE_INIT if depthwise else _CONV_INIT, dtype=dtype,
                  conv_general_dilated=base.conv_general_dilated, rngs=rngs)


def _norm(features: int, frozen: bool, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # The package's BatchNorm2d(momentum=0.01, eps=1e-3) (TensorFlow's decay 0.99):
  # running = 0.99 running + 0.01 batch.
  return base.batch_norm(features, frozen=frozen, momentum=0.99, epsilon=1e-3, dtype=dtype,
                         rngs=rngs)


class InvertedResidual(nnx.Module):
  """A mobile inverted-residual block (MBConv) without squeeze-and-excitation.

  ``[1×1 expand conv → BN → ReLU6] → k×k depthwise conv (stride) → BN → ReLU6 →
  1×1 project conv → BN`` (linear bottleneck), ``+ x`` when ``residual``. The
  expansion is skipped when ``expansion == 1``.
  """

  def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, *,
               residual: bool, frozen: bool, dtype, rngs: nnx.Rngs):
    if residual and (stride != 1 or cin != cout):
      raise ValueError(f"a residual needs stride 1 and equal widths; got stride {stride}, "
                       f"{cin} → {cout}.")
    hidden = cin * expansion
    if expansion != 1:
      self._expand_conv = _conv(cin, hidden, 1, 1, dtype, rngs)
      self._bn0 = _norm(hidden, frozen, dtype, rngs)
    self.expands = expansion != 1
    self._depthwise_conv = _conv(hidden, hidden, kernel, stride, dtype, rngs, depthwise=True)
    self._bn1 = _norm(hidden, frozen, dtype, rngs)
    self._project_conv = _conv(hidden, cout, 1, 1, dtype, rngs)
    self._bn2 = _norm(cout, frozen, dtype, rngs)
    self.skip = residual

  def __call__(self, x):
    y = x
    if self.expands:
      y = jax.nn.relu6(self._bn0(self._expand_conv(y)))
    y = jax.nn.relu6(self._bn1(self._depthwise_conv(y)))
    y = self._bn2(self._project_conv(y))
    return x + y if self.skip else y


class EfficientNetLite(base.Encoder):
  """EfficientNet-Lite0 (Tan & Le 2019, the Lite variant) with an embedding head.

  Stem 3×3/2 conv (32) → 16 inverted-residual blocks in 7 stages (widths 16, 24, 40,
  80, 112, 192, 320; 5 stride-2 stages: an output stride of 32) → 1×1 conv (1280), each
  conv followed by BatchNorm and ReLU6 (not the projections). Every block but a
  stage's first adds its input (the first changes the width or the stride). That is the
  package's rule; Tan & Le's (stride 1 and equal widths) picks the same blocks at Lite0's
  widths, and also a stage's first block where a small ``width_multiplier`` rounds two
  stages to one width. ``features(x)`` is the
  global average of that 1280-wide map: the package's pooled output, the input of its
  dropout and ``_fc`` classifier. 3.4 M backbone parameters.

  Args:
    input_shape: one input's shape ``(height, width, channels)``; any size (the
      "SAME" padding needs no multiple of 32; 224×224 is the weights' resolution).
    width_multiplier: Tan & Le's width coefficient for the blocks (1.0 is Lite0);
      the stem and head stay 32 and 1280 wide, as in every Lite model. Small values
      build narrow networks for tests.
    embedding_dim, normalize, head_batch_norm, head_hidden, head_init: the
      :class:`~metric_learning.models.heads.EmbeddingHead`.
    input_norm: ``"inception"`` (default: [0, 1] → [-1, 1], the scaling of
      TensorFlow's Lite checkpoints, mean 127 and std 128 on 0..255, which the
      package's weights are converted from), ``"imagenet"`` (the package's demo) or
      ``None``; uint8 inputs are scaled to [0, 1] first. On scikit-learn's two
      sample photos ``"inception"`` gives the surer right classes (daisy 22 % vs
      10 %; palace first), and on digits better frozen features.
    dtype: ``"float32"`` or ``"bfloat16"`` compute (parameters stay float32).
    freeze_batch_norm: the backbone's BatchNorm uses (and keeps) its running
      statistics in training too (Musgrave et al. 2020); the head's is unaffected.
    rngs: initialisation keys.

  The package's drop-connect (stochastic depth, rate 0.2 in training) is not
  implemented: training here is deterministic apart from the data.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = EfficientNetLite((32, 32, 3), width_multiplier=0.25, embedding_dim=4,
    ...                      rngs=nnx.Rngs(0))
    >>> m.features(jnp.zeros((2, 32, 32, 3))).shape, m(jnp.zeros((2, 32, 32, 3))).shape
    ((2, 1280), (2, 4))
  """

  classifier_prefixes = ("_fc.",)

  def __init__(self, input_shape: Sequence[int], *, width_multiplier: float = 1.0,
               embedding_dim: int = 128, normalize: bool = False,
               head_batch_norm: bool = False, head_hidden: Sequence[int] = (),
               head_init: str = "lecun_normal",
               input_norm: str | None = "inception", dtype: str = "float32",
               freeze_batch_norm: bool = False, rngs: nnx.Rngs):
    base.check_input_norm(input_norm, input_shape)
    if not (isinstance(width_multiplier, (int, float)) and 0 < width_multiplier
            and math.isfinite(width_multiplier)):
      raise ValueError(f"width_multiplier must be a positive number; got {width_multiplier!r}.")
    self.input_norm, self.dtype = input_norm, base.compute_dtype(dtype)
    frozen = freeze_batch_norm
    self._conv_stem = _conv(input_shape[-1], STEM_WIDTH, 3, 2, self.dtype, rngs)
    self._bn0 = _norm(STEM_WIDTH, frozen, self.dtype, rngs)
    blocks, cin = [], STEM_WIDTH
    for repeats, kernel, stride, expansion, width in LITE0_STAGES:
      cout = round_width(width, width_multiplier)
      for j in range(repeats):
        blocks.append(InvertedResidual(cin, cout, kernel, stride if j == 0 else 1, expansion,
                                       residual=j > 0, frozen=frozen, dtype=self.dtype,
                                       rngs=rngs))
        cin = cout
    self._blocks = nnx.List(blocks)
    self._conv_head = _conv(cin, HEAD_WIDTH, 1, 1, self.dtype, rngs)
    self._bn1 = _norm(HEAD_WIDTH, frozen, self.dtype, rngs)
    self.num_features = HEAD_WIDTH
    self.head = heads.EmbeddingHead(HEAD_WIDTH, embedding_dim, normalize=normalize,
                                    batch_norm=head_batch_norm, hidden=head_hidden,
                                    init=head_init,
                                    rngs=rngs)

  def features(self, x):
    """``[batch, height, width, channels]`` → ``[batch, 1280]`` float32."""
    x = base.normalize_inputs(x, self.input_norm, self.dtype)
    x = jax.nn.relu6(self._bn0(self._conv_stem(x)))
    for block in self._blocks:
      x = block(x)
    x = jax.nn.relu6(self._bn1(self._conv_head(x)))
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
