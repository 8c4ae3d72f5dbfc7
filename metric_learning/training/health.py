"""Training health: warn once when embeddings collapse or no anchor is active.

Fed the mining statistics of each log step (``metric_learning.triplet_statistics``
of the training batch), :class:`HealthMonitor` returns warnings — each kind at
most once per run — naming the step and the likely causes:

* **collapse**: the hardest-negative distance is below ``collapse_ratio`` times
  the mean embedding norm (or below ``collapse_ratio`` when the norms are tiny)
  for ``patience`` consecutive log steps: every embedding sits near one point,
  the hinge sits at the margin and retrieval is random.
* **inactive**: the fraction of anchors with a non-zero loss stays 0 for
  ``patience`` log steps: every triplet already satisfies the margin, so hinge
  losses give no gradient and training has stopped in all but name.

Example:
  >>> from metric_learning.training.health import HealthMonitor
  >>> monitor = HealthMonitor(patience=2)
  >>> stats = {"hardest_negative_mean": 0.001, "embedding_norm_mean": 1.0,
  ...          "active_anchor_fraction": 0.5}
  >>> monitor.update(100, stats), len(monitor.update(200, stats))
  ([], 1)
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class HealthMonitor:
  """Stateful checker of per-log-step mining statistics (host side, cheap)."""
  patience: int = 3
  collapse_ratio: float = 0.02
  check_inactive: bool = True   # False for losses that are never exactly 0 (soft margin)
  _collapsed_since: int = 0
  _inactive_since: int = 0
  warned: set = dataclasses.field(default_factory=set)

  def update(self, step: int, stats: dict) -> list[str]:
    """New warnings (each kind once) for the statistics logged at ``step``."""
    out = []
    scale = max(float(stats.get("embedding_norm_mean", 1.0)), 1.0)
    neg = float(stats.get("hardest_negative_mean", float("inf")))
    self._collapsed_since = self._collapsed_since + 1 if neg < self.collapse_ratio * scale else 0
    active = float(stats.get("active_anchor_fraction", 1.0))
    self._inactive_since = (self._inactive_since + 1
                            if active == 0.0 and self.check_inactive else 0)
    if self._collapsed_since >= self.patience and "collapse" not in self.warned:
      self.warned.add("collapse")
      out.append(
          f"step {step}: embeddings have collapsed — the mean hardest-negative distance "
          f"({neg:.4g}) has been below {self.collapse_ratio:g} × the embedding scale for "
          f"{self.patience} log steps, so every sample maps to nearly one point. Likely "
          "causes: a learning rate too high for the encoder, a hinge margin the model "
          "can satisfy only by shrinking everything (try the soft margin, a larger "
          "margin with L2 normalisation, or no normalisation), or a BatchNorm right "
          "before the embedding head.")
    if self._inactive_since >= self.patience and "inactive" not in self.warned:
      self.warned.add("inactive")
      out.append(
          f"step {step}: no anchor has had a non-zero loss for {self.patience} log steps — "
          "every mined triplet satisfies the margin, so a hinge loss gives no gradient. "
          "Likely causes: the task is solved on the training classes (stop earlier), the "
          "margin is too small for the embedding scale, or the batch is too easy (more "
          "classes per batch, a harder miner, or the soft margin).")
    return out
