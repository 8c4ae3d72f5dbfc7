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

from metric_learning import _validation
from metric_learning import presets
from metric_learning.losses import contrastive
from metric_learning.losses import pair_based
from metric_learning.losses import pairs
from metric_learning.losses import proxies
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
    "ntxent_loss": contrastive.ntxent_loss,
    "supcon_loss": contrastive.supcon_loss,
    "sigmoid_loss": contrastive.sigmoid_loss,
    "circle_loss": pair_based.circle_loss,
    "tuplet_margin_loss": pair_based.tuplet_margin_loss,
    "angular_loss": pair_based.angular_loss,
    "generalized_lifted_structure_loss": pair_based.generalized_lifted_structure_loss,
    "fast_ap_loss": pair_based.fast_ap_loss,
    "nca_loss": pair_based.nca_loss,
    "proxy_anchor_loss": proxies.proxy_anchor_loss,
    "proxy_nca_loss": proxies.proxy_nca_loss,
    "soft_triple_loss": proxies.soft_triple_loss,
    "normalized_softmax_loss": proxies.normalized_softmax_loss,
    "arcface_loss": proxies.arcface_loss,
    "cosface_loss": proxies.cosface_loss,
    "subcenter_arcface_loss": proxies.subcenter_arcface_loss,
    **{name: presets.get(name) for name in presets.NAMES},
}

# Proxy (classifier) losses take a third array, ``[num_classes * per_class, dim]``
# class vectors trained with the encoder (``metric_learning.models.Proxies``);
# the value is the setting that gives ``per_class`` (None: one per class).
PROXY_LOSSES: dict[str, str | None] = {
    "proxy_anchor_loss": None,
    "proxy_nca_loss": None,
    "soft_triple_loss": "centers_per_class",
    "normalized_softmax_loss": None,
    "arcface_loss": None,
    "cosface_loss": None,
    "subcenter_arcface_loss": "sub_centers",
}

# Values for arguments a loss requires but a configuration may leave out: SigLIP's
# initial temperature and bias (Zhai et al. 2023: t = 10, b = -10).
REQUIRED_DEFAULTS: dict[str, dict[str, Any]] = {
    "sigmoid_loss": {"temperature": 10.0, "bias": -10.0},
}


def _check_name(name: str) -> None:
  if name not in LOSSES:
    raise ValueError(_validation.unknown_name(name, LOSSES, field="loss name", kind="loss"))


def arguments(name: str) -> dict[str, Any]:
  """The settings ``name`` accepts, with the values it uses when they are not given."""
  _check_name(name)
  entry = LOSSES[name]
  fn = entry.loss if isinstance(entry, presets.Preset) else entry
  out = {p.name: p.default for p in inspect.signature(fn).parameters.values()
         if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in RUNTIME_ARGUMENTS}
  out.update(REQUIRED_DEFAULTS.get(name, {}))
  if isinstance(entry, presets.Preset):
    out.update(entry.defaults)
  return out


def proxies_per_class(name: str, settings: dict[str, Any]) -> int | None:
  """Class vectors per class a proxy loss needs with ``settings``; None if it needs none."""
  _check_name(name)
  if name not in PROXY_LOSSES:
    return None
  key = PROXY_LOSSES[name]
  return 1 if key is None else int(settings.get(key, arguments(name)[key]))


def check_arguments(name: str, settings: dict[str, Any], *, where: str = "loss") -> None:
  """Fails naming the first setting that ``name`` does not accept."""
  _validation.known_settings(settings, arguments(name), field=where, owner=repr(name))


def create(name: str, **settings) -> Callable[..., Any]:
  """``loss(embeddings, labels, **runtime) -> scalar`` with ``settings`` bound.

  Args:
    name: a key of :data:`LOSSES` (a loss function or a preset).
    **settings: keyword arguments of that loss (see :func:`arguments`); runtime
      arguments (``where``, ``axis_name``, ``ref_*``, ``key``) are passed per call.

  Returns:
    The loss with the settings bound; a preset keeps its pinned values unless a
    setting overrides them. A proxy loss (:data:`PROXY_LOSSES`) is called
    ``loss(embeddings, labels, proxies, **runtime)``.
  """
  check_arguments(name, settings)
  fn = LOSSES[name]
  settings = {**REQUIRED_DEFAULTS.get(name, {}), **settings}

  def loss(embeddings, labels, *arrays, **runtime):
    return fn(embeddings, labels, *arrays, **settings, **runtime)

  loss.__name__ = name
  return loss
