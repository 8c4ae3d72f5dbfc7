"""Train state and the pure train / embed steps."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a step changes; a pytree, so it jits, checkpoints and shards."""
  params: Any
  model_state: Any          # non-parameter variables (BatchNorm statistics, ...)
  opt_state: Any
  step: jax.Array
  rng: jax.Array            # raw uint32 key of the run's seed
  skipped: jax.Array        # updates skipped because of a non-finite loss or gradient
  first_nonfinite_step: jax.Array   # the first such step, -1 if none


def init_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int):
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  state = TrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                     step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed),
                     skipped=jnp.zeros((), jnp.int32),
                     first_nonfinite_step=jnp.full((), -1, jnp.int32))
  return graphdef, state


def _embed_in_train_mode(graphdef, params, model_state, inputs):
  """``(embeddings, new model_state)`` of one forward pass in training mode."""
  # Rebuild the variables inside this trace: BatchNorm statistics are mutated
  # during the call, and NNX forbids mutating variables created in an outer trace.
  model_state = jax.tree.map(lambda v: v, model_state)
  model = nnx.merge(graphdef, params, model_state)
  model.train()
  emb = model(inputs)
  _, _, new_model_state = nnx.split(model, nnx.Param, ...)
  return emb, new_model_state


def _loss_of(graphdef, loss_fn, emb, params, model_state, batch):
  """The loss of ``emb``, with the model's loss inputs (proxies) taken from ``params``."""
  model = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, model_state))
  extra = model.loss_inputs() if hasattr(model, "loss_inputs") else {}
  return loss_fn(emb, batch["labels"], batch["where"], **extra)


def cached_value_and_grad(graphdef, loss_fn: Callable, embed_chunk: int):
  r"""``value_and_grad`` of the loss of a batch embedded ``embed_chunk`` rows at a time.

  Gradient caching (Gao, Zhang, Han, Callan. Scaling Deep Contrastive Learning
  Batch Size under Memory Limited Setup. RepL4NLP 2021): with
  :math:`e = f_	heta(x)` the embeddings of the whole batch and
  :math:`L(e)` any loss of them (mining over the whole batch),
  :math:`
abla_	heta L = \sum_c J_{f_	heta}(x_c)^	op \, \partial L / \partial e_c`
  over the chunks :math:`x_c`. So: (1) embed chunk by chunk keeping no
  activations; (2) take :math:`L` and :math:`\partial L / \partial e` over the
  whole batch; (3) for each chunk, run its forward pass again and pull
  :math:`\partial L / \partial e_c` back through it (one vector-Jacobian product),
  summing the parameter gradients. Activation memory is one chunk's; the price
  is a second forward pass.

  Batch statistics: a model with BatchNorm normalises each chunk with that
  chunk's own mean and variance (ghost batch normalisation, as in every
  gradient-cache implementation: whole-batch statistics would need every
  activation at once), and its running averages are updated once per chunk, in
  order. The replay of a chunk starts from the model state its first pass
  started from, so dropout masks and statistics are the same in both passes.
  Without BatchNorm (or dropout) the result equals the plain step's.

  Speed: the chunks run in ``lax.scan`` loops, which is what makes the memory
  one chunk's. On XLA's CPU backend a convolution's gradient inside a loop is
  10-300x slower than outside one (one 3x3 conv's weight gradient on
  [64, 32, 32, 64]: 0.07 s a call unrolled, 20 s in ``lax.scan``), so a
  convolutional encoder's cached step is far slower on CPU than its plain step;
  dense encoders are not affected. (Python-unrolled chunks avoid the slowdown
  but XLA then keeps every chunk's buffers alive: no memory is saved.)

  Args:
    graphdef: the model's graph (``nnx.split``).
    loss_fn: ``loss_fn(embeddings, labels, where, **loss_inputs) -> scalar``.
    embed_chunk: rows per chunk; it must divide the (per-device) batch. Chunk
      ``c`` of ``n`` holds rows ``c, c + n, c + 2n, ...`` (so that under a
      sharded mesh each chunk spans the devices).

  Returns:
    ``value_and_grad(params, model_state, batch) -> ((loss, (model_state, embeddings)),
    grads)``, the signature of ``jax.value_and_grad(..., has_aux=True)`` of the
    plain loss.
  """

  def value_and_grad(params, model_state, batch):
    x = batch["inputs"]
    rows = x.shape[0]
    if rows % embed_chunk:
      raise ValueError(f"embed_chunk={embed_chunk} must divide the batch of {rows} rows "
                       "(per device).")
    count = rows // embed_chunk
    # Chunk c holds rows c, c + count, c + 2 count, ...: under a sharded mesh
    # every chunk spans the devices (a contiguous chunk would sit on one).
    split = lambda a: a.reshape((embed_chunk, count) + a.shape[1:]).swapaxes(0, 1)
    join = lambda a: a.swapaxes(0, 1).reshape((rows,) + a.shape[2:])
    chunks = split(x)
    frozen = jax.lax.stop_gradient(params)

    def forward(state, xc):
      emb, new_state = _embed_in_train_mode(graphdef, frozen, state, xc)
      return new_state, (emb, state)
    final_state, (embs, starts) = jax.lax.scan(forward, model_state, chunks)
    emb = join(embs)
    loss, (emb_grad, grads) = jax.value_and_grad(
        lambda e, p: _loss_of(graphdef, loss_fn, e, p, model_state, batch),
        argnums=(0, 1))(emb, params)

    def backward(total, chunk):
      xc, start, cotangent = chunk
      _, pull = jax.vjp(lambda p: _embed_in_train_mode(graphdef, p, start, xc)[0], params)
      return jax.tree.map(jnp.add, total, pull(cotangent)[0]), None
    grads, _ = jax.lax.scan(backward, grads, (chunks, starts, split(emb_grad)))
    return (loss, (final_state, emb)), grads

  return value_and_grad


def make_train_step(graphdef, tx, loss_fn: Callable, *, axis_name: str | None = None,
                    statistics: Callable | None = None,
                    statistics_at: Callable[[jax.Array], jax.Array] | None = None,
                    embed_chunk: int | None = None):
  """``train_step(state, batch) -> (state, metrics)``, pure.

  ``loss_fn(embeddings, labels, where) -> scalar`` is any loss (e.g.
  ``metric_learning.losses.registry.create(name, **settings)`` wrapped to pass
  ``where``); under ``pmap`` give the same ``axis_name`` to the loss and here.
  A model with a ``loss_inputs()`` method (e.g. ``models.EncoderWithProxies``)
  has its arrays passed as keywords, ``loss_fn(embeddings, labels, where,
  proxies=...)``, and trained with the encoder.

  ``batch`` holds ``inputs``, ``labels`` and ``where``. A non-finite loss or
  gradient skips the update (parameters unchanged) and counts it in
  ``state.skipped``; nothing non-finite ever reaches the parameters.

  ``metrics`` holds ``loss``, ``grad_norm`` and ``finite``, plus, with
  ``statistics``, the scalars ``statistics(embeddings, labels, where)``
  returns (e.g. ``functools.partial(metric_learning.triplet_statistics,
  margin=0.2)``), computed inside the step on the embeddings the loss saw
  (before the update, no gradient) over the **global** batch: under
  ``axis_name`` the embeddings, labels and ``where`` of every device are
  gathered first. ``statistics_at(new_step) -> bool`` chooses the steps that
  compute them (a ``lax.cond``: the other steps skip the work and report 0);
  by default every step.

  ``embed_chunk=N`` (gradient caching, :func:`cached_value_and_grad`) embeds
  the batch N rows at a time without keeping their activations, takes the loss
  and its gradient over the whole batch (any loss; mining, ``axis_name`` and
  the proxies as in the plain step), then back-propagates chunk by chunk: exact
  gradients of batches whose activations would not fit, for a second forward
  pass. BatchNorm then normalises each chunk by its own statistics.
  """

  def compute_loss(params, model_state, batch):
    emb, new_model_state = _embed_in_train_mode(graphdef, params, model_state,
                                                batch["inputs"])
    return _loss_of(graphdef, loss_fn, emb, params, new_model_state, batch), (
        new_model_state, emb)

  if embed_chunk is not None and (isinstance(embed_chunk, bool) or not isinstance(
      embed_chunk, int) or embed_chunk < 1):
    raise ValueError(f"embed_chunk must be None or an int >= 1; got {embed_chunk!r}.")
  value_and_grad = (jax.value_and_grad(compute_loss, has_aux=True) if embed_chunk is None
                    else cached_value_and_grad(graphdef, loss_fn, embed_chunk))

  def batch_statistics(step, emb, batch):
    emb, labels, where = jax.lax.stop_gradient(emb), batch["labels"], batch["where"]
    if axis_name is not None:   # the global batch, as the loss mines it
      emb, labels, where = (jax.lax.all_gather(a, axis_name, tiled=True)
                            for a in (emb, labels, where))
    compute = lambda: {k: jnp.asarray(v, jnp.float32)
                       for k, v in statistics(emb, labels, where).items()}
    if statistics_at is None:
      return compute()
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(compute))
    return jax.lax.cond(statistics_at(step), compute, lambda: zeros)

  def train_step(state: TrainState, batch):
    # Dropout draws from the RNG streams inside model_state, which advance
    # functionally and are checkpointed with it.
    (loss, (model_state, emb)), grads = value_and_grad(state.params, state.model_state, batch)
    if axis_name is not None:
      grads = jax.lax.psum(grads, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(
        params=keep(params, state.params), model_state=keep(model_state, state.model_state),
        opt_state=keep(opt_state, state.opt_state), step=state.step + 1, rng=state.rng,
        skipped=state.skipped + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where(
            (state.first_nonfinite_step < 0) & ~finite, state.step + 1,
            state.first_nonfinite_step))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "finite": finite.astype(jnp.float32)}
    if statistics is not None:
      # Another B x B pass over the batch: ``statistics_at`` keeps it to log steps.
      metrics.update(batch_statistics(state.step + 1, emb, batch))
    return new_state, metrics

  return train_step


def make_embed_fn(graphdef, *, train: bool = False):
  """``embed(state, inputs) -> embeddings`` (jitted), in evaluation mode by default.

  ``train=True`` embeds as the train step does (batch statistics in BatchNorm,
  dropout on) — what the loss saw — without changing ``state``: the statistics
  and RNG streams the call advances are discarded.
  """

  @jax.jit
  def embed(state: TrainState, inputs):
    # A copy of the variables, so that train-mode updates stay inside this call.
    model_state = jax.tree.map(lambda v: v, state.model_state)
    model = nnx.merge(graphdef, state.params, model_state)
    model.train() if train else model.eval()
    return model(inputs)

  return embed
