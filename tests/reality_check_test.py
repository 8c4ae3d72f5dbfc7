"""The reality-check runner: class-disjoint folds, the search, retraining, resuming."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import reality_check as rc
from experiments.configs import test as test_config
from metric_learning import metrics
from metric_learning.data import registry as data_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base(steps=4):
  c = test_config.get_config()
  c.num_steps = steps
  c.checkpoint_every = 2
  c.log_every = 2
  return c


def test_folds_are_class_disjoint_cover_the_classes_and_are_seeded():
  classes = [3, 1, 4, 0, 9, 7, 2]
  folds = rc.fold_classes(classes, 3, seed=5)
  assert sorted(c for f in folds for c in f) == sorted(classes)
  assert all(set(a).isdisjoint(b) for i, a in enumerate(folds) for b in folds[i + 1:])
  assert sorted(len(f) for f in folds) == [2, 2, 3]
  assert rc.fold_classes(classes, 3, seed=5) == folds
  assert rc.fold_classes(classes, 3, seed=6) != folds
  with pytest.raises(rc.SweepError, match="--folds must be between 2 and the 7"):
    rc.fold_classes(classes, 8, seed=0)


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_suggestions_stay_in_their_space_and_depend_only_on_the_history(method):
  if method == "tpe":
    pytest.importorskip("optuna")
  space = {"loss.margin": ("uniform", 0.1, 0.5), "loss.alpha": ("log", 1.0, 100.0),
           "k": ("int", 2, 4)}
  history = []
  for number in range(12):     # TPE leaves its random start-up after 10 trials
    setting = rc.suggest(space, history, number, method, seed=3)
    assert 0.1 <= setting["loss.margin"] <= 0.5 and 1.0 <= setting["loss.alpha"] <= 100.0
    assert setting["k"] in (2, 3, 4) and isinstance(setting["k"], int)
    # A resumed sweep asks again with the same history: the same proposal.
    assert rc.suggest(space, list(history), number, method, seed=3) == setting
    history.append((setting, -abs(setting["loss.margin"] - 0.3)))
  assert rc.suggest(space, history, 12, method, seed=4) != rc.suggest(space, history, 12,
                                                                       method, seed=3)


def test_random_search_samples_log_dimensions_in_log_space():
  rng = np.random.default_rng(0)
  draws = [rc.sample_random({"t": ("log", 0.01, 1.0)}, rng)["t"] for _ in range(2000)]
  assert 0.4 < np.mean(np.asarray(draws) < 0.1) < 0.6      # half the draws below the middle


@pytest.mark.parametrize("spec,match", [
    ("margin=uniform:0:1", "expected LOSS:FIELD=KIND:LOW:HIGH"),
    ("supcon_loss:loss.temperature=log:0.1:1", "'supcon_loss' is not one of --losses"),
    ("batch_hard_triplet_loss:loss.margin=normal:0:1", "KIND must be uniform, log or int"),
    ("batch_hard_triplet_loss:loss.margin=log:0:1", "LOW > 0 for log"),
])
def test_bad_space_flags_name_the_flag(spec, match):
  with pytest.raises(rc.SweepError, match=match):
    rc.parse_space([spec], ["batch_hard_triplet_loss"])


def test_a_space_flag_replaces_a_dimension_and_a_loss_without_space_is_refused():
  spaces = rc.parse_space(["batch_hard_triplet_loss:loss.margin=uniform:0.05:0.5"],
                          ["batch_hard_triplet_loss", "supcon_loss"])
  assert spaces["batch_hard_triplet_loss"] == {"loss.margin": ("uniform", 0.05, 0.5)}
  assert spaces["supcon_loss"] == rc.SPACES["supcon_loss"]
  with pytest.raises(rc.SweepError, match="'nca_loss' has no search space; give one with "
                                          "--space=nca_loss:loss.FIELD"):
    rc.parse_space([], ["nca_loss"])


def test_every_space_names_arguments_its_loss_takes():
  from experiments import config as config_lib
  from metric_learning.losses import registry as loss_registry
  for loss, space in rc.SPACES.items():
    args = loss_registry.arguments(loss)
    for field in space:
      section, _, name = field.rpartition(".")
      if section:
        assert section == "loss" and name in args, (loss, field)
      else:
        assert field in config_lib.SCALARS, (loss, field)


@pytest.mark.parametrize("kwargs,match", [
    (dict(losses=["triplet"]), "--losses: unknown loss 'triplet'"),
    (dict(losses=[]), "--losses is empty"),
    (dict(objective="accuracy"), "--objective='accuracy': choose one of map_at_r"),
    (dict(test_split="query"), "--test_split='query' is not a split of data 'digits'"),
    (dict(trials=0), "--trials must be >= 1"),
])
def test_mistakes_fail_before_anything_is_written(kwargs, match, tmp_path):
  args = dict(losses=["batch_hard_triplet_loss"], folds=2, trials=1, seeds=[0])
  args.update(kwargs)
  with pytest.raises(rc.SweepError, match=match):
    rc.run_sweep(_base(), str(tmp_path / "w"), **args)
  assert not (tmp_path / "w").exists() or not os.listdir(tmp_path / "w")


def test_image_file_datasets_are_refused_with_the_reason(tmp_path):
  c = _base()
  c.data = dict(name="image_folder", path=str(tmp_path))
  c.augment = dict(size=(8, 8))
  with pytest.raises(rc.SweepError, match="cuts its folds from a dataset held in memory"):
    rc.run_sweep(c, str(tmp_path / "w"), losses=["batch_hard_triplet_loss"], folds=2,
                 trials=1, seeds=[0])


def _runs(workdir, loss):
  """``{relative run dir: its config.json}`` of every training run of ``loss``."""
  out = {}
  for root, _, files in os.walk(os.path.join(workdir, loss)):
    if "config.json" in files:
      with open(os.path.join(root, "config.json")) as f:
        out[os.path.relpath(root, workdir)] = json.load(f)
  return out


@pytest.mark.slow
def test_a_sweep_cross_validates_on_held_out_classes_and_retrains_the_best(tmp_path):
  workdir = str(tmp_path / "rc")
  results = rc.run_sweep(_base(), workdir, losses=["batch_hard_triplet_loss"], folds=2,
                         trials=2, seeds=[0, 1], search_flag="random")
  plan = json.load(open(os.path.join(workdir, "plan.json")))
  train_classes = [0, 1, 2, 3, 4]
  assert sorted(c for f in plan["folds"] for c in f) == train_classes
  runs = _runs(workdir, "batch_hard_triplet_loss")
  folds = {k: v for k, v in runs.items() if "/fold_" in k}
  assert len(folds) == 4                                        # 2 trials x 2 folds
  for name, config in folds.items():
    held_out = plan["folds"][int(name.rsplit("_", 1)[1])]
    trained = config["data"]["seen_classes"]
    assert set(trained).isdisjoint(held_out) and sorted(trained + held_out) == train_classes
    assert config["data"]["name"] == "npz" and list(config["evals"]) == ["valid"]
    valid = config["evals"]["valid"]                            # "unseen" = the held-out fold
    assert (valid["name"], valid["split"], valid["gallery"]) == ("retrieval", "unseen", None)
    # What the run trained on and was scored on, as its data section reads.
    splits = data_registry.create("npz", **{k: v for k, v in config["data"].items()
                                            if k != "name"})
    assert set(np.unique(splits["train"].labels)) == set(trained)
    assert set(np.unique(splits["unseen"].labels)) == set(held_out)   # test classes never enter
  trials = [json.load(open(os.path.join(workdir, "batch_hard_triplet_loss", f"trial_{n}",
                                        "trial.json"))) for n in range(2)]
  best = int(np.argmax([t["objective"] for t in trials]))
  for t in trials:
    assert t["objective"] == pytest.approx(np.mean(t["folds"]))
  row, = results["rows"]
  assert row["trial"] == best and row["setting"] == trials[best]["setting"]
  finals = {k: v for k, v in runs.items() if "final" in k}
  assert sorted(finals) == [f"batch_hard_triplet_loss/final_trial_{best}/seed_{s}"
                            for s in (0, 1)]
  for config in finals.values():                                # the chosen setting, retrained
    assert config["loss"]["margin"] == pytest.approx(trials[best]["setting"]["loss.margin"])
    assert config["data"]["name"] == "digits" and config["data"]["seen_classes"] == train_classes
  values = row["map_at_r"]["values"]
  assert len(values) == 2 and row["map_at_r"]["mean"] == pytest.approx(np.mean(values))
  assert row["map_at_r"]["half_width"] > 0
  assert set(results["baselines"]) == {"raw pixels", "raw pixels, L2-normalised",
                                       "mlp features at initialisation",
                                       "mlp features at initialisation, L2-normalised"}
  # The baselines are the retrieval metrics of the test split's pixels (and their unit rows).
  test = data_registry.create("digits", seen_classes=train_classes)["unseen"]
  pixels = test.inputs.reshape(len(test.inputs), -1)
  for name, x in (("raw pixels", pixels),
                  ("raw pixels, L2-normalised", pixels / np.linalg.norm(pixels, axis=1,
                                                                        keepdims=True))):
    want = metrics.retrieval_metrics(x.astype(np.float32), test.labels)["map_at_r"]
    assert results["baselines"][name]["map_at_r"] == pytest.approx(want)
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| batch_hard_triplet_loss | margin=" in table and "raw pixels (no training)" in table
  assert os.path.getsize(os.path.join(workdir, "results.png")) > 5000
  # The same command in a used workdir with other folds is refused.
  with pytest.raises(rc.SweepError, match="holds a sweep with other settings \\(folds"):
    rc.run_sweep(_base(), workdir, losses=["batch_hard_triplet_loss"], folds=3, trials=2,
                 seeds=[0, 1], search_flag="random")


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_table(tmp_path):
  flags = ["--config=experiments/configs/test.py", "--losses=batch_hard_triplet_loss",
           "--folds=2", "--trials=2", "--seeds=0", "--search=random", "--config.num_steps=4",
           "--config.checkpoint_every=2"]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.reality_check", *flags,
                           f"--workdir={killed}"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  first = killed / "batch_hard_triplet_loss" / "trial_1" / "fold_0" / "checkpoints"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
  proc.send_signal(signal.SIGKILL)                 # mid-sweep: trial 1 has started
  proc.wait()
  assert not (killed / "results.json").exists()
  for workdir in (killed, tmp_path / "whole"):
    out = subprocess.run([sys.executable, "-m", "experiments.reality_check", *flags,
                          f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
  resumed = json.loads((killed / "results.json").read_text())
  whole = json.loads((tmp_path / "whole" / "results.json").read_text())
  assert resumed == whole
  assert "| batch_hard_triplet_loss |" in out.stdout


@pytest.mark.slow   # launches the command line
def test_the_command_line_fails_in_one_line_naming_the_flag(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "experiments.reality_check",
                        "--losses=batch_hard_triplet_loss", "--seeds=a",
                        f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and out.stderr.strip().endswith(
      "FATAL: --seeds must be integers; got 'a'.")
  assert not (tmp_path / "w").exists()


@pytest.mark.slow   # launches the command line
def test_config_overrides_work_as_in_the_launcher_new_fields_included(tmp_path):
  """A part's field the config file leaves out (model.head_init) is taken, and a
  misspelt one fails in one line with the closest name, writing nothing."""
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  common = ["--losses=batch_hard_triplet_loss", "--folds=2", "--trials=1", "--seeds=0",
            "--config=experiments/configs/test.py", "--config.num_steps=2",
            "--config.model.embedding_dim=16", "--config.model.normalize=True"]
  bad = subprocess.run([sys.executable, "-m", "experiments.reality_check", *common,
                        "--config.model.head_inti=identity", f"--workdir={tmp_path / 'bad'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].endswith("did you mean config.model.head_init?")
  assert not (tmp_path / "bad").exists()
  out = subprocess.run([sys.executable, "-m", "experiments.reality_check", *common,
                        "--config.model.head_init=identity", "--config.model.hidden=(16,)",
                        f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  model = json.loads((tmp_path / "w" / "plan.json").read_text())["config"]["model"]
  assert model["head_init"] == "identity" and model["hidden"] == [16]


@pytest.mark.slow
def test_a_plan_recorded_before_a_config_setting_existed_still_resumes(tmp_path):
  workdir = str(tmp_path / "rc")
  kwargs = dict(losses=["batch_hard_triplet_loss"], folds=2, trials=1, seeds=[0],
                search_flag="random")
  first = rc.run_sweep(_base(), workdir, **kwargs)
  path = os.path.join(workdir, "plan.json")
  plan = json.load(open(path))
  del plan["config"]["embed_chunk"]             # as recorded before gradient caching
  json.dump(plan, open(path, "w"))
  assert rc.run_sweep(_base(), workdir, **kwargs) == first
  with pytest.raises(rc.SweepError, match=r"other settings \(config \(num_steps: 4 → 6\)\)"):
    rc.run_sweep(_base(steps=6), workdir, **kwargs)
