"""Flax NNX encoders with an embedding head (extra: experiments).

``create(name, input_shape, **settings)`` builds a model from the registry
:data:`MODELS`; every model maps ``[batch, *input_shape]`` inputs to
``[batch, embedding_dim]`` float32 embeddings, ``model(x) = model.head(model.features(x))``,
where ``model.features(x)`` is the pooled backbone output.

======================  =========================================================
name                    encoder
======================  =========================================================
``mlp``                 :class:`MLP`
``cnn``                 :class:`CNN`
``resnet18/34``         :class:`ResNet`, basic blocks, torchvision layout
``resnet50``            :class:`ResNet`, bottleneck blocks, torchvision layout
``vit_s16``             :class:`VisionTransformer`, 384 wide, 12 blocks, 6 heads, timm layout
``vit_b16``             :class:`VisionTransformer`, 768 wide, 12 blocks, 12 heads, timm layout
``efficientnet_lite0``  :class:`EfficientNetLite`, ``efficientnet_lite_pytorch`` layout
======================  =========================================================

Settings every model takes: ``embedding_dim``, ``normalize``, ``head_batch_norm``,
``head_hidden``, ``head_init`` (the head), ``input_norm`` (``None`` | ``"imagenet"`` |
``"inception"``; uint8 inputs are always scaled to [0, 1] first), ``dtype`` (``"float32"`` |
``"bfloat16"`` compute), ``freeze_batch_norm``, ``weights`` (a
``.safetensors`` file in the source library's names, or a directory written by
:func:`save_weights`) and ``freeze_backbone`` (only the head trains:
:func:`freeze_backbone`).
"""

from __future__ import annotations

from metric_learning import _extras

_extras.require_extra("experiments", "metric_learning.models")

import functools
import os
from typing import Any
from typing import Sequence

from flax import nnx

from metric_learning import _validation
from metric_learning import registry
from metric_learning.models import base
from metric_learning.models.base import Encoder
from metric_learning.models.base import FrozenBatchNorm
from metric_learning.models.base import normalize_inputs
from metric_learning.models.efficientnet import EfficientNetLite
from metric_learning.models.encoders import CNN
from metric_learning.models.encoders import MLP
from metric_learning.models.encoders import EncoderWithProxies
from metric_learning.models.heads import EmbeddingHead
from metric_learning.models.pretrained import load_pretrained
from metric_learning.models.pretrained import load_weights
from metric_learning.models.pretrained import save_weights
from metric_learning.models.proxies import Proxies
from metric_learning.models.resnet import ResNet
from metric_learning.models.vit import VisionTransformer

__all__ = [
    "CNN", "EfficientNetLite", "EmbeddingHead", "Encoder", "EncoderWithProxies",
    "FrozenBatchNorm", "MLP", "MODELS", "Proxies", "ResNet", "VisionTransformer", "arguments",
    "create", "load_pretrained", "load_weights", "normalize_inputs", "save_weights",
]

MODELS = registry.Registry("model", runtime=("input_shape", "rngs"),
                           signature=registry.class_init)
MODELS.register("mlp", MLP)
MODELS.register("cnn", CNN)
MODELS.register("resnet18", functools.partial(ResNet, stages=(2, 2, 2, 2), bottleneck=False))
MODELS.register("resnet34", functools.partial(ResNet, stages=(3, 4, 6, 3), bottleneck=False))
MODELS.register("resnet50", functools.partial(ResNet, stages=(3, 4, 6, 3), bottleneck=True))
MODELS.register("vit_s16", functools.partial(VisionTransformer, dim=384, depth=12, num_heads=6,
                                             patch_size=16))
MODELS.register("vit_b16", functools.partial(VisionTransformer, dim=768, depth=12,
                                             num_heads=12, patch_size=16))
MODELS.register("efficientnet_lite0", EfficientNetLite)


def arguments(name: str) -> dict[str, Any]:
  """The settings model ``name`` accepts (keyword arguments besides the input
  shape), with their defaults; ``weights`` is accepted by every model.

  The architecture a name fixes (e.g. ``stages`` of ``resnet50``) is not a
  setting; the sizes a name does not fix (``base_width``, ``depth``, ...) are.

  Example:
    >>> arguments("resnet50")["input_norm"], arguments("mlp")["input_norm"]
    ('imagenet', None)
  """
  # Every model also takes ``weights`` and ``freeze_backbone`` (handled by
  # :func:`create`, not the class).
  return {**MODELS.arguments(name), "weights": None, "freeze_backbone": False}


def create(name: str, input_shape: Sequence[int], *, seed: int = 0,
           weights: str | None = None, freeze_backbone: bool = False, **kwargs) -> nnx.Module:
  """Builds a registered model; unknown names or settings fail listing the known ones.

  Args:
    name: a key of :data:`MODELS`.
    input_shape: one input's shape, e.g. ``(28, 28, 1)`` or ``(224, 224, 3)``.
    seed: initialisation seed (of the embedding head too when ``weights`` is a
      ``.safetensors`` file).
    weights: optional initial weights: a ``.safetensors`` file in torchvision /
      timm parameter names (:func:`load_pretrained`: the backbone only; the
      embedding head stays freshly initialised), or a directory written by
      :func:`save_weights` (the whole model).
    freeze_backbone: after the weights are loaded, hold every parameter but the
      embedding head's fixed (:func:`~metric_learning.models.base.freeze_backbone`):
      the frozen-backbone baseline. Needs ``freeze_batch_norm=True``, so that the
      backbone's BatchNorm statistics stay fixed as well.
    **kwargs: the model's own settings (:func:`arguments`).

  Returns:
    An NNX module mapping ``[batch, *input_shape]`` to ``[batch, embedding_dim]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning import models
    >>> m = models.create("mlp", (8, 8, 1), hidden=(32,), embedding_dim=4)
    >>> m(jnp.zeros((2, 8, 8, 1))).shape
    (2, 4)
  """
  MODELS.check(name)
  _validation.known_settings(kwargs, arguments(name), field="model", owner=f"model {name!r}")
  if not isinstance(freeze_backbone, bool):
    raise ValueError(f"model.freeze_backbone must be True or False; got {freeze_backbone!r}.")
  if freeze_backbone and not kwargs.get("freeze_batch_norm", False):
    raise ValueError("model.freeze_backbone=True needs model.freeze_batch_norm=True: a "
                     "frozen backbone keeps its BatchNorm statistics fixed too.")
  model = MODELS[name](tuple(input_shape), rngs=nnx.Rngs(seed), **kwargs)
  if weights:
    model = (load_pretrained(model, weights) if os.fspath(weights).endswith(".safetensors")
             else load_weights(model, weights))
  return base.freeze_backbone(model) if freeze_backbone else model
