"""One mechanism for every kind of part chosen by name: losses, models, datasets,
evaluators, optimizers, schedules and parallel modes.

A :class:`Registry` maps names to parts (functions or classes) and gives each
part **traits**: facts the code around it needs (that a loss takes proxies, that
a dataset is streamed from image files), recorded where the part is
registered instead of in parallel tables. Every registry

* registers with ``register(name, part, **traits)`` (or as a decorator);
* derives a part's settings by **one rule** (:meth:`Registry.arguments`): its
  keyword-only parameters and its positional parameters that have a default,
  minus the registry's ``runtime`` names (supplied per call) and the keywords a
  ``functools.partial`` fixes, plus the ``defaults`` trait;
* fails on an unknown name with **one message** naming the field and the
  closest valid name (:meth:`Registry.lookup`).

Core module: no dependency beyond the standard library.

Example:
  >>> from metric_learning import registry
  >>> reg = registry.Registry("loss", field="loss name", runtime=("where",))
  >>> @reg.register("hinge", hinge=True)
  ... def hinge(scores, labels, *, margin=1.0, where=None):
  ...   return margin
  >>> reg.arguments("hinge"), reg.traits("hinge")
  ({'margin': 1.0}, {'hinge': True})
  >>> reg.lookup("hing")
  Traceback (most recent call last):
  ...
  ValueError: loss name: unknown loss 'hing'; did you mean 'hinge'?
"""

from __future__ import annotations

import functools
import inspect
from typing import Any
from typing import Callable
from typing import Iterator
from typing import Mapping

from metric_learning import _validation


class _Required:
  """The value :meth:`Registry.arguments` gives a setting without a default."""

  def __repr__(self) -> str:
    return "REQUIRED"


REQUIRED = _Required()


class Registry(Mapping[str, Any]):
  """Parts of one kind by name, each with traits (a read-only mapping name → part).

  Args:
    kind: what the parts are, for messages (``"loss"``, ``"model"``).
    field: the field that names a part, for messages (``"loss name"``).
    runtime: parameter names supplied per call, never settings.
    signature: for a part that is not its own best description (a class:
      its ``__init__``), ``signature(part) -> callable`` whose parameters are
      read; by default the part itself.
  """

  def __init__(self, kind: str, *, field: str | None = None, runtime=(),
               signature: Callable[[Any], Callable] | None = None):
    self.kind = kind
    self.field = field or f"{kind} name"
    self.runtime = tuple(runtime)
    self._signature = signature
    self._parts: dict[str, Any] = {}
    self._traits: dict[str, dict[str, Any]] = {}

  # ------------------------------------------------------------ mapping ---- #
  def __getitem__(self, name: str) -> Any:
    return self._parts[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._parts)

  def __len__(self) -> int:
    return len(self._parts)

  def __contains__(self, name: object) -> bool:
    return name in self._parts

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}, {sorted(self._parts)})"

  # ----------------------------------------------------------- register ---- #
  def register(self, name: str, part: Any = None, /, **traits):
    """Adds ``part`` under ``name`` with ``traits``; without ``part``, a decorator.

    The ``defaults`` trait (a dict) gives values for settings the part
    requires or does not declare; every other trait is free-form and read back
    with :meth:`traits`. A name is registered once.
    """
    if part is None:
      return functools.partial(self._add, name, traits=traits)
    return self._add(name, part, traits=traits)

  def _add(self, name: str, part: Any, *, traits: dict[str, Any]) -> Any:
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} name must be a non-empty string; got {name!r}.")
    if name in self._parts:
      raise ValueError(f"{self.kind} {name!r} is already registered.")
    self._parts[name] = part
    self._traits[name] = dict(traits)
    return part

  # -------------------------------------------------------------- lookup --- #
  def check(self, name: Any, *, field: str | None = None) -> None:
    """Raises ValueError (one line, the closest valid name) for an unknown name."""
    if not isinstance(name, str) or name not in self._parts:
      raise ValueError(_validation.unknown_name(name, self._parts, field=field or self.field,
                                                kind=self.kind))

  def lookup(self, name: str, *, field: str | None = None) -> Any:
    """The part registered as ``name``."""
    self.check(name, field=field)
    return self._parts[name]

  def traits(self, name: str) -> dict[str, Any]:
    """The traits ``name`` was registered with (``defaults`` aside)."""
    self.check(name)
    return {k: v for k, v in self._traits[name].items() if k != "defaults"}

  def names(self, **traits) -> list[str]:
    """Sorted names whose traits include every ``trait=value`` given."""
    return sorted(n for n in self._parts
                  if all(self._traits[n].get(k) == v for k, v in traits.items()))

  # ----------------------------------------------------------- arguments --- #
  def arguments(self, name: str) -> dict[str, Any]:
    """The settings of part ``name`` with their defaults (:data:`REQUIRED` when none).

    The one rule: the keyword-only parameters and the positional parameters
    with a default, minus ``runtime`` names and the keywords a
    ``functools.partial`` fixes, then the ``defaults`` trait on top.
    """
    part = self.lookup(name)
    fixed = {}
    while isinstance(part, functools.partial):
      fixed.update(part.keywords)
      part = part.func
    target = self._signature(part) if self._signature else part
    out = {}
    for p in inspect.signature(target).parameters.values():
      if p.name in self.runtime or p.name in fixed or p.name == "self":
        continue
      if p.kind is p.KEYWORD_ONLY or (
          p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty):
        out[p.name] = REQUIRED if p.default is p.empty else p.default
    out.update(self._traits[name].get("defaults", {}))
    return out

  def check_settings(self, name: str, settings: Mapping[str, Any], *,
                     field: str | None = None) -> None:
    """Fails naming the first setting ``name`` does not take (the closest one
    when there is one), or the first required setting that is missing."""
    known = self.arguments(name)
    where = field or self.kind
    _validation.known_settings(settings, known, field=where, owner=f"{self.kind} {name!r}")
    missing = [k for k, v in known.items() if v is REQUIRED and k not in settings]
    if missing:
      raise ValueError(f"{where}.{missing[0]} is required by {self.kind} {name!r}.")


def class_init(cls) -> Callable:
  """``signature`` for registries of classes: read ``cls.__init__``."""
  return cls.__init__ if inspect.isclass(cls) else cls
