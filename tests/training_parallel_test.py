"""Train steps under pmap and jit-over-mesh equal single-device training (8 CPU devices)."""

import jax
import numpy as np
import pytest

from experiments import train as train_lib
from experiments.configs import test as test_config
from metric_learning import data
from metric_learning import models
from metric_learning import training
from metric_learning.losses import registry
from metric_learning.training import parallel


def _train(mode, loss_name, loss_kwargs, steps=3):
  # SGD: Adam divides noise-level gradients (~1e-8, e.g. of biases feeding an
  # L2 normalisation) by their own scale, so summation order would show.
  digits = data.digits()
  sampler = data.PKSampler(digits.labels, p=4, k=4, seed=0)
  model = models.create("mlp", (8, 8, 1), hidden=(16,), embedding_dim=8, seed=0)
  tx = training.make_optimizer("sgd", 0.5)
  graphdef, state = training.init_state(model, tx, 0)

  def make_loss(axis_name):
    loss = registry.create(loss_name, **loss_kwargs)
    extra = {} if axis_name is None else {"axis_name": axis_name}
    return lambda e, y, w: loss(e, y, where=w, **extra)

  runner = parallel.make_runner(mode, graphdef, tx, make_loss, sampler.batch_size)
  state = runner.put_state(state)
  losses = []
  for step in range(steps):
    index = sampler.batch(step)
    where = np.ones(16, bool)
    where[[3, 12]] = False                       # padding rows on two devices
    batch = {"inputs": digits.inputs[index], "labels": digits.labels[index],
             "where": where}
    state, metrics = runner.step(state, batch)
    losses.append(float(metrics["loss"]))
  return parallel.host_state(runner.get_state(state).params), losses


@pytest.mark.parametrize("loss_name,loss_kwargs", [
    ("batch_hard_triplet_loss", {"margin": 0.2}),
    ("batch_all_triplet_loss", {"margin": 0.2}),
    ("hermans", {}),
])
def test_pmap_and_mesh_training_equal_single_device(loss_name, loss_kwargs):
  assert jax.device_count() == 8
  ref_params, ref_losses = _train("none", loss_name, loss_kwargs)
  for mode in ("pmap", "mesh"):
    params, losses = _train(mode, loss_name, loss_kwargs)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=mode)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=mode)


def test_batch_must_divide_over_devices(tmp_path):
  cfg = test_config.get_config()
  cfg.sampler.p, cfg.sampler.k = 3, 3
  cfg.parallel = "pmap"
  with pytest.raises(train_lib.ConfigError, match="p\\*k = 9 rows.*8 devices"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))
  cfg.parallel = "ring"
  with pytest.raises(train_lib.ConfigError, match="config.parallel must be one of"):
    train_lib.train_and_evaluate(cfg, str(tmp_path / "b"))
  assert not (tmp_path / "b").exists()          # nothing written before the checks


@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_train_and_evaluate_runs_data_parallel(mode, tmp_path):
  cfg = test_config.get_config()
  cfg.parallel = mode
  cfg.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  summary = train_lib.train_and_evaluate(cfg, str(tmp_path))
  cfg.parallel = "none"
  single = train_lib.train_and_evaluate(cfg, str(tmp_path / "single"))
  assert summary["steps"] == 6
  assert summary["seen/map_at_r"] == pytest.approx(single["seen/map_at_r"], abs=2e-3)
