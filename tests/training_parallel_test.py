"""Train steps under pmap and jit-over-mesh equal single-device training (8 CPU devices)."""

import cases
import jax
import numpy as np
import pytest

from experiments import train as train_lib
from experiments.configs import test as test_config
import metric_learning as ml
from metric_learning import data
from metric_learning import models
from metric_learning import training
from metric_learning.losses import registry
from metric_learning.training import parallel


def _train(mode, loss_name, loss_kwargs, steps=3, **statistics):
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

  runner = parallel.make_runner(mode, graphdef, tx, make_loss, sampler.batch_size,
                                **statistics)
  embed = training.make_embed_fn(graphdef, train=True)
  host, state = state, runner.put_state(state)
  losses, logged = [], []
  for step in range(steps):
    index = sampler.batch(step)
    where = np.ones(16, bool)
    where[[3, 12]] = False                       # padding rows on two devices
    batch = {"inputs": digits.inputs[index], "labels": digits.labels[index],
             "where": where}
    before = embed(host, batch["inputs"]) if statistics else None   # what the loss sees
    state, metrics = runner.step(state, batch)
    host = runner.get_state(state)
    losses.append(float(metrics["loss"]))
    logged.append((jax.device_get(metrics), before, batch))
  params = parallel.host_state(runner.get_state(state).params)
  return (params, losses, logged) if statistics else (params, losses)


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


@pytest.mark.parametrize("mode", ["none", "pmap", "mesh"])
def test_statistics_inside_the_step_cover_the_global_batch(mode):
  # Computed in the jitted step, on the embeddings the loss saw (before the
  # update), over all 16 rows although each of 8 devices holds 2; skipped
  # (reported as 0) at the steps statistics_at leaves out.
  stats = lambda e, y, w: ml.triplet_statistics(e, y, margin=0.3, where=w)
  _, _, logged = _train(mode, "batch_hard_triplet_loss", {"margin": 0.2}, steps=3,
                        statistics=stats, statistics_at=lambda s: s % 2 == 1)
  for step, (metrics, emb, batch) in enumerate(logged, start=1):
    want = ml.triplet_statistics(emb, batch["labels"], margin=0.3, where=batch["where"])
    assert set(want) <= set(metrics)
    for k, v in want.items():
      expected = float(v) if step % 2 == 1 else 0.0
      assert float(metrics[k]) == pytest.approx(expected, rel=1e-4, abs=1e-5), (mode, step, k)
  assert float(logged[0][0]["active_anchor_fraction"]) > 0     # not vacuous


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


# The developer loop trains under jit over a mesh; the README command under pmap too.
@pytest.mark.parametrize("mode", cases.slow_after_first([("mesh",), ("pmap",)], ["mesh", "pmap"]))
def test_train_and_evaluate_runs_data_parallel(mode, tmp_path):
  cfg = test_config.get_config()
  cfg.parallel = mode
  cfg.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  summary = train_lib.train_and_evaluate(cfg, str(tmp_path))
  cfg.parallel = "none"
  single = train_lib.train_and_evaluate(cfg, str(tmp_path / "single"))
  assert summary["steps"] == 6
  assert summary["seen/map_at_r"] == pytest.approx(single["seen/map_at_r"], abs=2e-3)
