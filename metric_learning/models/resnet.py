"""ResNet-18/34/50 in torchvision's layout (He et al., Deep Residual Learning for
Image Recognition, 2016).

The modules and their attribute names mirror ``torchvision.models.resnet``
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...), so a
torchvision ``state_dict`` saved as ``.safetensors`` loads by name
(:func:`~metric_learning.models.load_pretrained`) and gives the same features.
It is torchvision's "v1.5": a bottleneck block strides on its 3×3 conv.
Padding is explicit (``kernel // 2``; max-pool pads with -inf), as in torch:
flax's ``"SAME"`` pads stride-2 layers differently.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning.models import base
from metric_learning.models import heads

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype, rngs: nnx.Rngs) -> nnx.Conv:
  pad = kernel // 2
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
                  use_bias=False, kernel_init=_CONV_INIT, dtype=dtype,
                  conv_general_dilated=base.conv_general_dilated, rngs=rngs)


def _norm(features: int, frozen: bool, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # torch BatchNorm2d: eps 1e-5, momentum 0.1 (running = 0.9 running + 0.1 batch).
  return base.batch_norm(features, frozen=frozen, momentum=0.9, epsilon=1e-5, dtype=dtype,
                         rngs=rngs)


class BasicBlock(nnx.Module):
  """3×3 conv (stride) → BN → ReLU → 3×3 conv → BN, + shortcut, → ReLU."""

  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int, *, frozen: bool, dtype,
               rngs: nnx.Rngs):
    cout = planes * self.expansion
    self.conv1 = _conv(cin, planes, 3, stride, dtype, rngs)
    self.bn1 = _norm(planes, frozen, dtype, rngs)
    self.conv2 = _conv(planes, cout, 3, 1, dtype, rngs)
    self.bn2 = _norm(cout, frozen, dtype, rngs)
    self.downsample = (nnx.List([_conv(cin, cout, 1, stride, dtype, rngs),
                                 _norm(cout, frozen, dtype, rngs)])
                       if stride != 1 or cin != cout else None)

  def residual(self, x):
    return self.bn2(self.conv2(jax.nn.relu(self.bn1(self.conv1(x)))))

  def __call__(self, x):
    shortcut = x
    if self.downsample is not None:
      conv, norm = self.downsample
      shortcut = norm(conv(x))
    return jax.nn.relu(self.residual(x) + shortcut)


class Bottleneck(BasicBlock):
  """1×1 conv → BN → ReLU → 3×3 conv (stride) → BN → ReLU → 1×1 conv (×4) → BN,
  + shortcut, → ReLU."""

  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int, *, frozen: bool, dtype,
               rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
    cout = planes * self.expansion
    self.conv1 = _conv(cin, planes, 1, 1, dtype, rngs)
    self.bn1 = _norm(planes, frozen, dtype, rngs)
    self.conv2 = _conv(planes, planes, 3, stride, dtype, rngs)
    self.bn2 = _norm(planes, frozen, dtype, rngs)
    self.conv3 = _conv(planes, cout, 1, 1, dtype, rngs)
    self.bn3 = _norm(cout, frozen, dtype, rngs)
    self.downsample = (nnx.List([_conv(cin, cout, 1, stride, dtype, rngs),
                                 _norm(cout, frozen, dtype, rngs)])
                       if stride != 1 or cin != cout else None)

  def residual(self, x):
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    x = jax.nn.relu(self.bn2(self.conv2(x)))
    return self.bn3(self.conv3(x))


class ResNet(base.Encoder):
  """A ResNet encoder (He et al. 2016) in torchvision's layout, with an embedding head.

  ``features(x)`` is the global average of the last stage (torchvision's
  ``avgpool`` output, the input of its ``fc``): 512 wide for ResNet-18/34,
  2048 for ResNet-50 (with ``base_width=64``).

  Args:
    input_shape: one input's shape ``(height, width, channels)``.
    stages: blocks per stage, e.g. ``(2, 2, 2, 2)`` (ResNet-18).
    bottleneck: bottleneck blocks (ResNet-50) instead of basic blocks.
    base_width: the first stage's width (64 in the paper); stage ``i`` is
      ``base_width * 2**i`` wide (× 4 at a bottleneck's output). Small values
      build tiny networks for tests.
    embedding_dim, normalize, head_batch_norm, head_hidden, head_init: the
      :class:`~metric_learning.models.heads.EmbeddingHead`.
    small_inputs: a 3×3/1 stem without max-pool, for tiny images (8×8 digits);
      the default is torchvision's 7×7/2 stem and 3×3/2 max-pool.
    input_norm: ``"imagenet"`` (default) or ``None``; uint8 inputs are scaled to
      [0, 1] first.
    dtype: ``"float32"`` or ``"bfloat16"`` compute (parameters stay float32).
    freeze_batch_norm: the backbone's BatchNorm uses (and keeps) its running
      statistics in training too (Musgrave et al., A Metric Learning Reality
      Check, 2020); the head's BatchNorm is unaffected.
    rngs: initialisation keys.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = ResNet((32, 32, 3), base_width=2, embedding_dim=4, rngs=nnx.Rngs(0))
    >>> m.features(jnp.zeros((2, 32, 32, 3))).shape, m(jnp.zeros((2, 32, 32, 3))).shape
    ((2, 16), (2, 4))
  """

  classifier_prefixes = ("fc.",)

  def __init__(self, input_shape: Sequence[int], *, stages: Sequence[int] = (2, 2, 2, 2),
               bottleneck: bool = False, base_width: int = 64, embedding_dim: int = 128,
               normalize: bool = False, small_inputs: bool = False,
               head_batch_norm: bool = False, head_hidden: Sequence[int] = (),
               head_init: str = "lecun_normal",
               input_norm: str | None = "imagenet", dtype: str = "float32",
               freeze_batch_norm: bool = False, rngs: nnx.Rngs):
    base.check_input_norm(input_norm, input_shape)
    self.input_norm, self.dtype = input_norm, base.compute_dtype(dtype)
    self.small_inputs = small_inputs
    frozen = freeze_batch_norm
    self.conv1 = _conv(input_shape[-1], base_width, 3 if small_inputs else 7,
                       1 if small_inputs else 2, self.dtype, rngs)
    self.bn1 = _norm(base_width, frozen, self.dtype, rngs)
    block = Bottleneck if bottleneck else BasicBlock
    cin = base_width
    for i, n in enumerate(stages):
      planes = base_width * 2 ** i
      layer = []
      for j in range(n):
        layer.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, frozen=frozen,
                           dtype=self.dtype, rngs=rngs))
        cin = planes * block.expansion
      setattr(self, f"layer{i + 1}", nnx.List(layer))
    self.num_stages = len(stages)
    self.num_features = cin
    self.head = heads.EmbeddingHead(cin, embedding_dim, normalize=normalize,
                                    batch_norm=head_batch_norm, hidden=head_hidden,
                                    init=head_init,
                                    rngs=rngs)

  def features(self, x):
    """``[batch, height, width, channels]`` → ``[batch, num_features]`` float32."""
    x = base.normalize_inputs(x, self.input_norm, self.dtype)
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    if not self.small_inputs:
      x = base.max_pool(x, 3, stride=2, pad=1)
    for i in range(self.num_stages):
      for block in getattr(self, f"layer{i + 1}"):
        x = block(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
