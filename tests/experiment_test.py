"""End to end: the test config trains, writes every artefact, and resumes."""

import json
import os

import numpy as np
import pytest

from experiments.configs import default as default_config
from experiments.configs import test as test_config
from metric_learning import training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = training.train_and_evaluate(test_config.get_config(), workdir)
  return workdir, summary


def test_writes_checkpoints_events_metrics_plots_and_summary(run):
  workdir, summary = run
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert any(f.startswith("events.out.tfevents") for f in events)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6]
  assert any("eval/unseen/map_at_r" in r for r in rows)
  stats = [r for r in rows if "train/active_anchor_fraction" in r]
  assert [r["step"] for r in stats] == [2, 4, 6]
  assert all(0 <= r["train/valid_anchor_fraction"] <= 1 for r in stats)
  for name in ("embedding_map", "distances", "curves", "retrieval_grid"):
    assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 1000
  with open(os.path.join(workdir, "summary.json")) as f:
    written = json.load(f)
  for key in ("seen/map_at_r", "seen/precision_at_1", "unseen/map_at_r",
              "unseen/precision_at_1", "raw/seen/map_at_r", "raw/seen/precision_at_1",
              "seen/nmi", "unseen/ami",
              "raw/unseen/map_at_r", "raw/unseen/precision_at_1", "steps", "wall_time_s"):
    assert key in written
  assert written["steps"] == 6 and summary["steps"] == 6
  # The raw-pixel baseline of the split: seen 0.675, unseen 0.611.
  assert written["raw/seen/map_at_r"] == pytest.approx(0.675, abs=1e-3)
  assert written["raw/unseen/map_at_r"] == pytest.approx(0.611, abs=1e-3)


def test_enrollment_index_holds_seen_and_unseen_classes(run):
  from metric_learning.index import EmbeddingIndex
  index = EmbeddingIndex.load(os.path.join(run[0], "index.npz"))
  assert set(np.unique(index.labels)) == set(range(10))


def test_resume_from_an_earlier_checkpoint_ends_exactly_like_the_uninterrupted_run(
    run, tmp_path):
  """Simulate a kill after step 3: only checkpoint 3 survives; rerun the same command."""
  import shutil
  workdir, summary = run
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  shutil.rmtree(os.path.join(copy, "checkpoints", "6"))
  resumed = training.train_and_evaluate(test_config.get_config(), copy)
  assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
  for key in ("seen/map_at_r", "unseen/map_at_r", "seen/precision_at_1",
              "unseen/r_precision"):
    assert resumed[key] == summary[key], key


def test_finished_run_restarts_at_its_last_step(run):
  workdir, summary = run
  again = training.train_and_evaluate(test_config.get_config(), workdir)
  assert again["resumed_from_step"] == 6 and again["steps"] == 6
  assert again["seen/map_at_r"] == summary["seen/map_at_r"]


def test_unknown_names_fail_fast_listing_the_valid_ones(tmp_path):
  for field, value, match in (("loss.name", "hinge", "loss.name must be one of"),
                              ("model.name", "vit", "model must be one of"),
                              ("data.name", "imagenet", "data.name must be one of"),
                              ("optimizer.name", "lamb", "optimizer.name must be one of")):
    cfg = test_config.get_config()
    section, attr = field.split(".")
    setattr(getattr(cfg, section), attr, value)
    with pytest.raises(ValueError, match=match):
      training.train_and_evaluate(cfg, str(tmp_path / field))


def test_missing_dataset_path_says_what_layout_was_expected(tmp_path):
  cfg = test_config.get_config()
  cfg.data.name, cfg.data.path = "image_folder", str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
    training.train_and_evaluate(cfg, str(tmp_path / "w"))


def test_default_config_is_the_documented_experiment():
  cfg = default_config.get_config()
  assert cfg.data.name == "digits" and tuple(cfg.data.seen_classes) == (0, 1, 2, 3, 4)
  assert cfg.data.test_fraction == 0.3 and cfg.data.split_seed == 0


@pytest.mark.parametrize("name", ["hermans_market1501", "cub200", "mnist_npz"])
def test_dataset_configs_build_and_fail_clearly_without_data(name, tmp_path):
  import importlib
  cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
  cfg.data.path = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="expected"):
    training.train_and_evaluate(cfg, str(tmp_path / "w"))


def test_mnist_npz_config_trains_on_a_generated_file(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "mnist.npz")
  labels = np.repeat(np.arange(10), 12)
  np.savez(path, inputs=rng.integers(0, 255, (120, 28, 28), dtype=np.uint8), labels=labels)
  from experiments.configs import mnist_npz
  cfg = mnist_npz.get_config()
  cfg.data.path = path
  cfg.model.widths = (4, 8)
  cfg.sampler.p, cfg.sampler.k = 3, 4
  cfg.num_steps, cfg.eval_every, cfg.checkpoint_every = 2, 0, 2
  cfg.progress_bar = False
  summary = training.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert summary["steps"] == 2 and 0 <= summary["unseen/map_at_r"] <= 1


def test_unseen_sweep_variants_all_apply_to_the_default_config():
  from experiments import unseen_sweep
  for name, edit in unseen_sweep.variants().items():
    cfg = default_config.get_config()
    edit(cfg)
    assert "," not in name          # --only is a comma-separated list
    assert cfg.num_steps > 0
