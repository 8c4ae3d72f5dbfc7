"""Train state, optimizer and the pure train / embed steps."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import metric_learning as ml

# Losses selectable by name from a config; unknown names fail listing these.
LOSSES: dict[str, Callable] = {
    "batch_hard_triplet_loss": ml.batch_hard_triplet_loss,
    "batch_all_triplet_loss": ml.batch_all_triplet_loss,
    "semi_hard_triplet_loss": ml.semi_hard_triplet_loss,
    "quadruplet_loss": ml.quadruplet_loss,
    "contrastive_loss": ml.contrastive_loss,
    "lifted_structure_loss": ml.lifted_structure_loss,
    "multi_similarity_loss": ml.multi_similarity_loss,
    "margin_loss": ml.margin_loss,
    "npair_loss": ml.npair_loss,
}


def get_loss(name: str, **kwargs) -> Callable:
  """``loss(embeddings, labels, where) -> scalar`` for a library loss or a preset name."""
  if name in LOSSES:
    fn = LOSSES[name]
    return lambda e, y, w: fn(e, y, where=w, **kwargs)
  if name in ml.presets.NAMES:
    preset = ml.presets.get(name)
    return lambda e, y, w: preset(e, y, where=w, **kwargs)
  raise ValueError(f"loss.name must be one of {sorted(LOSSES) + list(ml.presets.NAMES)}; "
                   f"got {name!r}.")


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


def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """Adam / AdamW / SGD with warm-up + cosine / exponential / constant decay,
  optional gradient clipping."""
  names = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}
  if cfg.name not in names:
    raise ValueError(f"optimizer.name must be one of {sorted(names)}; got {cfg.name!r}.")
  warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.learning_rate, max(num_steps - warmup, 1))
  elif cfg.schedule == "exponential":
    decay = optax.exponential_decay(cfg.learning_rate, max(num_steps - warmup, 1), 0.01)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.learning_rate)
  else:
    raise ValueError("optimizer.schedule must be one of ['constant', 'cosine', "
                     f"'exponential']; got {cfg.schedule!r}.")
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.learning_rate, warmup), decay], [warmup])
  kwargs = {"weight_decay": cfg.weight_decay} if cfg.name == "adamw" else {}
  chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  return optax.chain(*chain, names[cfg.name](schedule, **kwargs))


def init_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int):
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  state = TrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                     step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed),
                     skipped=jnp.zeros((), jnp.int32),
                     first_nonfinite_step=jnp.full((), -1, jnp.int32))
  return graphdef, state


def make_train_step(graphdef, tx, loss_fn: Callable, *, axis_name: str | None = None):
  """``train_step(state, batch) -> (state, metrics)``, pure.

  ``batch`` holds ``inputs``, ``labels`` and ``where``. A non-finite loss or
  gradient skips the update (parameters unchanged) and counts it in
  ``state.skipped``; nothing non-finite ever reaches the parameters.
  """

  def compute_loss(params, model_state, batch):
    # Rebuild the variables inside this trace: BatchNorm statistics are mutated
    # during the call, and NNX forbids mutating variables created in an outer trace.
    model_state = jax.tree.map(lambda v: v, model_state)
    model = nnx.merge(graphdef, params, model_state)
    model.train()
    emb = model(batch["inputs"])
    loss = loss_fn(emb, batch["labels"], batch["where"])
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return loss, new_model_state

  def train_step(state: TrainState, batch):
    # Dropout draws from the RNG streams inside model_state, which advance
    # functionally and are checkpointed with it.
    (loss, model_state), grads = jax.value_and_grad(compute_loss, has_aux=True)(
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
    # Mining statistics cost another B x B pass: they are computed only at log
    # steps, outside this hot path (see training.train).
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "finite": finite.astype(jnp.float32)}
    return new_state, metrics

  return train_step


def make_embed_fn(graphdef):
  """``embed(state, inputs) -> embeddings`` in evaluation mode (jitted)."""

  @jax.jit
  def embed(state: TrainState, inputs):
    model = nnx.merge(graphdef, state.params, state.model_state)
    model.eval()
    return model(inputs)

  return embed
