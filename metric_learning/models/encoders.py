"""Small encoders for small inputs (digits, toy data): an MLP and a convnet."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning.models import base
from metric_learning.models import heads


class MLP(base.Encoder):
  """Flatten → [Linear → ReLU (→ dropout)] × len(hidden) → embedding head.

  Args:
    input_shape: one input's shape.
    hidden: hidden widths; ``features(x)`` is the last hidden layer's output.
    embedding_dim, normalize, head_batch_norm, head_hidden, head_init: the
      :class:`~metric_learning.models.heads.EmbeddingHead`.
    dropout: dropout rate after each hidden layer (training mode only).
    input_norm: ``None`` or ``"imagenet"`` (see
      :func:`~metric_learning.models.base.normalize_inputs`).
    dtype: ``"float32"`` or ``"bfloat16"`` compute (parameters stay float32).
    freeze_batch_norm: accepted for uniformity; the MLP has no backbone BatchNorm.
    rngs: initialisation keys.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MLP((4,), hidden=(8,), embedding_dim=2, rngs=nnx.Rngs(0))
    >>> m.features(jnp.ones((3, 4))).shape, m(jnp.ones((3, 4))).shape
    ((3, 8), (3, 2))
  """

  def __init__(self, input_shape: Sequence[int], *, hidden: Sequence[int] = (256,),
               embedding_dim: int = 64, normalize: bool = False, dropout: float = 0.0,
               head_batch_norm: bool = False, head_hidden: Sequence[int] = (),
               head_init: str = "lecun_normal",
               input_norm: str | None = None, dtype: str = "float32",
               freeze_batch_norm: bool = False, rngs: nnx.Rngs):
    del freeze_batch_norm
    base.check_input_norm(input_norm, input_shape)
    self.input_norm, self.dtype = input_norm, base.compute_dtype(dtype)
    features = 1
    for s in input_shape:
      features *= s
    self.layers = nnx.List([nnx.Linear(i, o, dtype=self.dtype, rngs=rngs)
                            for i, o in zip([features, *hidden[:-1]], hidden)])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = heads.EmbeddingHead(hidden[-1] if hidden else features, embedding_dim,
                                    normalize=normalize, batch_norm=head_batch_norm,
                                    hidden=head_hidden,
                                    init=head_init, rngs=rngs)

  def features(self, x):
    """``[batch, *input_shape]`` → ``[batch, hidden[-1]]`` float32."""
    x = base.normalize_inputs(x, self.input_norm, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      x = self.dropout(jax.nn.relu(layer(x)))
    return x.astype(jnp.float32)


class CNN(base.Encoder):
  """A small convnet: [Conv 3×3 → BatchNorm → ReLU] per width, 2× pooling between.

  Args:
    input_shape: one input's shape ``(height, width, channels)``.
    widths: the channels of each conv layer; ``features(x)`` is the last one's
      global average.
    embedding_dim, normalize, head_batch_norm, head_hidden, head_init: the
      :class:`~metric_learning.models.heads.EmbeddingHead`.
    input_norm: ``None`` or ``"imagenet"``.
    dtype: ``"float32"`` or ``"bfloat16"`` compute (parameters stay float32).
    freeze_batch_norm: the conv layers' BatchNorm uses (and keeps) its running
      statistics in training too.
    rngs: initialisation keys.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = CNN((8, 8, 1), widths=(4, 8), embedding_dim=2, rngs=nnx.Rngs(0))
    >>> m.features(jnp.ones((3, 8, 8, 1))).shape
    (3, 8)
  """

  def __init__(self, input_shape: Sequence[int], *, widths: Sequence[int] = (32, 64),
               embedding_dim: int = 64, normalize: bool = False,
               head_batch_norm: bool = False, head_hidden: Sequence[int] = (),
               head_init: str = "lecun_normal",
               input_norm: str | None = None, dtype: str = "float32",
               freeze_batch_norm: bool = False, rngs: nnx.Rngs):
    base.check_input_norm(input_norm, input_shape)
    self.input_norm, self.dtype = input_norm, base.compute_dtype(dtype)
    channels = input_shape[-1]
    self.convs = nnx.List([nnx.Conv(i, o, (3, 3), dtype=self.dtype,
                                    conv_general_dilated=base.conv_general_dilated, rngs=rngs)
                           for i, o in zip([channels, *widths[:-1]], widths)])
    self.norms = nnx.List([base.batch_norm(w, frozen=freeze_batch_norm, dtype=self.dtype,
                                           rngs=rngs) for w in widths])
    self.head = heads.EmbeddingHead(widths[-1], embedding_dim, normalize=normalize,
                                    batch_norm=head_batch_norm, hidden=head_hidden,
                                    init=head_init,
                                    rngs=rngs)

  def features(self, x):
    """``[batch, height, width, channels]`` → ``[batch, widths[-1]]`` float32."""
    x = base.normalize_inputs(x, self.input_norm, self.dtype)
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = jax.nn.relu(norm(conv(x)))
      if i < len(self.convs) - 1:
        x = base.avg_pool_2x2(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


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
    from metric_learning.models import proxies  # pylint: disable=import-outside-toplevel
    self.encoder = encoder
    self.proxies = proxies.Proxies(num_classes, embedding_dim, per_class=per_class, rngs=rngs)

  def features(self, x):
    return self.encoder.features(x)

  def __call__(self, x):
    return self.encoder(x)

  def loss_inputs(self) -> dict:
    return {"proxies": self.proxies()}
