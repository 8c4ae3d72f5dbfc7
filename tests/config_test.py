"""``experiments/config.py`` through the launcher: every mistake is one line naming
the field (with the closest valid name), exit status 2, and nothing written."""

import json
import os
import subprocess
import sys

import cases
import pytest

from experiments import config as config_lib
from experiments.configs import default as default_config
from experiments.configs import test as test_config
from metric_learning import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(tmp_path, *args):
  workdir = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": ROOT}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "experiments.main", *args,
                         f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  return proc, workdir


MISTAKES = [
    (["--config.num_step=10"], "config.num_step is not a field; did you mean config.num_steps?"),
    (["--config=experiments/configs/default.py", "--config.num_step=10"],
     "config.num_step is not a field; did you mean config.num_steps?"),
    (["--config.evals.unseen_fewshot.wayz=3"],
     "config.evals.unseen_fewshot.wayz is not a field; did you mean "
     "config.evals.unseen_fewshot.ways?"),
    (["--config.loss.margin=-0.5"],
     "config.loss ('batch_hard_triplet_loss'): margin must be non-negative; got -0.5."),
    (["--config.loss.marginn=0.1"],
     "config.loss.marginn is not an argument of loss 'batch_hard_triplet_loss'; did you mean "
     "config.loss.margin?"),
    (["--config.optimizer.learning_rate=-1"],
     "config.optimizer.learning_rate must be a number > 0"),
    (["--config.loss.name=batch_hard_triplet_los"],
     "config.loss.name: unknown loss 'batch_hard_triplet_los'; did you mean "
     "'batch_hard_triplet_loss'?"),
    (["--config.model.name=resnet"], "config.model.name: unknown model 'resnet'; did you mean "),
    # One augment schema: a kind refuses only what it cannot do, in one line.
    (["--config.augment.color_jitter=0.4"],
     "config.augment.color_jitter needs RGB image files (uint8); in-memory arrays are float32"),
    (["--config.data.name=image_folder", "--config.data.path=/nonexistent"],
     "config.augment.size is required for image files"),
]


@pytest.mark.parametrize("args,message", cases.slow_after_first(
    MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES]))
def test_a_config_mistake_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path):
  proc, workdir = _launch(tmp_path, *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if "FATAL" in line]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert lines[0].startswith("FATAL config error: ") and message in lines[0], lines[0]
  valid_switch = any(a.startswith("--config.data.name=") for a in args)  # warns, rightly
  assert "\\n" not in lines[0] and (valid_switch or "using its defaults" not in proc.stderr)
  assert not workdir.exists()


def test_resolved_config_records_the_defaults_a_switched_part_uses():
  cfg = default_config.get_config()
  with cfg.unlocked():
    cfg.model = {"name": "cnn"}
  config_lib.validate(cfg)
  resolved, defaults = config_lib.resolve(cfg)
  assert resolved["model"] == {"name": "cnn", **json.loads(json.dumps(
      models.arguments("cnn"), default=list))}
  assert resolved["model"]["normalize"] is False and "model.normalize" in defaults
  assert resolved["loss"]["margin"] == 0.2 and "loss.margin" not in defaults


def test_a_workdir_recorded_without_defaults_still_resumes():
  cfg = test_config.get_config()
  resolved, defaults = config_lib.resolve(cfg)
  old = config_lib.to_json(cfg)              # what config.json held before
  assert config_lib.config_differences(old, resolved, defaults) == []
  assert config_lib.config_differences(old, resolved) != []
  with cfg.unlocked():
    cfg.loss.reduction = "sum"               # a default changed on purpose is a difference
  changed, changed_defaults = config_lib.resolve(cfg)
  assert config_lib.config_differences(old, changed, changed_defaults) == [
      "loss.reduction: '<absent>' → 'sum'"]


def test_every_section_chooses_its_part_with_name_evals_too():
  cfg = test_config.get_config()
  assert all("name" in spec and "type" not in spec
             for spec in config_lib.to_json(cfg)["evals"].values())
  with cfg.unlocked():
    cfg.evals = {"seen": {"type": "retrieval", "split": "seen"}}
  with pytest.raises(config_lib.ConfigError,
                     match=r"^config\.evals\.seen\.name is missing \(evaluators are chosen by "
                           r"name, no longer by type\); choose one of \['clustering'"):
    config_lib.validate(cfg)


def test_a_workdir_recorded_with_old_evaluator_names_still_resumes(tmp_path):
  """A config.json written when evaluators were chosen with ``type``, the
  k-NN / re-ID cut-offs were ``k`` / ``ranks`` and ``loss_lr_scale`` did not
  exist: the run resumes (train) and
  re-evaluates (tools.evaluate) as if it said ``name`` and ``ks``."""
  from experiments.tools import evaluate
  cfg = test_config.get_config()
  with cfg.unlocked():
    cfg.num_steps = 2
    cfg.raw_baseline = False
    cfg.evals["seen_knn"] = dict(name="knn", query="seen", gallery="train", ks=(1, 3))
  workdir = str(tmp_path / "w")
  config_lib.claim_workdir(cfg, workdir, fresh=False)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    saved = json.load(f)
  for spec in saved["evals"].values():
    spec["type"] = spec.pop("name")
  saved["evals"]["seen_knn"]["k"] = saved["evals"]["seen_knn"].pop("ks")
  del saved["loss_lr_scale"], saved["embed_chunk"]     # recorded before the fields existed
  with open(path, "w") as f:
    json.dump(saved, f)
  config_lib.claim_workdir(cfg, workdir, fresh=False)       # no "different config" refusal
  recorded = evaluate.recorded_config(workdir)
  assert recorded.evals.seen.name == "retrieval"
  assert recorded.evals.seen_knn.ks == (1, 3) and "k" not in recorded.evals.seen_knn
  assert recorded.loss_lr_scale == 1.0 and recorded.embed_chunk == 0


def test_switching_the_kind_of_data_keeps_the_one_augment_schema():
  """Arrays and image files read the same augment fields: a data switch keeps the
  file's augment section (it was dropped when the kinds had two schemas)."""
  cfg, file_cfg = test_config.get_config(), test_config.get_config()
  with cfg.unlocked(), file_cfg.unlocked():
    for c in (cfg, file_cfg):
      c.augment = {"max_shift": 1, "flip": True}
    cfg.data.name = "image_folder"
  resolved = config_lib.resolve_part_overrides(cfg, file_cfg, {"data.name": "image_folder"})
  assert dict(resolved.augment) == {"max_shift": 1, "flip": True}
  assert dict(resolved.data) == {"name": "image_folder"}
