"""Non-finite guards, corrupt checkpoints, and a real SIGKILL followed by a restart."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
from metric_learning import models
from metric_learning import training
from metric_learning.training import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_non_finite_loss_skips_the_update_and_counts_it():
  model = models.create("mlp", (4,), hidden=(8,), embedding_dim=3)
  cfg = test_config.get_config()
  tx = state_lib.make_optimizer(cfg.optimizer, 10)
  graphdef, state = state_lib.init_state(model, tx, 0)
  step = jax.jit(state_lib.make_train_step(
      graphdef, tx, state_lib.get_loss("batch_hard_triplet_loss")))
  batch = {"inputs": jnp.ones((4, 4)).at[0, 0].set(jnp.nan),
           "labels": jnp.array([0, 0, 1, 1]), "where": jnp.ones(4, bool)}
  new, metrics = step(state, batch)
  assert int(new.skipped) == 1 and int(new.step) == 1
  assert int(new.first_nonfinite_step) == 1
  assert float(metrics["finite"]) == 0
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_nonfinite_stop_policy_names_the_step(tmp_path, monkeypatch):
  cfg = test_config.get_config()
  cfg.nonfinite = "stop"
  cfg.optimizer.learning_rate = 1e30      # diverges within a few steps
  cfg.optimizer.warmup_steps = 0
  cfg.model.normalize = False
  cfg.num_steps, cfg.log_every = 20, 1
  with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step \d+"):
    training.train_and_evaluate(cfg, str(tmp_path))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
  cfg = test_config.get_config()
  first = training.train_and_evaluate(cfg, str(tmp_path))
  latest = os.path.join(tmp_path, "checkpoints", "6")
  for dirpath, _, files in os.walk(latest):
    for f in files:
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"corrupt")
  again = training.train_and_evaluate(cfg, str(tmp_path))
  assert again["resumed_from_step"] == 3
  assert again["seen/map_at_r"] == first["seen/map_at_r"]


@pytest.mark.slow
def test_sigkill_then_restart_ends_like_an_uninterrupted_run(tmp_path):
  def cmd(workdir):
    return [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
            f"--workdir={workdir}", "--config.num_steps=400", "--config.checkpoint_every=20",
            "--config.eval_every=0", "--config.log_every=20", "--config.plots=False"]

  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  killed = str(tmp_path / "killed")
  proc = subprocess.Popen(cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, "checkpoints")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt) and len([d for d in os.listdir(ckpt) if d.isdigit()]) >= 2:
      break
    time.sleep(0.05)
  was_running = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert was_running, "the run finished before it could be killed"
  subprocess.run(cmd(killed), cwd=ROOT, env=env, check=True, capture_output=True)
  fresh = str(tmp_path / "fresh")
  subprocess.run(cmd(fresh), cwd=ROOT, env=env, check=True, capture_output=True)
  a = json.load(open(os.path.join(killed, "summary.json")))
  b = json.load(open(os.path.join(fresh, "summary.json")))
  assert 0 < a["resumed_from_step"] < 400 and a["steps"] == b["steps"] == 400
  for key in ("seen/map_at_r", "unseen/map_at_r", "seen/precision_at_1", "unseen/nmi"):
    assert a[key] == b[key], key
