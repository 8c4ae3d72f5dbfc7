"""Flax NNX encoders with an embedding head (extra: experiments).

``create(name, **kwargs)`` builds a model from the registry; every model maps
``[batch, ...inputs]`` to ``[batch, embedding_dim]`` embeddings.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning import _validation
from metric_learning import distances


class EmbeddingHead(nnx.Module):
  """[BatchNorm →] linear projection to ``embedding_dim``, optionally L2-normalised.

  ``batch_norm=True`` centres and scales the pooled features before the
  projection. Pooled ReLU features share a large positive mean, which maps every
  input to nearly the same direction at initialisation, close to the collapsed
  state; normalising them first spreads the initial embeddings (on digits, the
  CNN's initial hardest-negative distances grow more than twofold).
  """

  def __init__(self, in_features: int, embedding_dim: int, *, normalize: bool,
               batch_norm: bool = False, rngs: nnx.Rngs):
    self.norm = nnx.BatchNorm(in_features, rngs=rngs) if batch_norm else None
    self.linear = nnx.Linear(in_features, embedding_dim, rngs=rngs)
    self.normalize = normalize

  def __call__(self, x):
    if self.norm is not None:
      x = self.norm(x)
    x = self.linear(x)
    return distances.l2_normalize(x) if self.normalize else x


class MLP(nnx.Module):
  """Flatten → [Linear → ReLU (→ dropout)] × len(hidden) → embedding head."""

  def __init__(self, input_shape: Sequence[int], *, hidden: Sequence[int] = (256,),
               embedding_dim: int = 64, normalize: bool = False, dropout: float = 0.0,
               rngs: nnx.Rngs):
    features = 1
    for s in input_shape:
      features *= s
    self.layers = nnx.List([nnx.Linear(i, o, rngs=rngs)
                            for i, o in zip([features, *hidden[:-1]], hidden)])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = EmbeddingHead(hidden[-1] if hidden else features, embedding_dim,
                              normalize=normalize, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      x = self.dropout(jax.nn.relu(layer(x)))
    return self.head(x)


class CNN(nnx.Module):
  """A small convnet: [Conv 3×3 → BatchNorm → ReLU] per width, 2× pooling between."""

  def __init__(self, input_shape: Sequence[int], *, widths: Sequence[int] = (32, 64),
               embedding_dim: int = 64, normalize: bool = False,
               head_batch_norm: bool = False, rngs: nnx.Rngs):
    channels = input_shape[-1]
    self.convs = nnx.List([nnx.Conv(i, o, (3, 3), rngs=rngs)
                           for i, o in zip([channels, *widths[:-1]], widths)])
    self.norms = nnx.List([nnx.BatchNorm(w, rngs=rngs) for w in widths])
    self.head = EmbeddingHead(widths[-1], embedding_dim, normalize=normalize,
                              batch_norm=head_batch_norm, rngs=rngs)

  def __call__(self, x):
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = jax.nn.relu(norm(conv(x)))
      if i < len(self.convs) - 1:
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return self.head(jnp.mean(x, axis=(1, 2)))


class _Block(nnx.Module):
  """ResNet basic (2 × 3×3) or bottleneck (1×1, 3×3, 1×1 ×4) block."""

  def __init__(self, cin: int, width: int, stride: int, bottleneck: bool, rngs: nnx.Rngs):
    cout = width * 4 if bottleneck else width
    shapes = ([(1, 1), (3, 3), (1, 1)] if bottleneck else [(3, 3), (3, 3)])
    outs = [width, width, cout] if bottleneck else [width, cout]
    strides = [1, stride, 1] if bottleneck else [stride, 1]
    ins = [cin] + outs[:-1]
    self.convs = nnx.List([nnx.Conv(i, o, k, strides=s, use_bias=False, rngs=rngs)
                           for i, o, k, s in zip(ins, outs, shapes, strides)])
    self.norms = nnx.List([nnx.BatchNorm(o, rngs=rngs) for o in outs])
    self.project = (nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
                    if stride != 1 or cin != cout else None)
    self.project_norm = nnx.BatchNorm(cout, rngs=rngs) if self.project else None
    self.out_features = cout

  def __call__(self, x):
    y = x
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      y = norm(conv(y))
      if i < len(self.convs) - 1:
        y = jax.nn.relu(y)
    shortcut = self.project_norm(self.project(x)) if self.project else x
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """ResNet-18/50 style encoder (He et al. 2016) with an embedding head.

  ``small_inputs=True`` replaces the 7×7/2 stem and max-pool by a 3×3/1 stem
  for tiny images.
  """

  def __init__(self, input_shape: Sequence[int], *, stages: Sequence[int] = (2, 2, 2, 2),
               bottleneck: bool = False, base_width: int = 64, embedding_dim: int = 128,
               normalize: bool = False, small_inputs: bool = False,
               head_batch_norm: bool = False, rngs: nnx.Rngs):
    channels = input_shape[-1]
    self.small_inputs = small_inputs
    self.stem = nnx.Conv(channels, base_width, (3, 3) if small_inputs else (7, 7),
                         strides=1 if small_inputs else 2, use_bias=False, rngs=rngs)
    self.stem_norm = nnx.BatchNorm(base_width, rngs=rngs)
    blocks, cin = [], base_width
    for i, n in enumerate(stages):
      for j in range(n):
        block = _Block(cin, base_width * 2 ** i, 2 if (j == 0 and i > 0) else 1,
                       bottleneck, rngs)
        blocks.append(block)
        cin = block.out_features
    self.blocks = nnx.List(blocks)
    self.head = EmbeddingHead(cin, embedding_dim, normalize=normalize,
                              batch_norm=head_batch_norm, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.stem_norm(self.stem(x)))
    if not self.small_inputs:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(x, axis=(1, 2)))


class EncoderWithProxies(nnx.Module):
  """An encoder and the class proxies of its loss, trained together.

  Calling it embeds like the encoder; ``loss_inputs()`` gives the arrays the
  loss takes besides the embeddings (``{"proxies": [classes * per_class, dim]}``),
  which :func:`metric_learning.training.make_train_step` passes on, so proxy
  losses train in the same step, checkpoint and data-parallel runner as any
  other loss.
  """

  def __init__(self, encoder: nnx.Module, num_classes: int, embedding_dim: int, *,
               per_class: int = 1, rngs: nnx.Rngs):
    from metric_learning.losses import proxies  # pylint: disable=import-outside-toplevel
    self.encoder = encoder
    self.proxies = proxies.Proxies(num_classes, embedding_dim, per_class=per_class, rngs=rngs)

  def __call__(self, x):
    return self.encoder(x)

  def loss_inputs(self) -> dict[str, jax.Array]:
    return {"proxies": self.proxies()}


MODELS = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet18": functools.partial(ResNet, stages=(2, 2, 2, 2), bottleneck=False),
    "resnet50": functools.partial(ResNet, stages=(3, 4, 6, 3), bottleneck=True),
}


def _check_name(name: str) -> None:
  if name not in MODELS:
    raise ValueError(f"model name must be one of {sorted(MODELS)}; got {name!r}.")


def arguments(name: str) -> dict[str, Any]:
  """The settings model ``name`` accepts (keyword arguments besides the input
  shape), with their defaults; ``weights`` is accepted by every model."""
  _check_name(name)
  entry = MODELS[name]
  fixed = entry.keywords if isinstance(entry, functools.partial) else {}
  cls = entry.func if isinstance(entry, functools.partial) else entry
  params = inspect.signature(cls.__init__).parameters.values()
  out = {p.name: p.default for p in params
         if p.kind is p.KEYWORD_ONLY and p.name not in ("rngs", *fixed)}
  out["weights"] = None
  return out


def create(name: str, input_shape: Sequence[int], *, seed: int = 0,
           weights: str | None = None, **kwargs) -> nnx.Module:
  """Builds a registered model; unknown names or settings fail listing the known ones.

  Args:
    name: a key of :data:`MODELS`.
    input_shape: one input's shape, e.g. ``(28, 28, 1)``.
    seed: initialisation seed.
    weights: optional directory written by :func:`save_weights` to start from.
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
  _validation.known_settings(kwargs, arguments(name), field="model", owner=repr(name))
  model = MODELS[name](tuple(input_shape), rngs=nnx.Rngs(seed), **kwargs)
  return load_weights(model, weights) if weights else model


def load_weights(model: nnx.Module, path: str) -> nnx.Module:
  """Restores parameters saved by :func:`save_weights` (a local directory; no downloads)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"initial weights not found: {path!r}; expected a directory "
                            "written by metric_learning.models.save_weights.")
  graphdef, state = nnx.split(model)
  restored = ocp.StandardCheckpointer().restore(path, state)
  return nnx.merge(graphdef, restored)


def save_weights(model: nnx.Module, path: str) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.abspath(path), nnx.state(model))
  ckpt.wait_until_finished()
