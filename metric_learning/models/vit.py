"""Vision Transformers in timm's layout (Dosovitskiy et al., An Image is Worth
16x16 Words: Transformers for Image Recognition at Scale, 2021).

The modules and their attribute names mirror timm's ``VisionTransformer``
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.0.attn.qkv``,
``blocks.0.mlp.fc1``, ``norm``, ...), so a timm ``state_dict`` saved as
``.safetensors`` loads by name (:func:`~metric_learning.models.load_pretrained`)
and gives the same features.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning.models import base
from metric_learning.models import heads

_INIT = nnx.initializers.truncated_normal(stddev=0.02)   # timm's trunc_normal_(std=.02)


def _linear(cin: int, cout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(cin, cout, kernel_init=_INIT, dtype=dtype, rngs=rngs)


def _layer_norm(dim: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)


class PatchEmbed(nnx.Module):
  """Non-overlapping ``patch × patch`` patches → ``[batch, patches, dim]`` (row-major)."""

  def __init__(self, channels: int, dim: int, patch: int, dtype, rngs: nnx.Rngs):
    self.proj = nnx.Conv(channels, dim, (patch, patch), strides=patch, padding="VALID",
                         dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = self.proj(x)
    return x.reshape(x.shape[0], -1, x.shape[-1]), x.shape[1:3]


class Attention(nnx.Module):
  """Multi-head self-attention with one ``qkv`` projection (timm's layout)."""

  def __init__(self, dim: int, num_heads: int, dtype, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}.")
    self.num_heads = num_heads
    self.qkv = _linear(dim, 3 * dim, dtype, rngs)
    self.proj = _linear(dim, dim, dtype, rngs)

  def __call__(self, x):
    b, n, d = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]          # [b, n, heads, head_dim]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * (d // self.num_heads) ** -0.5, k)
    # Softmax in float32: bfloat16 logits lose the small differences that matter.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d)
    return self.proj(out)


class Mlp(nnx.Module):
  """fc1 → GELU (exact erf, as torch's ``nn.GELU()``) → fc2."""

  def __init__(self, dim: int, hidden: int, dtype, rngs: nnx.Rngs):
    self.fc1 = _linear(dim, hidden, dtype, rngs)
    self.fc2 = _linear(hidden, dim, dtype, rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dtype, rngs: nnx.Rngs):
    self.norm1 = _layer_norm(dim, dtype, rngs)
    self.attn = Attention(dim, num_heads, dtype, rngs)
    self.norm2 = _layer_norm(dim, dtype, rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype, rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class VisionTransformer(base.Encoder):
  """A ViT encoder (Dosovitskiy et al. 2021) in timm's layout, with an embedding head.

  ``features(x)`` is the class token after the final LayerNorm (timm's
  ``forward_head(forward_features(x), pre_logits=True)``).

  The position embeddings are learned for an ``image_size`` grid (default: the
  input shape's). Inputs of another size (a multiple of ``patch_size``) get the
  patch position embeddings resized bilinearly (``jax.image.resize``); timm
  resamples bicubically, so only same-size inputs match timm exactly.

  Args:
    input_shape: one input's shape ``(height, width, channels)``.
    dim: the token width (384 for ViT-S, 768 for ViT-B).
    depth: the number of blocks.
    num_heads: attention heads per block.
    patch_size: the patch side in pixels.
    mlp_ratio: the MLP's hidden width over ``dim``.
    image_size: ``(height, width)`` of the position-embedding grid; default
      ``input_shape[:2]`` (e.g. ``(224, 224)`` to load 224×224 weights and run
      on 256×128 person crops).
    embedding_dim, normalize, head_batch_norm, head_hidden, head_init: the
      :class:`~metric_learning.models.heads.EmbeddingHead`.
    input_norm: ``"imagenet"`` (default) or ``None``; uint8 inputs are scaled to
      [0, 1] first. (Some timm weights use mean = std = 0.5: pass
      ``input_norm="inception"`` for those.)
    dtype: ``"float32"`` or ``"bfloat16"`` compute (parameters stay float32).
    freeze_batch_norm: accepted for uniformity; a ViT has no BatchNorm.
    rngs: initialisation keys.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = VisionTransformer((32, 32, 3), dim=8, depth=1, num_heads=2,
    ...                       embedding_dim=4, rngs=nnx.Rngs(0))
    >>> m.features(jnp.zeros((2, 32, 32, 3))).shape, m(jnp.zeros((2, 32, 32, 3))).shape
    ((2, 8), (2, 4))
  """

  classifier_prefixes = ("head.",)

  def __init__(self, input_shape: Sequence[int], *, dim: int = 768, depth: int = 12,
               num_heads: int = 12, patch_size: int = 16, mlp_ratio: float = 4.0,
               image_size: Sequence[int] | None = None, embedding_dim: int = 128,
               normalize: bool = False, head_batch_norm: bool = False,
               head_hidden: Sequence[int] = (),
               head_init: str = "lecun_normal", input_norm: str | None = "imagenet",
               dtype: str = "float32", freeze_batch_norm: bool = False, rngs: nnx.Rngs):
    del freeze_batch_norm
    base.check_input_norm(input_norm, input_shape)
    self.input_norm, self.dtype = input_norm, base.compute_dtype(dtype)
    height, width = tuple(image_size or input_shape[:2])
    if height % patch_size or width % patch_size or not height or not width:
      raise ValueError(f"image size {(height, width)} must be a positive multiple of "
                       f"patch_size {patch_size} (input shape {tuple(input_shape)}).")
    self.grid = (height // patch_size, width // patch_size)
    self.patch_size = patch_size
    self.patch_embed = PatchEmbed(input_shape[-1], dim, patch_size, self.dtype, rngs)
    self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, dim)))
    self.pos_embed = nnx.Param(_INIT(rngs.params(), (1, 1 + self.grid[0] * self.grid[1], dim)))
    self.blocks = nnx.List([Block(dim, num_heads, mlp_ratio, self.dtype, rngs)
                            for _ in range(depth)])
    self.norm = _layer_norm(dim, self.dtype, rngs)
    self.head = heads.EmbeddingHead(dim, embedding_dim, normalize=normalize,
                                    batch_norm=head_batch_norm, hidden=head_hidden,
                                    init=head_init,
                                    rngs=rngs)

  def position_embeddings(self, grid: tuple[int, int]) -> jax.Array:
    """``[1, 1 + grid[0] * grid[1], dim]``: the class position, then the patches'
    (bilinearly resized when ``grid`` is not the learned grid)."""
    pos = self.pos_embed[...]
    if tuple(grid) == self.grid:
      return pos
    patches = pos[0, 1:].reshape(*self.grid, -1)
    patches = jax.image.resize(patches, (*grid, patches.shape[-1]), "bilinear")
    return jnp.concatenate([pos[:, :1], patches.reshape(1, -1, patches.shape[-1])], axis=1)

  def features(self, x):
    """``[batch, height, width, channels]`` → ``[batch, dim]`` float32."""
    x = base.normalize_inputs(x, self.input_norm, self.dtype)
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(f"input height and width must be multiples of patch_size "
                       f"{self.patch_size}; got input shape {x.shape}.")
    x, grid = self.patch_embed(x)
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
    x = x + self.position_embeddings(grid).astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)[:, 0].astype(jnp.float32)
