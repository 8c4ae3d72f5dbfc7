"""The building blocks the miners share with the losses.

Masked arg-max/min with "no candidate" flags, streamed triplet cubes, the
sort-free and sorted semi-hard windows, and :func:`square_batch`, which checks a
miner's ``(distances, labels, where, axis_name)`` and builds its masks.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from metric_learning import _kernels
from metric_learning import _sharding
from metric_learning import _validation
from metric_learning import masks as masks_lib
from metric_learning.mining.selections import TripletSelection

# Elements of one [anchors_chunk, candidates, candidates] block in the anchor
# streaming of triplet-cube computations (batch-all, semi-hard, ...).
_CUBE_BUDGET = 1 << 22
# Columns per chunk of first_argmax (measured on 2 CPU cores: 256 of a 4096-wide row).
_ARGMAX_CHUNK = 256



def masked_argmax(values: jax.Array, mask: jax.Array):
  """Row-wise argmax over ``mask``: (index or -1, value or 0, any).

  Ties go to the lowest index (:func:`first_argmax`: plain max reductions that
  XLA vectorises, unlike a variadic (value, index) argmax).
  """
  index, _ = first_argmax(jnp.where(mask, values, -jnp.inf))
  found = jnp.any(mask, axis=-1)
  value = jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]
  return jnp.where(found, index, -1), jnp.where(found, value, 0), found


def masked_argmin(values: jax.Array, mask: jax.Array):
  """Row-wise argmin over ``mask``: (index or -1, value or 0, any)."""
  index, value, found = masked_argmax(-values, mask)
  return index, -value, found


def _lazy(value):
  """``value`` if it is a function returning the array, else a function returning it."""
  return value if callable(value) else lambda: value


def hard_indices(scores, masks, *, positive: str = "hard", slots=None):
  """Indices only (no values) of the batch-hard selection: the losses' fast path.

  ``scores`` need only order each row like its distances. Returns
  ``(positive_index, negative_index, valid)`` with -1 where invalid; ties go
  to the first column. ``slots``: the rows' positive columns, ``(index [rows,
  width], count [rows])`` from :func:`label_slots`; where every row's positives
  are listed, the positive is chosen among those columns (:func:`slot_argmax`)
  instead of by a pass over the row. Same result.

  ``scores`` and ``masks`` (a :class:`~metric_learning.masks.PairMasks`) may
  also be functions returning them: with ``slots`` the pass over the positive
  mask is then traced only in the branch that needs it, and the scores are
  never materialised for it (XLA keeps a conditional's operands in memory).
  """
  get_scores, get_masks = _lazy(scores), _lazy(masks)
  sign = 1 if positive == "hard" else -1
  s, m = get_scores(), get_masks()
  ni, has_neg = first_argmax(jnp.where(m.negative, -s, -jnp.inf))
  if slots is None:
    pi, has_pos = first_argmax(jnp.where(m.positive, sign * s, -jnp.inf))
  else:   # the branch rebuilds what it reads (see the docstring)
    pi, has_pos = slot_argmax(lambda: sign * get_scores(), lambda: get_masks().positive, *slots)
  valid = has_pos & has_neg
  return jnp.where(valid, pi, -1), jnp.where(valid, ni, -1), valid


def slot_argmax(keys, mask, index: jax.Array, count: jax.Array):
  """:func:`first_argmax` of ``where(mask, keys, -inf)``, reading the listed columns.

  ``index [rows, width]`` lists each row's masked columns in column order (-1
  past the last) and ``count [rows]`` how many there are (:func:`label_slots`).
  If every row's columns are listed, the maximum is taken over those ``width``
  keys (the first in column order wins ties, and an empty row gives (0, False),
  as in :func:`first_argmax`); if a row has more, the masked row is read whole
  instead, chosen at run time.
  ``keys`` and ``mask`` (bool, like ``keys``) may be functions returning them:
  the pass over the whole row is then traced only inside that branch.
  """
  get_keys, get_mask = _lazy(keys), _lazy(mask)
  width = index.shape[-1]

  def masked():
    return first_argmax(jnp.where(get_mask(), get_keys(), -jnp.inf))

  if width == 0:
    return masked()
  # The listed columns are gathered outside the conditional, so the keys are
  # read where they are made rather than stored as its operand.
  k = gather_rows(get_keys(), index)
  at = jnp.argmax(jnp.where(index >= 0, k, -jnp.inf), axis=-1)
  chosen = jnp.take_along_axis(index, at[..., None], axis=-1)[..., 0]
  listed = jnp.maximum(chosen, 0), count > 0          # an empty row: (0, False)
  return jax.lax.cond(jnp.max(count, initial=0) <= width, lambda: listed, masked)


def first_argmax(keys: jax.Array, chunk: int = _ARGMAX_CHUNK):
  """``(index of the first maximum along the last axis, any key > -inf)``.

  ``jnp.argmax`` is a two-operand reduction that XLA CPU does not vectorise, and
  "maximum, then first column equal to it" reads the row twice. Rows longer
  than ``2 * chunk`` are cut into chunks instead: one vectorised pass keeps each
  chunk's maximum, and only the first chunk holding the row's maximum is read
  again. Exact (the same comparisons on the same values). A row holding NaN
  gets some column in range (XLA CPU's vectorised max may skip a NaN); the
  losses turn such a batch into a NaN value through their NaN guard.
  """
  size = keys.shape[-1]
  lead = keys.shape[:-1]
  if size <= 2 * chunk:   # (``initial``: an empty row gives (0, False), not an error)
    best = jnp.max(keys, axis=-1, keepdims=True, initial=-jnp.inf)
    columns = jax.lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
    index = jnp.min(jnp.where(keys == best, columns, size - 1), axis=-1,
                    initial=max(size - 1, 0))
    return index, best[..., 0] > -jnp.inf
  pad = -size % chunk
  tiles = jnp.pad(keys, [(0, 0)] * len(lead) + [(0, pad)], constant_values=-jnp.inf)
  tiles = tiles.reshape(lead + (-1, chunk))
  tile_best = jnp.max(tiles, axis=-1)                        # [..., chunks]
  best = jnp.max(tile_best, axis=-1)
  tile = jnp.argmax(tile_best, axis=-1).astype(jnp.int32)    # first tile holding it
  within = jnp.take_along_axis(tiles, tile[..., None, None], axis=-2)[..., 0, :]
  columns = jax.lax.broadcasted_iota(jnp.int32, within.shape, within.ndim - 1)
  offset = jnp.min(jnp.where(within == best[..., None], columns, chunk), axis=-1)
  index = jnp.where(offset < chunk, tile * chunk + offset, size - 1)
  return index, best > -jnp.inf


def gather_rows(values: jax.Array, index: jax.Array) -> jax.Array:
  """``values[i, index[i, ...]]`` with -1 (nothing selected) read as column 0."""
  return jnp.take_along_axis(values, jnp.maximum(index, 0), axis=-1)


def select_triplets(distances: jax.Array, masks: masks_lib.PairMasks, *,
                    positive: str = "hard") -> TripletSelection:
  """Hardest negative and the hardest (or easiest) positive of every anchor."""
  pi, ni, valid = hard_indices(distances, masks, positive=positive)
  index = jnp.stack([pi, ni], axis=-1)
  chosen = jnp.where(valid[:, None], gather_rows(distances, index), 0)
  return TripletSelection(positive_index=pi, negative_index=ni,
                          positive_distance=chosen[:, 0],
                          negative_distance=chosen[:, 1], valid=valid)


def map_anchors(fn: Callable, *rows: jax.Array):
  """Applies ``fn`` to each anchor's rows, in chunks that bound the memory.

  ``fn`` gets one anchor's ``[candidates]`` rows and may build
  ``[candidates, candidates]`` temporaries; chunks hold at most ``_CUBE_BUDGET``
  such elements and are rematerialised in the backward pass, so memory stays
  O(chunk · candidates²) instead of O(anchors · candidates²).
  """
  anchors, candidates = rows[0].shape
  chunk = max(1, min(anchors, _CUBE_BUDGET // max(1, candidates * candidates)))
  if chunk >= anchors:
    return jax.vmap(fn)(*rows)
  rows = [_sharding.replicate(r) for r in rows]     # see _sharding: Explicit meshes
  return jax.lax.map(jax.checkpoint(lambda r: fn(*r)), rows, batch_size=chunk)


def triplet_cube(d: jax.Array, pos: jax.Array, neg: jax.Array):
  """One anchor's ``d_ap - d_an`` for all (positive j, negative k), and the mask."""
  return d[:, None] - d[None, :], pos[:, None] & neg[None, :]


def facenet_cube(d: jax.Array, pos: jax.Array, neg: jax.Array, margin):
  """FaceNet semi-hard triplets of one anchor: ``d_ap < d_an < d_ap + margin``."""
  gap, mask = triplet_cube(d, pos, neg)
  return gap, mask & (gap < 0) & (gap > -margin)


def tfa_negatives(d: jax.Array, pos: jax.Array, neg: jax.Array):
  """TFA semi-hard negative for each positive j of one anchor (index or -1)."""
  farther = neg[None, :] & (d[None, :] > d[:, None])            # [j, k]
  near_i, _, found = masked_argmin(jnp.broadcast_to(d, farther.shape), farther)
  far_i, _, has_neg = masked_argmax(d, neg)
  index = jnp.where(found, near_i, far_i)
  valid = pos & has_neg
  return jnp.where(valid, index, -1), valid


_INT_OF_WIDTH = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}


def _sortable_bits(x: jax.Array) -> jax.Array:
  """Integer keys that order like the float values (IEEE bits, negatives flipped)."""
  itype = _INT_OF_WIDTH[jnp.dtype(x.dtype).itemsize]
  bits = jax.lax.bitcast_convert_type(x, itype)
  magnitude = jnp.array(jnp.iinfo(itype).max, itype)
  return bits ^ ((bits >> (8 * jnp.dtype(itype).itemsize - 1)) & magnitude)


def _from_sortable_bits(bits: jax.Array, dtype) -> jax.Array:
  magnitude = jnp.array(jnp.iinfo(bits.dtype).max, bits.dtype)
  shift = 8 * jnp.dtype(bits.dtype).itemsize - 1
  return jax.lax.bitcast_convert_type(bits ^ ((bits >> shift) & magnitude), dtype)


def sort_rows(x: jax.Array) -> jax.Array:
  """Each row of float values in increasing order, not differentiable.

  Sorted as integer keys of the same width: XLA CPU sorts one int32 operand
  3–5× faster than a float32 one (whose comparator orders NaN and -0) or an
  (index, key) pair. Values are returned bit for bit.
  """
  x = jax.lax.stop_gradient(x)
  keys = jax.lax.sort(_sortable_bits(x), dimension=x.ndim - 1, is_stable=False)
  return _from_sortable_bits(keys, x.dtype)


def count_below(sorted_rows: jax.Array, t: jax.Array, side: str = "left") -> jax.Array:
  """Per row, #{entries < t} (``side="right"``: <= t) of each query in ``t``."""
  # The default binary search ("scan") loses an Explicit mesh's row sharding
  # inside vmap; "sort" keeps it, at several times the cost, so it is used only
  # for explicitly sharded rows.
  method = ("sort" if _sharding.is_explicitly_sharded(sorted_rows)
            or _sharding.is_explicitly_sharded(t) else "scan")
  return jax.vmap(lambda k, q: jnp.searchsorted(k, q, side=side, method=method))(
      sorted_rows, t)


class SortedNegatives:
  """Each row's negative distances in increasing order, for O(C log C) triplet sums.

  Built from ``[rows, C]`` distances ``d`` and the negative mask; not
  differentiable (see :func:`window_sums` for the gradient).

  * ``count_below(t)`` = #{k in N(i): D_ik < t} (``side="right"``: <= t);
  * ``sum_first(n)`` = the sum of the n smallest (D_ik - base), with base the
    row's smallest negative distance (a constant shift that keeps the prefix
    sums small, so that ``n (t - base) - sum_first(n)`` does not cancel).
  """

  def __init__(self, d, neg):
    self.keys = sort_rows(jnp.where(neg, d, jnp.inf))
    self.count = jnp.sum(neg, -1)
    self.base = self.keys[:, :1]
    real = jnp.arange(d.shape[-1])[None, :] < self.count[:, None]
    self.prefix = jnp.cumsum(jnp.where(real, self.keys - self.base, 0), axis=-1)

  def count_below(self, t, side="left"):
    return count_below(self.keys, jax.lax.stop_gradient(t), side)

  def sum_first(self, n):
    s = jnp.take_along_axis(self.prefix, jnp.maximum(n - 1, 0), -1)
    return jnp.where(n > 0, s, 0)


def sorted_window_sums(d, pos, neg, margin, lower: bool):
  r""":func:`window_sums` for any number of positives per row: the sorted path.

  From sorted negatives, :math:`n (m + D_{ij} - b) - \sum_k (D_{ik} - b)` over
  the n negatives of each window: O(C log C) per row instead of the O(C²) cube.
  The sum is piecewise linear in the distances, and its gradient is a count:
  :math:`\partial / \partial D_{ij}` is the size of j's window and
  :math:`\partial / \partial D_{ik} = -|\{j : k \text{ in } j\text{'s window}\}|`,
  found by sorting the windows' ends. No gradient flows through a sort or a
  gather.
  """
  fixed = jax.lax.stop_gradient(d)
  negs = SortedNegatives(fixed, neg)
  upper = fixed + margin                           # t_j, as the comparisons round it
  hi = negs.count_below(upper, "left")             # D_ik < t_j
  lo = negs.count_below(fixed, "right") if lower else jnp.zeros_like(hi)
  n = jnp.where(pos, jnp.maximum(hi - lo, 0), 0)
  inside = negs.sum_first(hi) - negs.sum_first(lo)
  values = jnp.where(n > 0, n * (margin + fixed - negs.base) - inside, 0)
  # Per negative k: the positives whose window holds it. #{j: t_j > D_ik}, less
  # (with ``lower``) #{j: D_ij >= D_ik}, read exactly as the windows compare:
  # where t_j rounds to D_ij itself (m absorbed) j's window is empty, and
  # D_ij > D_ik is tested as prev(D_ij) >= D_ik.
  size = d.shape[-1]
  ends = sort_rows(jnp.where(pos, upper, -jnp.inf))
  covers = size - count_below(ends, fixed, "right")
  if lower:
    starts = jnp.where(upper > fixed, fixed, jnp.nextafter(fixed, -jnp.inf))
    starts = sort_rows(jnp.where(pos, starts, -jnp.inf))
    covers = covers - (size - count_below(starts, fixed, "left"))
    # Only with m = 0 (empty windows) and coincident points can a flushed
    # subnormal prev(0) make this negative; the true count is then 0.
    covers = jnp.maximum(covers, 0)
  slope = (jnp.where(pos, n, 0) - jnp.where(neg, covers, 0)).astype(d.dtype)
  sums = jnp.sum(values, -1) + jnp.sum(slope * (d - fixed), -1)
  active = jnp.sum(n, -1)
  triplets = jnp.sum(pos, -1) * negs.count if not lower else active
  return sums, triplets, active


# ----------------------------------------------------------------------------- #
# Few positives per anchor (P×K batches: K - 1): the (positive, negative) pairs
# of a row as masked passes over [rows, bound, C], no sort. Exact whenever every
# row has at most ``bound`` positives; :func:`by_positive_count` picks the
# smallest bound that holds at run time and falls back to the sorted path above.
# ----------------------------------------------------------------------------- #

# Static bounds of the sort-free path (each is compiled as one branch). On 2 CPU
# cores the loss + gradient of batch-all at B = 4096, 3 positives per anchor,
# takes 0.18 s this way and 2.6 s sorted (docs/benchmarks.md).
POSITIVE_BOUNDS = (4, 32)
# Positive slots per masked pass; the passes run one after another (a scan), so
# that XLA CPU cannot fuse them into one wider [rows, slots, C] window, which it
# spills (10x slower per slot from 8 slots on). Four slots per pass and one
# slot per pass measured within noise of each other in the loss benchmark at
# B = 4096; four were faster at B = 16384.
_SLOT_GROUP = 4
_TFA_SLOT_GROUP = 4


def positive_slots(positive: jax.Array, bound: int):
  """The first ``bound`` positive columns of each row, in column order.

  Returns ``(index [rows, bound], valid [rows, bound])``, index -1 past a
  row's last positive. ``bound`` passes over the row, no sort or cumsum.
  """
  size = positive.shape[-1]
  columns = jnp.arange(size, dtype=jnp.int32)

  def next_slot(past, _):
    found = jnp.min(jnp.where(positive & (columns > past[..., None]), columns, size), axis=-1)
    return found, found

  # Initial values made from the inputs keep their sharding / varying manual axes.
  start = jnp.full_like(positive[..., 0], -1, dtype=jnp.int32)
  _, index = jax.lax.scan(next_slot, start, None, length=bound)
  index = jnp.moveaxis(index, 0, -1)
  valid = index < size
  return jnp.where(valid, index, -1), valid


def _label_order(labels: jax.Array, where: jax.Array) -> jax.Array:
  """The columns of the candidates sorted by (real first, label, column).

  Where the real labels span fewer than ``2**32 // size - 1`` values (any
  class count a batch holds), (label rank, column) packs into one uint32 and a
  one-operand sort gives that order, several times faster on CPU than a stable
  sort of three operands, which remains for the other labels (chosen at run
  time).
  """
  size = labels.shape[0]
  columns = jnp.arange(size, dtype=jnp.int32)

  def general():
    return jax.lax.sort((~where, labels, columns), num_keys=2, is_stable=True)[2]

  if size < 2 or labels.dtype != jnp.int32:
    return general()
  flip = jnp.uint32(1 << 31)            # int32 -> uint32, order kept
  lab = jax.lax.bitcast_convert_type(labels, jnp.uint32) ^ flip
  lowest = jnp.min(jnp.where(where, lab, jnp.uint32(2**32 - 1)))
  span = jnp.max(jnp.where(where, lab - lowest, 0))    # uint32: no overflow
  fits = jnp.any(where) & (span < jnp.uint32(2**32 // size - 2))

  def packed():
    rank = jnp.where(where, lab - lowest, span + 1)     # padding after every label
    return (jnp.sort(rank * jnp.uint32(size) + columns.astype(jnp.uint32))
            % jnp.uint32(size)).astype(jnp.int32)

  return jax.lax.cond(fits, packed, general)


def label_slots(labels, where, candidate_labels, candidate_where, self_index, bound: int):
  """:func:`positive_slots` of the label masks, from one sort of the candidate labels.

  Anchor i's positives are the real candidates with its label other than its
  own column ``self_index[i]`` (:func:`metric_learning.masks.pair_masks`); with
  the candidates sorted by (real first, label, column) they are one run, found
  by binary search: O((A + C) log C) instead of ``bound`` passes over [A, C].
  Returns ``(index [A, bound], count [A])``: the first ``bound`` positive
  columns in column order (-1 past the last) and how many positives there are.
  """
  size = candidate_labels.shape[0]
  order = _label_order(candidate_labels, candidate_where)
  real = candidate_where[order]
  top = jnp.iinfo(candidate_labels.dtype).max
  key = jnp.where(real, candidate_labels[order], top)      # sorted: real labels, then top
  num_real = jnp.sum(candidate_where, dtype=jnp.int32)
  lo = jnp.searchsorted(key, labels, side="left").astype(jnp.int32)
  hi = jnp.minimum(jnp.searchsorted(key, labels, side="right"), num_real).astype(jnp.int32)
  own = jnp.clip(self_index, 0, max(size - 1, 0))
  self_in = (self_index >= 0) & candidate_where[own] & (candidate_labels[own] == labels)
  count = jnp.where(where, jnp.maximum(hi - lo, 0) - self_in, 0)
  # The first bound + 1 entries of the run hold the first bound positives and,
  # at most once, the anchor itself: skip it.
  step = jnp.arange(bound + 1, dtype=jnp.int32)
  at = lo[:, None] + step
  entry = order[jnp.clip(at, 0, max(size - 1, 0))]
  inside = (at < hi[:, None]) & where[:, None]
  is_self = inside & (entry == self_index[:, None])
  self_at = jnp.where(jnp.any(is_self, -1), jnp.argmax(is_self, -1), bound + 1)
  take = step[:bound] + (step[:bound] >= self_at[:, None])
  index = jnp.take_along_axis(jnp.where(inside & ~is_self, entry, -1), take, axis=-1)
  return index, count


def anchor_slots(labels, where, candidate_labels, candidate_where, self_index):
  """:func:`label_slots` as wide as :func:`window_sums` / :func:`tfa_selection` read.

  ``None`` where the sort-free path is off (no ``POSITIVE_BOUNDS``), or where
  the anchors are sharded over an Explicit mesh (their positive columns are
  then found from the mask, row by row).
  """
  size = candidate_labels.shape[0]
  if not POSITIVE_BOUNDS or size == 0 or _sharding.is_explicitly_sharded(labels):
    return None
  group = max(_SLOT_GROUP, _TFA_SLOT_GROUP)
  width = -(-min(POSITIVE_BOUNDS[-1], size) // group) * group
  return label_slots(labels, where, candidate_labels, candidate_where, self_index, width)


def by_positive_count(positive: jax.Array | None, bounded: Callable, general: Callable,
                      count: jax.Array | None = None, width: int | None = None,
                      bounds: tuple[int, ...] | None = None):
  """``bounded(bound)`` with the smallest bound every row fits, else ``general()``.

  Chosen at run time (``lax.switch`` on the largest positive count of these
  rows; ``count``: the rows' counts if known, else summed from ``positive``),
  so the result is exact for any labels. Rows no wider than the largest bound
  always take that path (bound = width), with no switch. ``positive`` may be
  None where ``count`` and ``width`` (the candidates per row) are given.
  ``bounds``: the bounds to choose from (default :data:`POSITIVE_BOUNDS`).
  """
  width = positive.shape[-1] if width is None else width
  if width == 0:
    return general()
  bounds = list(POSITIVE_BOUNDS if bounds is None else bounds)
  if not bounds:
    return general()
  if width <= bounds[-1]:                   # a row cannot hold more: one branch
    return bounded(width)
  branches = [functools.partial(bounded, b) for b in bounds] + [general]
  if count is None:
    count = jnp.sum(positive, axis=-1, dtype=jnp.int32)
  most = jnp.max(count, initial=0)
  which = jnp.sum(most > jnp.array(bounds, jnp.int32))
  return jax.lax.switch(which, branches)


def _slot_passes(fixed, positive, bound, init, step, group, slots=None):
  """Scans ``step(carry, (index, valid, distance))`` over groups of positive slots.

  Each group is ``[rows, group]``; returns the final carry and the per-slot
  outputs as ``[rows, bound]`` (with the slots' index and validity). ``slots``:
  the rows' positive columns if known (:func:`label_slots`, at least ``bound``
  rounded up to ``group`` of them), else found from ``positive``.
  """
  width = -(-bound // group) * group
  if slots is None:
    index, valid = positive_slots(positive, width)
  else:
    index = slots[..., :width]
    valid = index >= 0
  dp = gather_rows(fixed, index)

  def groups(x):                              # [r, b] -> [b / G, r, G]
    return jnp.moveaxis(x.reshape(x.shape[0], -1, group), 1, 0)

  carry, out = jax.lax.scan(step, init, (groups(index), groups(valid), groups(dp)))
  out = jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1).reshape(index.shape), out)
  return carry, out, index, valid, dp


def _scatter_slots(like, index, valid, values, fill):
  """``fill`` shaped as ``like`` [rows, C], with ``values[i, s]`` at column ``index[i, s]``."""
  rows = jnp.arange(like.shape[0])[:, None]
  column = jnp.where(valid, index, like.shape[-1])            # out of range: dropped
  out = jnp.full_like(like, fill, dtype=values.dtype)
  if _sharding.is_explicitly_sharded(like):       # rows sharded over an Explicit mesh
    return out.at[rows, column].set(values, mode="drop",
                                    out_sharding=jax.typeof(like).sharding.spec)
  return out.at[rows, column].set(values, mode="drop")


def _slot_columns(like, index, valid, values):
  """``[rows, C]``: ``values[i, s]`` at column ``index[i, s]``, 0 elsewhere.

  :func:`_scatter_slots` with fill 0, as a sum of one compare per slot: an
  elementwise expression XLA fuses into its consumer (a scatter writes a
  whole buffer first).
  """
  columns = jax.lax.broadcasted_iota(jnp.int32, like.shape, like.ndim - 1)
  out = jnp.zeros(like.shape, values.dtype)
  for s in range(index.shape[-1]):
    hit = valid[..., s, None] & (columns == index[..., s, None])
    out = out + jnp.where(hit, values[..., s, None], 0)
  return out


def bounded_window_sums(bound: int, d, pos, neg, margin, lower: bool, slots=None):
  r""":func:`window_sums` for rows with at most ``bound`` positives: no sort.

  Masked passes over ``[rows, 4, C]`` give each positive slot's window size
  :math:`n_j` and each negative's cover (how many windows hold it), from the
  same comparisons as :func:`window_sums`; the value is
  :math:`\sum_j n_j (m + D_{ij} - b) - \sum_k \mathrm{cover}_k (D_{ik} - b)`
  (b the row's smallest positive distance, a shift that keeps both sums small)
  and the gradient the same counts.
  """
  fixed = jax.lax.stop_gradient(d)
  dn = fixed[..., None, :]                                     # [r, 1, C]

  def step(covers, slots):
    _, valid, dp = slots                                       # [r, G]
    upper = dp + margin                                        # t_j, rounded as compared
    window = valid[..., None] & neg[..., None, :] & (dn < upper[..., None])
    if lower:
      window = window & (dn > dp[..., None])
    return (covers + jnp.sum(window, axis=-2, dtype=jnp.int32),
            jnp.sum(window, axis=-1, dtype=jnp.int32))

  covers, n, index, valid, dp = _slot_passes(
      fixed, pos, bound, jnp.zeros_like(fixed, dtype=jnp.int32), step, _SLOT_GROUP, slots)
  base = jnp.min(jnp.where(valid, dp, jnp.inf), axis=-1, keepdims=True)
  base = jnp.where(jnp.isfinite(base), base, 0)
  values = (jnp.sum(jnp.where(n > 0, n * (dp + margin - base), 0), -1)
            - jnp.sum(jnp.where(covers > 0, covers * (fixed - base), 0), -1))
  slope = (_slot_columns(fixed, index, valid, n) - covers).astype(d.dtype)
  sums = values.astype(d.dtype) + jnp.sum(slope * (d - fixed), -1)
  active = jnp.sum(n, -1)
  triplets = jnp.sum(pos, -1) * jnp.sum(neg, -1) if not lower else active
  return sums, triplets, active


def symmetric_window_sums(bound: int, x, labels, where, index, margin, metric: str,
                          lower: bool, block: int):
  r""":func:`window_sums` of a batch against itself, summed, gradient in the same pass.

  The square case (candidates = the anchors ``x`` [B, D]: no reference rows,
  one device) with at most ``bound`` positives per anchor, ``index`` [B, >=
  bound] their columns (:func:`label_slots`, -1 past the last). Returns
  ``(sums, triplets, active)`` summed over the anchors (scalars, ``x``'s dtype),
  differentiable in ``x`` and ``margin``.

  The gradient of :math:`\sum_{ik} G_{ik} D(x_i, x_k)` is, for row l,
  :math:`\sum_k (G_{lk} + G_{kl})\, \partial D(x_l, x_k) / \partial x_l`. A
  negative's entry :math:`G_{ik}` is minus its cover (how many of anchor i's
  windows hold it), which needs only anchor i's thresholds
  :math:`D_{ij} + m` (and, ``lower``, :math:`D_{ij}`): B × bound numbers found
  before the pass from the positive pairs' distances. So each block of rows,
  compared with its own thresholds and, transposed, with every column's, gives
  both halves from one distance block, and its rows' gradient is one matmul:
  two matmuls per block where differentiating each block's rows and columns
  takes three, and no [B, D] accumulation across blocks. A positive's entry
  (its window size) reaches the gradient through its own distance, computed
  per pair (O(B · bound · D)). Distances are symmetric in value; the
  transposed windows compare the same pair's distance as computed in the other
  row's block, which can differ in the last bit where a distance ties a
  threshold (a subgradient of the hinge either way). Differentiated, the only
  residual is the [B, D] gradient (a ``custom_jvp``), so a ``lax.switch``
  between bounds carries nothing larger.
  """
  width = -(-bound // _SLOT_GROUP) * _SLOT_GROUP
  return _symmetric_pass(x, jnp.asarray(margin, x.dtype), labels, where, index[:, :width],
                         metric, lower, block)


def _positive_distances(x, index, metric):
  """``[B, S]``: each anchor's distance to its positive slots (any value where -1)."""
  partner = x[jnp.clip(index, 0)]                                     # [B, S, D]
  return jax.vmap(lambda a, c: _kernels.pairwise(a[None], c, metric)[0])(x, partner)


def _symmetric_sums(x, margin, labels, where, index, metric, lower, block, gradient):
  """``(sums, triplets, active)`` and, with ``gradient``, d sums / d x."""
  valid = index >= 0
  if gradient:
    dp, positive_pullback = jax.vjp(lambda e: _positive_distances(e, index, metric), x)
  else:
    dp = _positive_distances(x, index, metric)
  base = jnp.min(jnp.where(valid, dp, jnp.inf), axis=-1)
  base = jnp.where(jnp.isfinite(base), base, 0)
  out = _symmetric_scan(x, labels, where, jnp.where(valid, dp + margin, -jnp.inf),
                        jnp.where(valid, dp, jnp.inf), base, metric, lower, block, gradient)
  sums, n = out[:2]
  active = jnp.sum(n.astype(x.dtype))
  if lower:
    triplets = active
  else:
    positives = jnp.sum(valid, -1).astype(x.dtype)
    negatives = jnp.sum(where) - positives - 1
    triplets = jnp.sum(jnp.where(where, positives * negatives, 0))
  if not gradient:
    return sums, triplets, active
  # A positive's window size is its distance's slope (and the margin's).
  (positive_grad,) = positive_pullback(jnp.where(valid, n, 0).astype(x.dtype))
  return (sums, triplets, active), out[2] + positive_grad


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7))
def _symmetric_pass(x, margin, labels, where, index, metric, lower, block):
  return _symmetric_sums(x, margin, labels, where, index, metric, lower, block, False)


@_symmetric_pass.defjvp
def _symmetric_pass_jvp(metric, lower, block, primals, tangents):
  (sums, triplets, active), grad = _symmetric_sums(*primals, metric, lower, block, True)
  dot = jnp.vdot(grad, tangents[0]) + active * tangents[1]
  return (sums, triplets, active), (dot.astype(sums.dtype), jnp.zeros_like(triplets),
                                    jnp.zeros_like(active))


def _symmetric_scan(x, labels, where, upper, lower_bound, base, metric, lower, block,
                    gradient: bool):
  size = x.shape[0]
  width = upper.shape[1]
  group = min(_SLOT_GROUP, width)
  blocks = -(-size // block)
  pad = blocks * block - size

  def cut(v):            # [B, ...] -> [blocks, block, ...]; padding rows are not real
    v = jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
    return v.reshape((blocks, block) + v.shape[1:])

  rows = tuple(map(cut, (x, labels, where, upper, lower_bound, base)))
  no_self = jnp.full((block,), -1, jnp.int32)     # the block's own columns are not negatives
  # Every column's thresholds as [groups, G, B], compared with the transposed block.
  column_upper = upper.T.reshape(-1, group, size)
  column_lower = lower_bound.T.reshape(-1, group, size)

  def windows(d, neg, up, low, carry):
    """Adds the windows of G thresholds (``up``/``low`` broadcast against ``d``)."""
    sizes = []
    for s in range(up.shape[0]):
      w = neg & (d < up[s])
      if lower:
        w = w & (d > low[s])
      carry = carry + w.astype(jnp.int32)
      sizes.append(jnp.sum(w, axis=-1, dtype=jnp.int32))
    return carry, sizes

  def step(_, r):
    xb, lb, wb, ub, lob, bb = r
    if gradient:
      d, pullback = jax.vjp(lambda a: _kernels.pairwise(a, x, metric), xb)
    else:
      d = _kernels.pairwise(xb, x, metric)
    neg = masks_lib.pair_masks(lb, wb, labels, where, no_self).negative
    own_up = jnp.moveaxis(ub.reshape(block, -1, group), 0, -1)[..., None]   # [g, G, b, 1]
    own_low = jnp.moveaxis(lob.reshape(block, -1, group), 0, -1)[..., None]
    zeros = jnp.zeros(d.shape, jnp.int32)

    def slot_group(carry, g):
      covers, columns = carry
      up, low, col_up, col_low = g
      covers, sizes = windows(d, neg, up, low, covers)
      if gradient:
        columns, _ = windows(d, neg, col_up[:, None, :], col_low[:, None, :], columns)
      return (covers, columns), jnp.stack(sizes, -1)

    groups = (own_up, own_low, column_upper, column_lower)
    if own_up.shape[0] == 1:                 # one group: no loop
      (covers, columns), n = slot_group((zeros, zeros), jax.tree.map(lambda v: v[0], groups))
      n = n[None]
    else:
      (covers, columns), n = jax.lax.scan(slot_group, (zeros, zeros), groups)
    n = jnp.moveaxis(n, 0, 1).reshape(block, -1)                            # [b, S]
    shift = bb[:, None]
    values = (jnp.sum(jnp.where(n > 0, n * (ub - shift), 0), -1)
              - jnp.sum(jnp.where(covers > 0, covers * (d - shift), 0), -1))
    if not gradient:
      return None, (values, n)
    (grad,) = pullback(-(covers + columns).astype(d.dtype))
    return None, (values, n, grad)

  _, out = jax.lax.scan(step, None, rows)
  out = [o.reshape((blocks * block,) + o.shape[2:])[:size] for o in out]
  return (jnp.sum(out[0]),) + tuple(out[1:])


def bounded_softplus_sums(bound: int, d, pos, neg, margin, facenet: bool, slots=None):
  r"""Per anchor row, :math:`\sum_j \sum_k \mathrm{softplus}(D_{ij} - D_{ik})`, no cube.

  Over every (positive, negative) pair (soft batch-all), or with ``facenet``
  over the FaceNet semi-hard ones, :math:`-m < D_{ij} - D_{ik} < 0`, compared
  as :func:`facenet_cube` compares them. For rows with at most ``bound``
  positives: masked passes over ``[rows, 4, C]``, O(C) per positive instead of
  the O(C²) cube per anchor. Returns ``(sums, triplets, active)`` as
  :func:`window_sums` does; the gradient is the sigmoid's, summed per
  positive and per negative in the same passes.
  """
  fixed = jax.lax.stop_gradient(d)
  dn = fixed[..., None, :]

  def step(carry, slots_g):
    covers, values, triplets, active = carry
    _, valid, dp = slots_g
    gap = dp[..., None] - dn                                   # [r, G, C]
    mask = valid[..., None] & neg[..., None, :]
    if facenet:
      mask = mask & (gap < 0) & (gap > -margin)
    term = jnp.where(mask, jax.nn.softplus(gap), 0)
    slope = jnp.where(mask, jax.nn.sigmoid(gap), 0)
    carry = (covers + jnp.sum(slope, axis=-2),
             values + jnp.sum(term, axis=(-2, -1)),
             triplets + jnp.sum(mask, axis=(-2, -1), dtype=jnp.int32),
             active + jnp.sum(mask & (term > 0), axis=(-2, -1), dtype=jnp.int32))
    return carry, jnp.sum(slope, axis=-1)

  count = jnp.zeros_like(fixed[..., 0], dtype=jnp.int32)
  init = (jnp.zeros_like(fixed), jnp.zeros_like(fixed[..., 0]), count, count)
  (covers, values, triplets, active), own, index, valid, _ = _slot_passes(
      fixed, pos, bound, init, step, _SLOT_GROUP, slots)
  slope = _slot_columns(fixed, index, valid, own) - covers
  sums = values + jnp.sum(slope * (d - fixed), -1)
  return sums, triplets, active


def bounded_tfa_pairs(bound: int, distances, positive, negative, slots=None):
  """The TFA semi-hard (positive, negative) column pairs of rows with few positives.

  Returns ``(positive_index, negative_index, valid)``, each ``[rows, bound]``
  (rounded up to a multiple of 4): one entry per positive slot, the negative
  chosen as :func:`sorted_tfa_selection` chooses it (lowest column on ties).
  A loss reads two distances per slot instead of gathering a whole row.
  """
  fixed = jax.lax.stop_gradient(distances)
  size = fixed.shape[-1]
  dn = fixed[..., None, :]

  def step(carry, slots):
    _, _, dp = slots
    farther = negative[..., None, :] & (dn > dp[..., None])   # [r, G, C]
    # The nearest farther negative, lowest column on ties: the first maximum of -D.
    near, found = first_argmax(jnp.where(farther, -dn, -jnp.inf))
    return carry, jnp.where(found, near, size)

  _, near_i, index, valid, _ = _slot_passes(fixed, positive, bound, (), step,
                                            _TFA_SLOT_GROUP, slots)
  far_i, any_negative = first_argmax(jnp.where(negative, fixed, -jnp.inf))
  chosen = jnp.where(near_i < size, near_i, far_i[..., None])  # [r, b]
  valid = valid & any_negative[..., None]
  return jnp.where(valid, index, -1), jnp.where(valid, chosen, -1), valid


def bounded_tfa_selection(bound: int, distances, positive, negative, slots=None):
  """:func:`tfa_selection` for rows with at most ``bound`` positives: no sort.

  :func:`bounded_tfa_pairs` scattered back to each positive's column.
  """
  index, chosen, valid = bounded_tfa_pairs(bound, distances, positive, negative, slots)
  full = _scatter_slots(distances, index, valid, chosen, -1)
  has_neg = jnp.any(negative, axis=-1, keepdims=True)
  valid_full = positive & has_neg
  return jnp.where(valid_full, full, -1), valid_full


def sorted_tfa_selection(distances, positive, negative):
  """:func:`tfa_negatives` of every anchor row at once: O(C log C) per row.

  For each positive j, the first negative farther than D_ij (the lowest column
  among equal distances), or else the farthest negative (lowest column too).
  """
  keys = jnp.where(negative, jax.lax.stop_gradient(distances), jnp.inf)
  order = jnp.argsort(keys, axis=-1)                 # stable: ties keep column order
  keys = jnp.take_along_axis(keys, order, -1)
  count = jnp.sum(negative, -1)[:, None]
  after = count_below(keys, distances, "right")      # first negative farther than D_ij
  last = jnp.maximum(count - 1, 0)
  farthest = count_below(keys, jnp.take_along_axis(keys, last, -1))
  position = jnp.clip(jnp.where(after < count, after, farthest), 0, keys.shape[-1] - 1)
  index = jnp.take_along_axis(order, position, -1)
  valid = positive & (count > 0)
  return jnp.where(valid, index, -1), valid


def window_sums(d, pos, neg, margin, lower: bool, slots=None):
  r"""Per anchor row, the hinge sum over (j, k) in its triplet windows, with counts.

  :math:`\sum_{j \in P(i)} \sum_k (m + D_{ij} - D_{ik})` over the negatives k
  with [``lower``: :math:`D_{ij} <`] :math:`D_{ik} < D_{ij} + m` (batch-all
  without ``lower``, FaceNet semi-hard with it). Returns ``(sums, triplets,
  active)``, each ``[rows]``: the sums, how many triplets the anchor has
  (batch-all: :math:`|P(i)| |N(i)|`; semi-hard: those in the windows) and how
  many of them have a non-zero term. Differentiable in ``d``; the gradient is
  a count per distance.

  Exact for any labels: rows with at most ``POSITIVE_BOUNDS[-1]`` positives
  take :func:`bounded_window_sums` (O(C) per positive, no sort), others
  :func:`sorted_window_sums` (O(C log C) per row), chosen at run time.
  ``slots``: the rows' ``(index, count)`` from :func:`label_slots` (with at
  least ``POSITIVE_BOUNDS[-1]`` columns), so that the positive columns are not
  searched for in ``pos``.
  """
  index, count = slots if slots is not None else (None, None)
  return by_positive_count(
      pos, lambda bound: bounded_window_sums(bound, d, pos, neg, margin, lower, index),
      lambda: sorted_window_sums(d, pos, neg, margin, lower), count)


def tfa_selection(distances, positive, negative, slots=None):
  """The TensorFlow Addons semi-hard negative of every (anchor, positive) pair.

  For each positive j, the first negative farther than D_ij (the lowest column
  among equal distances), or else the farthest negative (lowest column too).
  Returns ``(index [rows, C], valid)``, index -1 where invalid. Rows with few
  positives take :func:`bounded_tfa_selection`, others
  :func:`sorted_tfa_selection`, and ``slots`` is used, as in :func:`window_sums`.
  """
  index, count = slots if slots is not None else (None, None)
  return by_positive_count(
      positive, lambda bound: bounded_tfa_selection(bound, distances, positive, negative,
                                                    index),
      lambda: sorted_tfa_selection(distances, positive, negative), count)


def semi_hard_counts(distances, positive, negative, margin):
  """Per anchor: #{(j, k): j in P(i), k in N(i), D_ij < D_ik < D_ij + m}.

  The window sizes of :func:`window_sums` (its sums are never computed), no
  [C, C] cube.
  """
  return window_sums(jax.lax.stop_gradient(distances), positive, negative, margin,
                     lower=True)[2]


# --------------------------------------------------------------------------- #
# The miners' inputs (square case: candidates = the batch). With ``axis_name``
# (inside pmap / shard_map) ``distances`` is [local anchors, global batch]:
# this device's rows against every device's rows, gathered in device order;
# indices then refer to the global batch.
# --------------------------------------------------------------------------- #


def _across_devices(distances, labels, where, axis_name):
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array [batch]; got shape {labels.shape}.")
  labels = _validation.int_vector(labels, labels.shape[0], "labels", "labels")
  where = _validation.bool_vector(where, labels.shape[0], "where", "labels")
  gather = lambda v: jax.lax.all_gather(v, axis_name, tiled=True)
  all_labels, all_where = gather(labels), gather(where)
  distances = jnp.asarray(distances)
  if distances.shape != (labels.shape[0], all_labels.shape[0]):
    raise ValueError(f"with axis_name, distances must be [local, global] = "
                     f"[{labels.shape[0]}, {all_labels.shape[0]}]; got {distances.shape}.")
  n = labels.shape[0]
  self_index = jax.lax.axis_index(axis_name) * n + jnp.arange(n)
  return distances, masks_lib.pair_masks(labels, where, all_labels, all_where, self_index)


def square_batch(distances, labels, where, axis_name=None):
  """Validated ``(distances, PairMasks)`` of a miner's inputs (see the note above)."""
  if axis_name is not None:
    return _across_devices(distances, labels, where, axis_name)
  distances = _validation.square_matrix(distances, "distances")
  masks = masks_lib.square_masks(labels, where)
  if masks.positive.shape != distances.shape:
    raise ValueError(f"labels must have shape [{distances.shape[0]}] to match "
                     f"distances; got shape {jnp.shape(labels)}.")
  return distances, masks
