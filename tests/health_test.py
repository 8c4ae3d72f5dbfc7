"""Training health: collapse and dead-gradient warnings, once each, with the step."""

import pytest

from experiments import train
from experiments.configs import default as default_config
from metric_learning.training.health import HealthMonitor


def _stats(neg=0.5, norm=1.0, active=0.5):
  return {"hardest_negative_mean": neg, "embedding_norm_mean": norm,
          "active_anchor_fraction": active}


def test_collapse_warns_once_after_patience_consecutive_steps():
  m = HealthMonitor(patience=3, collapse_ratio=0.02)
  assert m.update(10, _stats(neg=0.001)) == []
  assert m.update(20, _stats(neg=0.001)) == []
  (warning,) = m.update(30, _stats(neg=0.001))
  assert warning.startswith("step 30: embeddings have collapsed") and "learning rate" in warning
  assert m.update(40, _stats(neg=0.001)) == []          # once per run


def test_a_healthy_step_resets_the_count():
  m = HealthMonitor(patience=2)
  m.update(1, _stats(neg=0.001))
  m.update(2, _stats(neg=0.5))
  assert m.update(3, _stats(neg=0.001)) == []
  assert len(m.update(4, _stats(neg=0.001))) == 1


@pytest.mark.parametrize("neg,norm,collapsed", [
    (0.019, 1.0, True), (0.021, 1.0, False),     # unit-norm embeddings: 0.02 of 1
    (0.15, 10.0, True), (0.25, 10.0, False),     # large embeddings: relative to the norm
    (0.001, 0.01, True), (0.05, 0.01, False),    # tiny embeddings: absolute floor 0.02
])
def test_collapse_is_relative_to_the_embedding_scale(neg, norm, collapsed):
  m = HealthMonitor(patience=1)
  assert bool(m.update(1, _stats(neg=neg, norm=norm))) == collapsed


def test_no_active_anchor_for_patience_steps_warns_once():
  m = HealthMonitor(patience=2)
  assert m.update(1, _stats(active=0.0)) == []
  (warning,) = m.update(2, _stats(active=0.0))
  assert warning.startswith("step 2: no anchor has had a non-zero loss")
  assert m.update(3, _stats(active=0.0)) == []
  assert HealthMonitor(patience=2).update(1, _stats(active=0.01)) == []


def test_the_trainer_warns_when_the_hinge_goes_dead(tmp_path, caplog):
  """The former default (Adam 1e-3, m=0.2) satisfies every triplet within ~150 steps."""
  c = default_config.get_config()
  c.optimizer.learning_rate = 1e-3
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 0, 300
  c.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  c.raw_baseline = c.plots = c.progress_bar = False
  summary = train.train_and_evaluate(c, str(tmp_path))
  (warning,) = summary["health_warnings"]
  assert "no anchor has had a non-zero loss for 3 log steps" in warning
  step = int(warning.split(":")[0].split()[1])
  assert 60 <= step <= 300
  assert sum("no anchor has had" in r.getMessage() for r in caplog.records) == 1


def test_the_soft_margin_is_never_called_inactive():
  m = HealthMonitor(patience=1, check_inactive=False)
  assert m.update(1, _stats(active=0.0)) == []
  assert len(m.update(2, _stats(neg=0.0001))) == 1        # collapse is still caught


def test_the_trainer_checks_inactivity_only_for_hinge_losses(tmp_path):
  c = default_config.get_config()
  c.loss = {"name": "hermans"}
  c.optimizer.learning_rate = 1e-3
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 200, 20, 0, 200
  c.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  c.raw_baseline = c.plots = c.progress_bar = False
  assert train.train_and_evaluate(c, str(tmp_path))["health_warnings"] == []
  # The check would have fired for a hinge: no triplet violates m=0.2 for 3+ log steps.
  import json
  with open(tmp_path / "metrics.jsonl") as f:
    active = [r["train/active_anchor_fraction"] for r in map(json.loads, f)
              if "train/active_anchor_fraction" in r]
  assert active[-3:] == [0.0, 0.0, 0.0]
