"""The steps every in-batch loss shares.

inputs → candidates → distances → masks → terms → reduction.

Candidates are the batch itself, optionally followed by reference rows (a
cross-batch memory bank, :mod:`metric_learning.memory`). Reference rows are
constants: no gradient flows into them.

Two guarantees hold for every loss that ends in :meth:`Batch.finish`:

* a NaN or inf in a real row (of the batch or of the bank) makes the value and
  the gradient NaN — mining must not hide a diverged model behind a finite
  loss — while padding rows are ignored whatever they hold;
* an empty batch (zero rows) gives 0 for every reduction (``[0]`` for
  ``"none"``): :func:`prepare` gives the loss one padding row to work on.
"""

from __future__ import annotations

import dataclasses

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from metric_learning import _kernels
from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning import masks as masks_lib
from metric_learning import reductions

# Finite stand-in for log(0) so that no -inf enters an arithmetic expression.
NEG_LOG = -1e30

# The automatic path of every in-batch loss (``block_size=None``): one dense
# [anchors, candidates] matrix up to AUTO_DENSE_ROWS anchor rows, blocks of
# AUTO_BLOCK_ROWS rows above. Decided from static shapes, at trace time.
# Measured on 2 CPU cores (experiments/benchmarks/loss_benchmark.py): from ~512 rows on a
# [256, candidates] block stays in cache and is as fast as or faster than the
# dense matrix, and memory is O(block · candidates) instead of O(anchors · candidates).
AUTO_DENSE_ROWS = 512
AUTO_BLOCK_ROWS = 256
# Rows per automatic block where a scalar reduction sums the blocks with their
# gradients (:func:`sum_row_blocks`): each block then also holds its backward
# pass, and 64 rows timed faster than 256 on 2 CPU cores (batch-all, B = 4096)
# with a quarter of the planned temporaries. TFA semi-hard's mining pass
# ([rows, 4, C] windows) uses it too.
AUTO_SUM_BLOCK_ROWS = 64


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
  """Validated anchors and candidates, in the compute dtype."""
  anchors: jax.Array            # [A, D]
  labels: jax.Array             # [A]
  where: jax.Array              # [A]
  candidates: jax.Array         # [C, D]: anchors, then references
  candidate_labels: jax.Array   # [C]
  candidate_where: jax.Array    # [C]
  self_index: jax.Array         # [A]: each anchor's own candidate column
  out_dtype: str = dataclasses.field(metadata=dict(static=True))
  axis_name: str | None = dataclasses.field(default=None, metadata=dict(static=True))
  # Reference (memory-bank) rows at the end of the candidates.
  num_refs: int = dataclasses.field(default=0, metadata=dict(static=True))
  # The caller's batch had no rows; one padding anchor stands in for it.
  empty: bool = dataclasses.field(default=False, metadata=dict(static=True))

  def gather(self, x: jax.Array) -> jax.Array:
    """A per-anchor array of every device's anchors, in candidate order."""
    if self.axis_name is None:
      return x
    return jax.lax.all_gather(x, self.axis_name, tiled=True)

  def masks(self) -> masks_lib.PairMasks:
    return masks_lib.pair_masks(self.labels, self.where, self.candidate_labels,
                                self.candidate_where, self.self_index)

  def distances(self, metric: str) -> jax.Array:
    """Differentiable ``[A, C]`` distances."""
    return _kernels.pairwise(self.anchors, self.candidates, metric)

  def nonfinite_guard(self) -> jax.Array:
    """0 — or NaN, in value and gradient — when a real row holds NaN or inf.

    Mining compares distances, and a comparison with NaN is False: without this
    one NaN row can silently drop every anchor (loss 0, "converged"). Padding
    rows were zeroed in :func:`prepare`, so they never trigger it. ``x * 0`` is
    exactly 0 for finite ``x`` (no overflow, unlike ``0 * sum(x)``).
    """
    x = self.candidates
    scale = jax.lax.stop_gradient(jnp.where(jnp.all(jnp.isfinite(x)), 0, jnp.nan))
    return jnp.sum(x * scale.astype(x.dtype))

  def finish(self, terms: reductions.Terms, reduction: str) -> jax.Array:
    value = self._reduce(terms, reduction) + self.nonfinite_guard()
    if self.empty and reduction == "none":
      value = value[:0]
    return value.astype(self.out_dtype)

  def _reduce(self, terms: reductions.Terms, reduction: str) -> jax.Array:
    if self.axis_name is None or reduction == "none":
      return reductions.reduce_terms(terms, reduction)
    # Global reduction over devices. Differentiate only this device's share: the
    # cotangents of the other devices' terms reach our rows through the
    # transpose of the all_gather that built the candidates. Putting the psum
    # in the differentiated path would multiply gradients by the device count
    # under pmap, where psum transposes to psum.
    local = jnp.sum(terms.values)
    if reduction != "sum":
      count = terms.counts if reduction == "mean" else terms.nonzero
      total = jax.lax.psum(jax.lax.stop_gradient(jnp.sum(count)), self.axis_name)
      local = reductions.safe_divide(local, total.astype(local.dtype))
    return local + jax.lax.stop_gradient(jax.lax.psum(local, self.axis_name) - local)


@jax.custom_vjp
def _upcast(x: jax.Array) -> jax.Array:
  """float16 → float32 whose backward saturates instead of overflowing to inf.

  Losses on normalised embeddings are scale-invariant, so their gradient grows
  like 1 / |x|: for small float16 embeddings it can exceed the float16 range.
  Computed in float32, it is then cast back saturated at the largest finite
  float16 value, not inf (a NaN stays NaN).
  """
  return x.astype(jnp.float32)


def _upcast_fwd(x):
  return _upcast(x), jnp.zeros((), x.dtype)


def _upcast_bwd(like, g):
  big = jnp.finfo(like.dtype).max
  return (jnp.clip(g, -big, big).astype(like.dtype),)


_upcast.defvjp(_upcast_fwd, _upcast_bwd)


def _to_compute(x: jax.Array, dtype) -> jax.Array:
  return _upcast(x) if x.dtype == jnp.float16 and dtype == jnp.float32 else x.astype(dtype)


def prepare(embeddings, labels, where=None, ref_embeddings=None, ref_labels=None,
            ref_where=None, axis_name=None) -> Batch:
  """Validates the inputs of an in-batch loss and builds its :class:`Batch`.

  With ``axis_name`` (inside ``pmap`` / ``shard_map``) the candidates are every
  device's rows, gathered in device order; anchors stay local.
  """
  embeddings = _validation.float_matrix(embeddings, "embeddings")
  size = embeddings.shape[0]
  labels = _validation.int_vector(labels, size, "labels")
  where = _validation.bool_vector(where, size, "where")
  out_dtype = str(embeddings.dtype)
  empty = size == 0
  if empty:   # one padding row: every loss then yields 0 without a zero-size reduce
    embeddings = jnp.concatenate([embeddings, jnp.zeros((1,) + embeddings.shape[1:],
                                                        embeddings.dtype)])
    labels = jnp.concatenate([labels, jnp.zeros((1,), labels.dtype)])
    where = jnp.concatenate([where, jnp.zeros((1,), bool)])
    size = 1
  dtype = _validation.compute_dtype(embeddings.dtype)
  # Padding rows may hold anything (even NaN): zero them so that nothing they
  # hold reaches a value or, through 0 * NaN in a matmul transpose, a gradient.
  x = jnp.where(where[:, None], _to_compute(embeddings, dtype), 0)
  cands, cand_labels, cand_where = x, labels, where
  self_index = jnp.arange(size)
  if axis_name is not None:
    gather = lambda v: jax.lax.all_gather(v, axis_name, tiled=True)
    cands, cand_labels, cand_where = gather(x), gather(labels), gather(where)
    self_index = self_index + jax.lax.axis_index(axis_name) * size
  else:   # jit on an Explicit mesh: the candidate side must be whole everywhere
    cands, cand_labels, cand_where = (_sharding.replicate(v)
                                      for v in (cands, cand_labels, cand_where))
  if (ref_embeddings is None) != (ref_labels is None):
    raise ValueError("ref_embeddings and ref_labels must be given together; got "
                     f"ref_embeddings={'None' if ref_embeddings is None else 'array'}"
                     f", ref_labels={'None' if ref_labels is None else 'array'}.")
  num_refs = 0
  if ref_embeddings is not None:
    refs = _validation.float_matrix(ref_embeddings, "ref_embeddings")
    num_refs = refs.shape[0]
    _validation.same_dim(embeddings, refs, "embeddings", "ref_embeddings")
    ref_labels = _validation.int_vector(ref_labels, refs.shape[0], "ref_labels",
                                        "ref_embeddings")
    ref_where = _validation.bool_vector(ref_where, refs.shape[0], "ref_where",
                                        "ref_embeddings")
    refs = jnp.where(ref_where[:, None], refs.astype(dtype), 0)
    cands = jnp.concatenate([cands, jax.lax.stop_gradient(refs)])
    cand_labels = jnp.concatenate([cand_labels, ref_labels.astype(labels.dtype)])
    cand_where = jnp.concatenate([cand_where, ref_where])
  elif ref_where is not None:
    raise ValueError("ref_where was given without ref_embeddings and ref_labels.")
  return Batch(anchors=x, labels=labels, where=where, candidates=cands,
               candidate_labels=cand_labels, candidate_where=cand_where,
               self_index=self_index, out_dtype=out_dtype,
               axis_name=axis_name, num_refs=num_refs, empty=empty)


def block_rows(block_size, rows: int, auto: int | None = None) -> int | None:
  """Rows per block for ``rows`` anchors: None means one dense block.

  ``block_size=None`` is automatic (dense up to :data:`AUTO_DENSE_ROWS` rows,
  blocks of ``auto`` rows above, by default :data:`AUTO_BLOCK_ROWS`); an int
  is used as given, and an int ``>= rows`` (e.g. the batch size) forces the
  dense path.
  """
  block_size = _validation.block_size(block_size)
  if block_size is None:
    block_size = None if rows <= AUTO_DENSE_ROWS else (auto or AUTO_BLOCK_ROWS)
  return None if block_size is None or block_size >= rows else block_size


def map_row_blocks(fn, rows, block_size: int | None):
  """``fn(*rows)`` evaluated on blocks of ``block_size`` rows, outputs concatenated.

  ``fn`` maps ``[block, ...]`` arrays to a pytree of ``[block, ...]`` arrays and
  must treat rows independently. Each block runs under ``jax.checkpoint`` in a
  ``lax.map``: the backward pass recomputes one block at a time, so neither pass
  holds more than one block's temporaries. ``None`` calls ``fn`` once on every row.
  """
  if block_size is None:
    return fn(*rows)
  size = rows[0].shape[0]
  rows = _split_blocks(rows, block_size)
  blocks = rows[0].shape[0]
  out = jax.lax.map(jax.checkpoint(lambda r: fn(*r)), rows)
  return jax.tree.map(lambda v: v.reshape((blocks * block_size,) + v.shape[2:])[:size], out)


def _split_blocks(rows, block_size: int):
  """``rows`` padded to whole blocks and shaped ``[blocks, block_size, ...]``."""
  size = rows[0].shape[0]
  blocks = -(-size // block_size)
  pad = blocks * block_size - size
  # Blocks of a row-sharded (Explicit mesh) batch cannot be reshaped in place:
  # every device then streams over all rows.
  rows = [_sharding.replicate(r) for r in rows]
  rows = [jnp.pad(r, [(0, pad)] + [(0, 0)] * (r.ndim - 1)) for r in rows]
  return [r.reshape((blocks, block_size) + r.shape[1:]) for r in rows]


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_tangent(x):
  """The zero tangent of ``x`` (``float0`` for an integer array)."""
  if _is_float(x):
    return jnp.zeros_like(x)
  return np.zeros(jnp.shape(x), jax.dtypes.float0)


def _merge(floats, others, flags):
  """Interleaves two lists back into the order ``flags`` (True: from ``floats``)."""
  floats, others = iter(floats), iter(others)
  return [next(floats) if f else next(others) for f in flags]


def sum_row_blocks(fn, rows, block_size: int) -> reductions.Terms:
  """The :class:`Terms` of ``fn(*rows)`` summed over all rows, streamed, with
  the gradient of the summed values taken block by block as they are computed.

  ``fn`` is as in :func:`map_row_blocks` and returns per-row :class:`Terms`.
  The result holds one entry each (``[1]``): the sums a scalar reduction
  divides. Differentiated, each block's values are differentiated right after
  they are computed (``jax.vjp`` of the block) and the gradients of the rows
  and of everything ``fn`` closes over (the candidates, a traced margin, ...)
  are kept, O((rows + candidates) · dim); the derivative is their inner
  product with the inputs' tangents (a ``custom_jvp``), so reverse mode only
  scales them by the reduction's cotangent and forward mode works too.
  :func:`map_row_blocks` under ``jax.checkpoint`` instead recomputes every
  block in the backward pass: the whole forward a second time. Counts carry no
  derivative (they are piecewise constant).
  """
  size = rows[0].shape[0]
  # The rows padding the last block are dropped from the sums.
  rows = _split_blocks(tuple(rows) + (jnp.ones((size,), bool),), block_size)
  example = [r[0] for r in rows]

  def total(*r):
    *r, inside = r
    t = fn(*r)
    return tuple(jnp.sum(jnp.where(inside, v, 0)) for v in (t.values, t.counts, t.nonzero))

  # Everything ``fn`` closes over (candidates, their labels, a traced margin)
  # becomes an explicit input: the rule below may be traced apart from the
  # caller's trace (inside a ``lax.switch`` branch, say), where a closed-over
  # tracer would leak.
  closed = jax.make_jaxpr(total)(*example)
  consts = list(closed.consts)

  def block_total(r, c):
    return tuple(jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(closed.jaxpr, c))(*r))

  def sums(out):
    return tuple(jnp.sum(o, axis=0, keepdims=True) for o in out)

  @jax.custom_jvp
  def row_block_sums(rows, consts):
    return sums(jax.lax.map(lambda r: block_total(r, consts), rows))

  @row_block_sums.defjvp
  def row_block_sums_jvp(primals, tangents):
    rows, consts = primals
    # Only floating inputs are differentiated (labels, masks, indices are not).
    flags = ([_is_float(r) for r in rows], [_is_float(c) for c in consts])

    def pick(xs, fs, want=True):
      return [x for x, f in zip(xs, fs) if f == want]

    def step(grad_consts, r):
      def value(float_r, float_c):
        r_all = _merge(float_r, pick(r, flags[0], False), flags[0])
        c_all = _merge(float_c, pick(consts, flags[1], False), flags[1])
        s, counts, nonzero = block_total(r_all, c_all)
        return s, (counts, nonzero)
      s, pullback, counts = jax.vjp(value, pick(r, flags[0]), pick(consts, flags[1]),
                                    has_aux=True)
      grad_r, grad_c = pullback(jnp.ones_like(s))
      return jax.tree.map(jnp.add, grad_consts, grad_c), ((s, *counts), grad_r)

    zeros = [jnp.zeros_like(c) for c in pick(consts, flags[1])]
    grad_consts, (out, grad_rows) = jax.lax.scan(step, zeros, rows)
    out = sums(out)
    # The derivative: sum over the floating inputs of <gradient, tangent>.
    dot = sum((jnp.vdot(g, t) for g, t in zip(grad_rows + grad_consts,
                                              pick(tangents[0], flags[0])
                                              + pick(tangents[1], flags[1]))),
              jnp.zeros((), out[0].dtype))
    dot = jnp.reshape(dot, out[0].shape).astype(out[0].dtype)
    return out, (dot, *map(_zero_tangent, out[1:]))

  return reductions.Terms(*row_block_sums(rows, consts))


def mined_pair_masks(batch: Batch, pairs) -> tuple[jax.Array, jax.Array]:
  """The ``[A, C]`` masks of a miner's selection (``MinedPairs``) for ``batch``.

  A miner sees the batch (with ``axis_name``: ``[local, global]``), not a
  memory bank: the reference columns stay as the labels make them.
  """
  positive, negative = getattr(pairs, "positive", None), getattr(pairs, "negative", None)
  if positive is None or negative is None:
    raise TypeError("pairs must be a MinedPairs selection (metric_learning.mining."
                    f"pair_margin, multi_similarity_pairs, ...); got {type(pairs).__name__}.")
  rows = 0 if batch.empty else batch.anchors.shape[0]
  columns = batch.candidates.shape[0] - batch.num_refs - (1 if batch.empty else 0)
  out = []
  for name, mask in (("positive", positive), ("negative", negative)):
    mask = jnp.asarray(mask)
    if mask.shape != (rows, columns) or mask.dtype != jnp.bool_:
      raise ValueError(f"pairs.{name} must be a bool [{rows}, {columns}] mask (anchors x "
                       f"batch); got {mask.dtype} {mask.shape}.")
    if batch.empty:
      mask = jnp.zeros((1, 1), bool)
    out.append(jnp.pad(mask, ((0, 0), (0, batch.num_refs)), constant_values=True))
  return out[0], out[1]


def per_anchor(batch: Batch, block_size, fn, pairs=None, extra=(), reduction=None):
  """``fn(anchors [b, D], masks PairMasks [b, C], *extra)`` over blocks of anchor rows.

  The shared streaming path of the losses whose terms are per anchor row:
  ``fn`` returns a pytree of ``[b, ...]`` arrays (typically :class:`Terms`),
  computed from the block's rows against every candidate. Padding rows added
  to fill the last block are not real (``where`` False) and are dropped.
  ``pairs`` (a ``MinedPairs``): only the selected positive and negative pairs
  are in the masks ``fn`` sees. ``extra``: more per-anchor ``[A, ...]`` arrays
  (e.g. a per-anchor hyper-parameter, or a vector an earlier streamed pass
  computed), cut into the same blocks. ``reduction``: the one the loss will
  apply; a scalar one on blocks of rows takes :func:`sum_row_blocks` (the
  returned :class:`Terms` are then the sums, ``[1]`` each).
  """
  extra = tuple(extra)

  def run(anchors, labels, where, self_index, *more):
    more, selected = more[:len(extra)], more[len(extra):]
    masks = masks_lib.pair_masks(labels, where, batch.candidate_labels,
                                 batch.candidate_where, self_index)
    if selected:
      masks = dataclasses.replace(masks, positive=masks.positive & selected[0],
                                  negative=masks.negative & selected[1])
    return fn(anchors, masks, *more)

  rows = (batch.anchors, batch.labels, batch.where, batch.self_index) + extra
  if pairs is not None:
    rows += mined_pair_masks(batch, pairs)
  size = batch.anchors.shape[0]
  if sums_rows(batch, block_size, reduction):
    return sum_row_blocks(run, rows, block_rows(block_size, size, auto=AUTO_SUM_BLOCK_ROWS))
  return map_row_blocks(run, rows, block_rows(block_size, size))


def sums_rows(batch: Batch, block_size, reduction) -> bool:
  """Whether :func:`per_anchor` returns summed :class:`Terms` (``[1]`` each):
  a scalar reduction over blocks of rows."""
  return (reduction not in (None, "none")
          and block_rows(block_size, batch.anchors.shape[0]) is not None)


def per_reference(batch: Batch, block_size, fn):
  """``fn(rows [b, D], masks PairMasks [b, C])`` over blocks of the reference rows.

  The reference (memory-bank) rows as anchors, streamed like :func:`per_anchor`:
  for a loss whose terms need a candidate's own neighbourhood (lifted
  structure: :math:`N(j)` of a positive ``j``), which bank rows are too. They
  carry no gradient, but the candidates they are compared with do.
  """
  size = batch.candidates.shape[0]
  start = size - batch.num_refs

  def run(rows, labels, where, self_index):
    masks = masks_lib.pair_masks(labels, where, batch.candidate_labels,
                                 batch.candidate_where, self_index)
    return fn(rows, masks)

  rows = (batch.candidates[start:], batch.candidate_labels[start:],
          batch.candidate_where[start:], jnp.arange(start, size))
  return map_row_blocks(run, rows, block_rows(block_size, batch.num_refs))


def check_options(*, metric=None, reduction=None, similarity: bool = False,
                  **nonnegative) -> None:
  """Validates common options; ``similarity=True`` also accepts ``"dot"``.

  Losses that only compare distances (the triplet family: a margin between an
  anchor-positive and an anchor-negative value) accept ``"dot"`` ranked as the
  distance :math:`-x^\top y`; losses that square or threshold a distance do not.
  """
  if metric is not None:
    _validation.choice(metric, "metric",
                       distances_lib.ALL_METRICS if similarity else distances_lib.METRICS)
  if reduction is not None:
    _validation.choice(reduction, "reduction", reductions.REDUCTIONS)
  for name, value in nonnegative.items():
    _validation.nonnegative(value, name)


def triplet_term(gap: jax.Array, margin, soft: bool) -> jax.Array:
  """``[m + gap]_+`` (hinge) or ``softplus(gap)`` (soft margin, no m), gap = d_ap - d_an."""
  return jax.nn.softplus(gap) if soft else jax.nn.relu(margin + gap)


def terms(values: jax.Array, mask: jax.Array, axis=None) -> reductions.Terms:
  """Per-anchor :class:`Terms` from term values and the mask of the terms that exist.

  With ``axis=None`` each anchor has (at most) one term; otherwise the terms
  along ``axis`` are summed.
  """
  values = jnp.where(mask, values, 0)
  active = mask & (values > 0)
  if axis is None:
    return reductions.Terms(values, mask.astype(values.dtype),
                            active.astype(values.dtype))
  return reductions.Terms(jnp.sum(values, axis), jnp.sum(mask, axis).astype(values.dtype),
                          jnp.sum(active, axis).astype(values.dtype))


def log_sum_exp(z: jax.Array, mask: jax.Array, axis: int = -1):
  """Stable masked logsumexp along ``axis``: (value or NEG_LOG when empty, any)."""
  found = jnp.any(mask, axis=axis)
  shift = jax.lax.stop_gradient(
      jnp.max(jnp.where(mask, z, NEG_LOG), axis=axis, keepdims=True))
  shift = jnp.where(jnp.expand_dims(found, axis), shift, 0)
  total = jnp.sum(jnp.where(mask, jnp.exp(jnp.where(mask, z, shift) - shift), 0),
                  axis=axis)
  value = jnp.squeeze(shift, axis) + jnp.log(jnp.where(found, total, 1))
  return jnp.where(found, value, NEG_LOG), found


def log1p_sum_exp(z: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
  """``log(1 + sum_masked exp(z))``, stable; 0 when the mask is empty."""
  value, _ = log_sum_exp(z, mask, axis)
  return jax.nn.softplus(value)
