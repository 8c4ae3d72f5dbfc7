"""Every in-batch loss and preset by name: one registry, for configs and launchers.

``LOSSES`` (a :class:`metric_learning.registry.Registry`) maps a name to the loss
callable ``loss(embeddings, labels, **kw)``, with its traits: ``proxies`` (a
proxy / classifier loss: a third array of class vectors, and the setting that
gives how many per class), ``triplet_margin`` (the setting holding a triplet
hinge's margin, which the trainer's statistics and health monitor use);
presets (``metric_learning.losses.presets``) are entries too, so ``"hermans"`` and
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

from typing import Any
from typing import Callable

from metric_learning.losses import presets
from metric_learning import registry as registry_lib
from metric_learning.losses import contrastive
from metric_learning.losses import pair_based
from metric_learning.losses import pairs
from metric_learning.losses import proxies
from metric_learning.losses import triplet

# Arguments supplied at call time by the caller (padding, devices, memory bank,
# per-step randomness), never by a configuration.
RUNTIME_ARGUMENTS = ("pairs", "where", "axis_name", "ref_embeddings", "ref_labels", "ref_where",
                     "key")

LOSSES = registry_lib.Registry(
    "loss", runtime=RUNTIME_ARGUMENTS,
    signature=lambda part: part.loss if isinstance(part, presets.Preset) else part)

_TRIPLET = dict(triplet_margin="margin")
for _name, _fn, _traits in (
    ("batch_hard_triplet_loss", triplet.batch_hard_triplet_loss, _TRIPLET),
    ("batch_all_triplet_loss", triplet.batch_all_triplet_loss, _TRIPLET),
    ("semi_hard_triplet_loss", triplet.semi_hard_triplet_loss, _TRIPLET),
    ("quadruplet_loss", triplet.quadruplet_loss, _TRIPLET),
    ("contrastive_loss", pairs.contrastive_loss, {}),
    ("lifted_structure_loss", pairs.lifted_structure_loss, {}),
    ("multi_similarity_loss", pairs.multi_similarity_loss, {}),
    ("margin_loss", pairs.margin_loss, {}),
    ("npair_loss", pairs.npair_loss, {}),
    ("ntxent_loss", contrastive.ntxent_loss, {}),
    ("supcon_loss", contrastive.supcon_loss, {}),
    # SigLIP's initial temperature and bias (Zhai et al. 2023: t = 10, b = -10):
    # the function requires them, a configuration may leave them out.
    ("sigmoid_loss", contrastive.sigmoid_loss,
     dict(defaults={"temperature": 10.0, "bias": -10.0})),
    ("circle_loss", pair_based.circle_loss, {}),
    ("tuplet_margin_loss", pair_based.tuplet_margin_loss, {}),
    ("angular_loss", pair_based.angular_loss, {}),
    ("generalized_lifted_structure_loss", pair_based.generalized_lifted_structure_loss, {}),
    ("fast_ap_loss", pair_based.fast_ap_loss, {}),
    ("nca_loss", pair_based.nca_loss, {}),
    # Proxy (classifier) losses take a third array, ``[num_classes * per_class,
    # dim]`` class vectors trained with the encoder (``metric_learning.models.
    # Proxies``); ``per_class`` names the setting that gives how many per class.
    ("proxy_anchor_loss", proxies.proxy_anchor_loss, dict(proxies=True)),
    ("proxy_nca_loss", proxies.proxy_nca_loss, dict(proxies=True)),
    ("soft_triple_loss", proxies.soft_triple_loss,
     dict(proxies=True, per_class="centers_per_class")),
    ("normalized_softmax_loss", proxies.normalized_softmax_loss, dict(proxies=True)),
    ("arcface_loss", proxies.arcface_loss, dict(proxies=True)),
    ("cosface_loss", proxies.cosface_loss, dict(proxies=True)),
    ("subcenter_arcface_loss", proxies.subcenter_arcface_loss,
     dict(proxies=True, per_class="sub_centers")),
):
  LOSSES.register(_name, _fn, **_traits)
# A preset is its loss with pinned values: it has its loss's traits.
_BY_FUNCTION = {LOSSES[n]: n for n in LOSSES}
for _name in presets.NAMES:
  _preset = presets.get(_name)
  LOSSES.register(_name, _preset, defaults=dict(_preset.defaults),
                  **LOSSES.traits(_BY_FUNCTION[_preset.loss]))


def arguments(name: str) -> dict[str, Any]:
  """The settings ``name`` accepts, with the values it uses when they are not given
  (:meth:`metric_learning.registry.Registry.arguments`)."""
  return LOSSES.arguments(name)


def proxies_per_class(name: str, settings: dict[str, Any]) -> int | None:
  """Class vectors per class a proxy loss needs with ``settings``; None if it needs none."""
  traits = LOSSES.traits(name)
  if not traits.get("proxies"):
    return None
  key = traits.get("per_class")
  return 1 if key is None else int(settings.get(key, arguments(name)[key]))


def triplet_margin(name: str, settings: dict[str, Any]) -> float | None:
  """The margin of a triplet-hinge loss with ``settings`` (None for other losses,
  and for the soft margin, which has none)."""
  key = LOSSES.traits(name).get("triplet_margin")
  if key is None:
    return None
  values = {**arguments(name), **settings}
  return None if values.get("soft", False) else float(values[key])


def check_arguments(name: str, settings: dict[str, Any], *, where: str = "loss") -> None:
  """Fails naming the first setting that ``name`` does not accept."""
  LOSSES.check_settings(name, settings, field=where)


def create(name: str, **settings) -> Callable[..., Any]:
  """``loss(embeddings, labels, **runtime) -> scalar`` with ``settings`` bound.

  Args:
    name: a name of :data:`LOSSES` (a loss function or a preset).
    **settings: keyword arguments of that loss (see :func:`arguments`); runtime
      arguments (``where``, ``axis_name``, ``ref_*``, ``key``) are passed per call.

  Returns:
    The loss with the settings bound; a preset keeps its pinned values unless a
    setting overrides them. A proxy loss (trait ``proxies``) is called
    ``loss(embeddings, labels, proxies, **runtime)``.
  """
  check_arguments(name, settings)
  fn = LOSSES[name]
  settings = {**arguments(name), **settings}

  def loss(embeddings, labels, *arrays, **runtime):
    return fn(embeddings, labels, *arrays, **settings, **runtime)

  loss.__name__ = name
  return loss
