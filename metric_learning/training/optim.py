"""Optimizers and learning-rate schedules by name: two tables, explicit arguments.

``OPTIMIZERS`` maps a name to its Optax constructor and ``SCHEDULES`` a name to
a schedule builder; :func:`make_optimizer` composes them with linear warm-up
and optional global-norm clipping. Arguments are explicit keywords (no config
objects); :func:`optimizer_arguments` and :func:`schedule_arguments` list what
each name accepts so a launcher can check settings before training.

Example:
  >>> from metric_learning.training import optim
  >>> schedule = optim.make_schedule("cosine", learning_rate=1e-3, num_steps=100,
  ...                                warmup_steps=10)
  >>> [round(float(schedule(s)), 8) for s in (0, 10, 100)]
  [0.0, 0.001, 0.0]
  >>> tx = optim.make_optimizer("adamw", schedule, weight_decay=1e-4, grad_clip=1.0)
"""

from __future__ import annotations

from typing import Any
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from metric_learning import registry

# Optax constructors by name; the learning rate (or schedule) is supplied by
# :func:`make_optimizer`, so it is not a setting.
OPTIMIZERS = registry.Registry("optimizer", runtime=("learning_rate",))
for _name in ("adam", "adamw", "sgd", "rmsprop", "lamb"):
  OPTIMIZERS.register(_name, getattr(optax, _name))


def _constant(learning_rate: float, decay_steps: int) -> optax.Schedule:
  del decay_steps
  return optax.constant_schedule(learning_rate)


def _cosine(learning_rate: float, decay_steps: int, *, alpha: float = 0.0) -> optax.Schedule:
  """Cosine decay to ``alpha * learning_rate`` over the steps after warm-up."""
  return optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=alpha)


def _exponential(learning_rate: float, decay_steps: int, *, final_fraction: float = 0.01,
                 decay_begin: int = 0) -> optax.Schedule:
  """Constant until ``decay_begin`` (counted after warm-up), then exponential decay
  reaching ``final_fraction * learning_rate`` at the last step (Hermans et al. 2017
  decay to 0.001 from 15k of 25k steps)."""
  span = max(decay_steps - decay_begin, 1)
  return optax.exponential_decay(learning_rate, span, final_fraction,
                                 transition_begin=decay_begin)


# Schedules by name, ``schedule(learning_rate, decay_steps, **settings)``, after
# the warm-up :func:`make_schedule` adds.
SCHEDULES = registry.Registry("schedule", runtime=("learning_rate", "decay_steps"))
SCHEDULES.register("constant", _constant)
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("exponential", _exponential)


def optimizer_arguments(name: str) -> dict[str, Any]:
  """Keyword arguments the Optax constructor ``name`` accepts (besides the
  learning rate, which the schedule supplies), with their defaults."""
  return OPTIMIZERS.arguments(name)


def schedule_arguments(name: str) -> dict[str, Any]:
  """Keyword arguments of the schedule ``name``, with their defaults."""
  return SCHEDULES.arguments(name)


def make_schedule(name: str, *, learning_rate: float, num_steps: int, warmup_steps: int = 0,
                  **kwargs) -> optax.Schedule:
  """Linear warm-up from 0 over ``warmup_steps``, then the named decay.

  Args:
    name: a key of :data:`SCHEDULES`.
    learning_rate: the peak learning rate.
    num_steps: the total number of training steps.
    warmup_steps: linear warm-up length (clipped below ``num_steps``).
    **kwargs: the schedule's own arguments (:func:`schedule_arguments`).

  Returns:
    An Optax schedule ``step -> learning rate``.
  """
  SCHEDULES.check(name)
  SCHEDULES.check_settings(name, kwargs, field="schedule")
  warmup = min(int(warmup_steps), max(num_steps - 1, 0))
  decay = SCHEDULES[name](learning_rate, max(num_steps - warmup, 1), **kwargs)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup), decay], [warmup])


def scale_updates_by_group(scales: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of the parameters under each top-level name by its factor.

  Placed after an optimizer whose update is proportional to its learning rate
  (every optimizer of :data:`OPTIMIZERS`: Adam, AdamW and LAMB including weight
  decay, SGD, RMSProp), it gives those parameters the learning rate (and
  schedule) times the factor, and leaves the optimizer's statistics alone.

  Args:
    scales: ``{top-level parameter name: factor}``, e.g. ``{"proxies": 100.0}`` for
      :class:`metric_learning.models.EncoderWithProxies`.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  scales = dict(scales)

  def factor(path) -> float:
    first = path[0] if path else None
    name = getattr(first, "key", getattr(first, "name", None))
    return scales.get(name, 1.0)

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u if factor(path) == 1.0 else u * jnp.asarray(factor(path), u.dtype),
        updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(name: str, learning_rate: float | optax.Schedule, *,
                   grad_clip: float = 0.0, lr_scales: Mapping[str, float] | None = None,
                   **kwargs) -> optax.GradientTransformation:
  """The Optax optimizer ``name`` driven by ``learning_rate``, optionally clipped.

  Args:
    name: a key of :data:`OPTIMIZERS`.
    learning_rate: a float or a schedule (:func:`make_schedule`).
    grad_clip: clip gradients to this global norm first (0 = no clipping).
    lr_scales: learning-rate factors by top-level parameter name
      (:func:`scale_updates_by_group`), e.g. ``{"proxies": 100.0}``: proxy losses
      train their class vectors faster than the encoder (Kim et al. 2020 use 100×).
    **kwargs: the optimizer's own arguments (:func:`optimizer_arguments`),
      e.g. ``weight_decay`` for ``adamw``.

  Returns:
    An ``optax.GradientTransformation``.
  """
  OPTIMIZERS.check(name)
  OPTIMIZERS.check_settings(name, kwargs, field="optimizer")
  if grad_clip < 0:
    raise ValueError(f"grad_clip must be >= 0; got {grad_clip}.")
  for group, scale in (lr_scales or {}).items():
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
      raise ValueError(f"lr_scales[{group!r}] must be a number > 0; got {scale!r}.")
  chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  chain.append(OPTIMIZERS[name](learning_rate, **kwargs))
  if lr_scales and any(scale != 1 for scale in lr_scales.values()):
    chain.append(scale_updates_by_group(lr_scales))
  return optax.chain(*chain)
