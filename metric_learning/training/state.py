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


def make_train_step(graphdef, tx, loss_fn: Callable, *, axis_name: str | None = None,
                    statistics: Callable | None = None,
                    statistics_at: Callable[[jax.Array], jax.Array] | None = None):
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
  """

  def compute_loss(params, model_state, batch):
    # Rebuild the variables inside this trace: BatchNorm statistics are mutated
    # during the call, and NNX forbids mutating variables created in an outer trace.
    model_state = jax.tree.map(lambda v: v, model_state)
    model = nnx.merge(graphdef, params, model_state)
    model.train()
    emb = model(batch["inputs"])
    extra = model.loss_inputs() if hasattr(model, "loss_inputs") else {}
    loss = loss_fn(emb, batch["labels"], batch["where"], **extra)
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return loss, (new_model_state, emb)

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
    (loss, (model_state, emb)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params, state.model_state, batch)
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
