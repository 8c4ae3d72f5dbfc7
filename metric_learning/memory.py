r"""Cross-batch memory (XBM, Wang et al. 2020) as explicit functional state.

A :class:`MemoryBank` is a ring buffer of past embeddings and labels. It is a
pytree: keep it in your train state, pass it through ``jit`` / ``pmap``, and
checkpoint it like parameters. Mine the current batch against batch + bank by
passing ``**bank.refs()`` to a loss that accepts reference candidates
(batch-hard, batch-all, semi-hard, contrastive, multi-similarity); then enqueue
the batch with :func:`update_memory`, so the bank only ever holds past batches.
Bank entries are constants: no gradient flows into them.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import metric_learning as ml
  >>> bank = ml.init_memory(8, 2)
  >>> x, y = jnp.array([[0.0, 0.0], [1.0, 0.0]]), jnp.array([3, 4])
  >>> loss = ml.batch_hard_triplet_loss(x, y, **bank.refs())  # empty bank: batch only
  >>> bank = ml.update_memory(bank, x, y)
  >>> int(bank.valid.sum()), int(bank.pointer)
  (2, 2)

References:
  Wang, Zhang, Huang, Scott. Cross-Batch Memory for Embedding Learning.
  CVPR 2020. https://arxiv.org/abs/1912.06798
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metric_learning import _validation


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MemoryBank:
  """Ring buffer state.

  Attributes:
    embeddings: ``[size, dim]`` stored embeddings.
    labels: ``[size]`` integer labels.
    valid: ``[size]`` bool, slots holding a real sample.
    pointer: int32 scalar, the next slot to write.
  """
  embeddings: jax.Array
  labels: jax.Array
  valid: jax.Array
  pointer: jax.Array

  @property
  def size(self) -> int:
    return self.embeddings.shape[0]

  def refs(self, *, active: bool | jax.Array = True) -> dict[str, jax.Array]:
    """Keyword arguments ``ref_embeddings``, ``ref_labels``, ``ref_where`` for a loss.

    Args:
      active: False (a bool or a traced bool scalar) hides every slot: the loss
        mines the batch alone. A warm-up is ``bank.refs(active=step >= warmup)``:
        Wang et al. start the memory after the first iterations, while the
        embeddings still drift fast.
    """
    return dict(ref_embeddings=self.embeddings, ref_labels=self.labels,
                ref_where=self.valid & jnp.asarray(active, bool))


def init_memory(size: int, dim: int, *, dtype=jnp.float32,
                label_dtype=jnp.int32) -> MemoryBank:
  """An empty bank of ``size`` slots for ``dim``-dimensional embeddings.

  Example:
    >>> import metric_learning as ml
    >>> ml.init_memory(4, 3).embeddings.shape
    (4, 3)
  """
  for name, value in (("size", size), ("dim", dim)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive int; got {value!r}.")
  return MemoryBank(embeddings=jnp.zeros((size, dim), dtype),
                    labels=jnp.zeros((size,), label_dtype),
                    valid=jnp.zeros((size,), bool),
                    pointer=jnp.zeros((), jnp.int32))


def update_memory(bank: MemoryBank, embeddings: jax.Array, labels: jax.Array, *,
                  where: jax.Array | None = None, axis_name: str | None = None) -> MemoryBank:
  """Enqueues a batch, overwriting the oldest slots (first in, first out).

  Padding rows (``where=False``) take their slots but are stored as invalid,
  so shapes stay static. Embeddings are stored without gradient.

  With ``axis_name`` (inside ``pmap`` / ``shard_map``) every device enqueues
  the **global** batch (all devices' rows, in device order): the banks stay
  identical across devices and equal the bank of one device fed the
  concatenated batches, so mining against them is global-batch mining over the
  past batches too (losses append ``ref_*`` candidates locally, ungathered).

  Args:
    bank: the current state.
    embeddings: ``[batch, dim]`` with ``batch <= bank.size``.
    labels: ``[batch]`` integer labels.
    where: optional ``[batch]`` bool; False marks padding rows.
    axis_name: the mapped axis whose devices' batches are enqueued together.

  Returns:
    The new :class:`MemoryBank`.

  Example:
    >>> import jax.numpy as jnp
    >>> import metric_learning as ml
    >>> bank = ml.init_memory(3, 1)
    >>> for step in range(2):
    ...   bank = ml.update_memory(bank, jnp.full((2, 1), float(step)), jnp.array([step, step]))
    >>> bank.labels.tolist(), int(bank.pointer)
    ([1, 0, 1], 1)
  """
  embeddings = _validation.float_matrix(embeddings, "embeddings")
  batch = embeddings.shape[0]
  if embeddings.shape[1] != bank.embeddings.shape[1]:
    raise ValueError(f"embeddings must have dim {bank.embeddings.shape[1]} to match "
                     f"the bank; got shape {embeddings.shape}.")
  if batch > bank.size:
    raise ValueError(f"embeddings has {batch} rows, more than the bank's {bank.size} "
                     "slots; use a larger bank.")
  labels = _validation.int_vector(labels, batch, "labels")
  where = _validation.bool_vector(where, batch, "where")
  if axis_name is not None:
    gather = lambda v: jax.lax.all_gather(v, axis_name, tiled=True)
    embeddings, labels, where = gather(embeddings), gather(labels), gather(where)
    batch = embeddings.shape[0]
    if batch > bank.size:
      raise ValueError(f"the global batch has {batch} rows (over axis {axis_name!r}), more "
                       f"than the bank's {bank.size} slots; use a larger bank.")
  slots = (bank.pointer + jnp.arange(batch)) % bank.size
  stored = jax.lax.stop_gradient(embeddings).astype(bank.embeddings.dtype)
  return MemoryBank(
      embeddings=bank.embeddings.at[slots].set(stored),
      labels=bank.labels.at[slots].set(labels.astype(bank.labels.dtype)),
      valid=bank.valid.at[slots].set(where),
      pointer=((bank.pointer + batch) % bank.size).astype(jnp.int32))
