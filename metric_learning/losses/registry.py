"""Every in-batch loss and preset by name: one table, for configs and launchers.

``LOSSES`` maps a name to the loss callable ``loss(embeddings, labels, **kw)``;
presets (``metric_learning.presets``) are entries too, so ``"hermans"`` and
``"batch_hard_triplet_loss"`` are chosen the same way. :func:`arguments` lists
the settings a name accepts (its own keyword arguments with their defaults;
for a preset, the pinned values win over the underlying loss's defaults), and
:func:`create` checks settings against it, so a setting meant for another loss
fails naming the setting and the loss instead of surfacing as a ``TypeError``
deep inside a training step.

Example:
  >>> import jax.numpy as jnp
  >>> from metric_learning.losses import registry
  >>> loss = registry.create("batch_hard_triplet_loss", margin=0.5)
  >>> x, y = jnp.array([[0.0], [1.0], [1.5], [4.0]]), jnp.array([0, 0, 1, 1])
  >>> round(float(loss(x, y)), 4)
  0.875
  >>> registry.arguments("hermans")["soft"]
  True
"""

from __future__ import annotations

import inspect
from typing import Any
from typing import Callable

from metric_learning import presets
from metric_learning.losses import pairs
from metric_learning.losses import triplet

# Arguments supplied at call time by the caller (padding, devices, memory bank,
# per-step randomness), never by a configuration.
RUNTIME_ARGUMENTS = ("where", "axis_name", "ref_embeddings", "ref_labels", "ref_where", "key")

LOSSES: dict[str, Callable[..., Any]] = {
    "batch_hard_triplet_loss": triplet.batch_hard_triplet_loss,
    "batch_all_triplet_loss": triplet.batch_all_triplet_loss,
    "semi_hard_triplet_loss": triplet.semi_hard_triplet_loss,
    "quadruplet_loss": triplet.quadruplet_loss,
    "contrastive_loss": pairs.contrastive_loss,
    "lifted_structure_loss": pairs.lifted_structure_loss,
    "multi_similarity_loss": pairs.multi_similarity_loss,
    "margin_loss": pairs.margin_loss,
    "npair_loss": pairs.npair_loss,
    **{name: presets.get(name) for name in presets.NAMES},
}


def _check_name(name: str) -> None:
  if name not in LOSSES:
    raise ValueError(f"loss name must be one of {sorted(LOSSES)}; got {name!r}.")


def arguments(name: str) -> dict[str, Any]:
  """The settings ``name`` accepts, with the values it uses when they are not given."""
  _check_name(name)
  entry = LOSSES[name]
  fn = entry.loss if isinstance(entry, presets.Preset) else entry
  out = {p.name: p.default for p in inspect.signature(fn).parameters.values()
         if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in RUNTIME_ARGUMENTS}
  if isinstance(entry, presets.Preset):
    out.update(entry.defaults)
  return out


def check_arguments(name: str, settings: dict[str, Any], *, where: str = "loss") -> None:
  """Fails naming the first setting that ``name`` does not accept."""
  known = arguments(name)
  for key in settings:
    if key not in known:
      raise ValueError(f"{where}.{key} is not an argument of {name!r}; its arguments are "
                       f"{sorted(known)}.")


def create(name: str, **settings) -> Callable[..., Any]:
  """``loss(embeddings, labels, **runtime) -> scalar`` with ``settings`` bound.

  Args:
    name: a key of :data:`LOSSES` (a loss function or a preset).
    **settings: keyword arguments of that loss (see :func:`arguments`); runtime
      arguments (``where``, ``axis_name``, ``ref_*``, ``key``) are passed per call.

  Returns:
    The loss with the settings bound; a preset keeps its pinned values unless a
    setting overrides them.
  """
  check_arguments(name, settings)
  fn = LOSSES[name]

  def loss(embeddings, labels, **runtime):
    return fn(embeddings, labels, **settings, **runtime)

  loss.__name__ = name
  return loss
