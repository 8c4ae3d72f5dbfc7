"""The embedding head: pooled backbone features → embeddings."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning import distances

INITS = ("lecun_normal", "identity")


class EmbeddingHead(nnx.Module):
  """[BatchNorm →] [Linear → BatchNorm → ReLU] × len(hidden) → Linear [→ L2 normalise].

  ``batch_norm=True`` centres and scales the pooled features before the
  projection. Pooled ReLU features share a large positive mean, which maps every
  input to nearly the same direction at initialisation, close to the collapsed
  state; normalising them first spreads the initial embeddings (on digits, the
  CNN's initial hardest-negative distances grow more than twofold).

  ``hidden`` adds hidden layers; TriNet (Hermans et al., In Defense of the
  Triplet Loss for Person Re-Identification, 2017) maps ResNet-50's 2048
  features through ``hidden=(1024,)`` to 128 dimensions. The head computes in
  float32 whatever the encoder's dtype, so embeddings (and losses) are float32.

  Args:
    in_features: the width of the pooled features.
    embedding_dim: the output width.
    normalize: L2-normalise the embeddings.
    batch_norm: BatchNorm on the input features.
    hidden: widths of the hidden layers.
    init: the projection's initial weights: ``"lecun_normal"`` (Flax's default),
      or ``"identity"`` (an identity kernel and zero bias, so that the initial
      embeddings are the (L2-normalised) features themselves: fine-tuning then
      starts from, say, ImageNet features as they are). ``"identity"`` needs
      ``embedding_dim == in_features``, no hidden layers and no ``batch_norm``.
    rngs: initialisation keys.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> head = EmbeddingHead(8, 3, normalize=True, hidden=(4,), rngs=nnx.Rngs(0))
    >>> head(jnp.ones((2, 8))).shape
    (2, 3)
  """

  def __init__(self, in_features: int, embedding_dim: int, *, normalize: bool,
               batch_norm: bool = False, hidden: Sequence[int] = (),
               init: str = "lecun_normal", rngs: nnx.Rngs):
    if init not in INITS:
      raise ValueError(f"head_init must be one of {INITS}; got {init!r}.")
    if init == "identity" and (embedding_dim != in_features or hidden or batch_norm):
      raise ValueError(f"head_init='identity' needs embedding_dim equal to the features' "
                       f"width ({in_features}; got {embedding_dim}), no head_hidden and "
                       "head_batch_norm=False.")
    self.norm = nnx.BatchNorm(in_features, rngs=rngs) if batch_norm else None
    widths = [in_features, *hidden]
    self.hidden = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths, hidden)])
    self.hidden_norms = nnx.List([nnx.BatchNorm(o, rngs=rngs) for o in hidden])
    self.linear = nnx.Linear(widths[-1], embedding_dim, rngs=rngs)
    if init == "identity":
      self.linear.kernel[...] = jnp.eye(in_features, dtype=self.linear.kernel[...].dtype)
    self.normalize = normalize

  def __call__(self, x):
    """Maps ``[batch, in_features]`` features to ``[batch, embedding_dim]`` float32."""
    x = jnp.asarray(x, jnp.float32)
    if self.norm is not None:
      x = self.norm(x)
    for linear, norm in zip(self.hidden, self.hidden_norms):
      x = jax.nn.relu(norm(linear(x)))
    x = self.linear(x)
    return distances.l2_normalize(x) if self.normalize else x
