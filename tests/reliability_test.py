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
import cases
import pytest

from experiments import train
from experiments.configs import test as test_config
from metric_learning import models
from metric_learning import training
from metric_learning.losses import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_non_finite_loss_skips_the_update_and_counts_it():
  model = models.create("mlp", (4,), hidden=(8,), embedding_dim=3)
  tx = training.make_optimizer("adam", 1e-3)
  graphdef, state = training.init_state(model, tx, 0)
  loss = registry.create("batch_hard_triplet_loss")
  step = jax.jit(training.make_train_step(graphdef, tx, lambda e, y, w: loss(e, y, where=w)))
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
  cfg.schedule.warmup_steps = 0
  cfg.model.normalize = False
  cfg.num_steps, cfg.log_every = 20, 1
  with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step \d+"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
  cfg = test_config.get_config()
  first = train.train_and_evaluate(cfg, str(tmp_path))
  latest = os.path.join(tmp_path, "checkpoints", "6")
  for dirpath, _, files in os.walk(latest):
    for f in files:
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"corrupt")
  again = train.train_and_evaluate(cfg, str(tmp_path))
  assert again["resumed_from_step"] == 3
  assert again["seen/map_at_r"] == first["seen/map_at_r"]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
          f"--workdir={workdir}", "--config.num_steps=400", "--config.checkpoint_every=20",
          "--config.eval_every=0", "--config.log_every=20", "--config.plots=False", *extra]


ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")


def _wait_for_checkpoints(proc, workdir, count):
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt) and len([d for d in os.listdir(ckpt) if d.isdigit()]) >= count:
      return True
    time.sleep(0.05)
  return False


def _same_figures(a_dir, b_dir):
  a = json.load(open(os.path.join(a_dir, "summary.json")))
  b = json.load(open(os.path.join(b_dir, "summary.json")))
  assert 0 < a["resumed_from_step"] < 400 and a["steps"] == b["steps"] == 400
  for key, value in b.items():
    if key not in ("wall_time_s", "resumed_from_step"):
      assert a[key] == value, key
  rows = lambda d: [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
  # The same rows as the uninterrupted run: no step logged twice, none missing.
  assert [(r["step"], sorted(r)) for r in rows(a_dir)] == [
      (r["step"], sorted(r)) for r in rows(b_dir)]
  assert [r.get("train/loss") for r in rows(a_dir)] == [
      r.get("train/loss") for r in rows(b_dir)]
  events = os.listdir(os.path.join(a_dir, "tensorboard"))
  assert len(events) == 1, events


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  fresh = str(tmp_path_factory.mktemp("fresh"))
  subprocess.run(_cmd(fresh), cwd=ROOT, env=ENV, check=True, capture_output=True)
  return fresh


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_saves_a_checkpoint_and_stops_with_one_line(
    sig, uninterrupted, tmp_path):
  workdir = str(tmp_path / "stopped")
  proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  assert _wait_for_checkpoints(proc, workdir, 1), "the run finished before the signal"
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + sig, err
  assert "Traceback" not in err
  lines = [line for line in err.splitlines() if line.startswith("Interrupted:")]
  assert len(lines) == 1 and signal.Signals(sig).name in lines[0], err
  stopped_at = int(lines[0].split(" at step ")[1].split(":")[0])
  assert 0 < stopped_at < 400
  assert str(stopped_at) in os.listdir(os.path.join(workdir, "checkpoints"))
  subprocess.run(_cmd(workdir), cwd=ROOT, env=ENV, check=True, capture_output=True)
  _same_figures(workdir, uninterrupted)


@pytest.mark.parametrize("args,message", cases.slow_after_first([
    (["--config.foo=1"], "FATAL config error: config.foo is not a field; "),
    (["--config.num_steps=abc"], "FATAL Flags parsing error: flag --config.num_steps=abc"),
    (["--config.num_steps=-5"], "FATAL config error: config.num_steps must be >= 1; got -5."),
    (["--config.loss.name=multi_similarity_loss", "--config.loss.margin=0.3"],
     "FATAL config error: config.loss.margin is not an argument of loss "
     "'multi_similarity_loss'"),
    (["--config=experiments/configs/nope.py"],
     "FATAL config error: --config: no such config file 'experiments/configs/nope.py'"),
]))
def test_config_mistakes_on_the_command_line_end_in_one_line(args, message, tmp_path):
  cmd = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
         f"--workdir={tmp_path / 'w'}", *args]
  out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr
  fatal = [line for line in out.stderr.splitlines() if line.startswith("FATAL")]
  assert len(fatal) == 1 and fatal[0].startswith(message), out.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_sigkill_then_restart_ends_like_an_uninterrupted_run(uninterrupted, tmp_path):
  killed = str(tmp_path / "killed")
  proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  was_running = _wait_for_checkpoints(proc, killed, 2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert was_running, "the run finished before it could be killed"
  subprocess.run(_cmd(killed), cwd=ROOT, env=ENV, check=True, capture_output=True)
  _same_figures(killed, uninterrupted)


@pytest.mark.slow   # launches the command line
def test_a_part_setting_the_config_file_leaves_out_can_be_set_on_the_command_line(tmp_path):
  """``--config.loss.name=X --config.loss.FIELD=V`` works for X's own fields too
  (ml_collections alone only overrides fields the file sets)."""
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
         f"--workdir={workdir}", "--config.loss.name=contrastive_loss",
         "--config.loss.pos_margin=0.1", "--config.loss.squared=True",
         "--config.num_steps=2", "--config.raw_baseline=False"]
  out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(workdir / "config.json") as f:
    loss = json.load(f)["loss"]
  # the two overrides, and contrastive_loss's own defaults recorded beside them
  assert (loss["name"], loss["pos_margin"], loss["squared"]) == ("contrastive_loss", 0.1, True)
  assert loss["margin"] == 1.0 and loss["reduction"] == "mean"


def test_a_streamed_run_resumed_mid_way_ends_like_an_uninterrupted_one(tmp_path):
  """Image files are decoded and augmented per batch as a function of (seed, step):
  a run resumed from step 3 sees exactly the batches 3..5 of an uninterrupted run."""
  import protocol_fixtures
  root = protocol_fixtures.make_image_folder(str(tmp_path / "imgs"), classes=6, per_class=6)
  cfg = test_config.get_config()
  cfg.data = dict(name="image_folder", path=str(root), seen_classes=(0, 1, 2))
  cfg.model = dict(name="cnn", widths=(4,), embedding_dim=4)
  cfg.augment = dict(size=(10, 10), resize=(14, 14), flip=True, erasing=0.5,
                     color_jitter=0.3)
  cfg.sampler.p, cfg.sampler.k = 3, 2
  cfg.evals = {"seen": dict(name="retrieval", split="seen")}
  cfg.log_every, cfg.plots, cfg.raw_baseline = 1, False, False
  whole = train.train_and_evaluate(cfg, str(tmp_path / "whole"))
  resumed_dir = str(tmp_path / "resumed")
  train.train_and_evaluate(cfg, resumed_dir)
  for dirpath, _, files in os.walk(os.path.join(resumed_dir, "checkpoints", "6")):
    for f in files:                      # lose the last checkpoint: resume from step 3
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"corrupt")
  resumed = train.train_and_evaluate(cfg, resumed_dir)
  assert resumed["resumed_from_step"] == 3
  for key in ("seen/map_at_r", "seen/precision_at_1", "steps"):
    assert resumed[key] == whole[key], key
  losses = lambda d: [json.loads(line).get("train/loss")
                      for line in open(os.path.join(d, "metrics.jsonl"))]
  assert losses(resumed_dir) == losses(str(tmp_path / "whole"))


@pytest.mark.parametrize("args,message", cases.slow_after_first([
    (["--config=experiments/configs/mlrc_cub200.py"],
     "FATAL config error: config.data ('cub200'): data 'cub200' needs path="),
    (["--config=experiments/configs/mlrc_cub200.py", "--config.data.path=/nonexistent"],
     "FATAL not found: '/nonexistent/images.txt' not found; expected ROOT/images.txt"),
    (["--config.model.name=resnet18", "--config.model.weights=/nonexistent.safetensors"],
     "FATAL not found:"),
    (["--config.sampler.p=7"], "FATAL config error: config.sampler: p=7 classes per batch"),
]))
def test_missing_data_or_weights_end_in_one_line_and_write_nothing(args, message, tmp_path):
  cmd = [sys.executable, "-m", "experiments.main", f"--workdir={tmp_path / 'w'}", *args]
  out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  fatal = [line for line in out.stderr.splitlines() if line.startswith("FATAL")]
  assert len(fatal) == 1 and fatal[0].startswith(message), out.stderr
  assert not (tmp_path / "w").exists()
