"""End to end: the test config trains, writes every artefact, resumes, and refuses mistakes."""

import importlib
import json
import os

import numpy as np
import pytest

from experiments import config as config_lib
from experiments import train
from experiments.configs import default as default_config
from experiments.configs import test as test_config
from metric_learning import evaluators
from metric_learning import models
from metric_learning.data import registry as data_registry
from metric_learning.losses import presets
from metric_learning.losses import registry as loss_registry
from metric_learning.training import optim


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = train.train_and_evaluate(test_config.get_config(), workdir)
  return workdir, summary


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_every_file_of_a_run_is_named_by_the_run_directory_module(run):
  """One module owns the run directory: a run writes nothing it does not name,
  and a temporary file of an atomic write never stays behind."""
  from metric_learning.training import rundir
  workdir, _ = run
  assert set(os.listdir(workdir)) == set(rundir.FILES + rundir.FOLDERS) - {rundir.EVALS}
  with pytest.raises(ValueError, match="'notes.txt' is not a file of a run directory"):
    rundir.RunDir(workdir).path("notes.txt")
  again = rundir.RunDir(workdir).read_json(rundir.SUMMARY)
  assert again["steps"] == 6 and not any(f.endswith(".tmp") for f in os.listdir(workdir))


def test_writes_checkpoints_events_metrics_plots_and_summary(run):
  workdir, summary = run
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert len([f for f in events if f.startswith("events.out.tfevents")]) == 1
  rows = _rows(workdir)
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6]
  assert any("eval/unseen/map_at_r" in r for r in rows)
  stats = [r for r in rows if "train/active_anchor_fraction" in r]
  assert [r["step"] for r in stats] == [2, 4, 6]
  assert all(0 <= r["train/valid_anchor_fraction"] <= 1 for r in stats)
  for name in ("embedding_map", "distances", "curves", "retrieval_grid"):
    assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 1000
  with open(os.path.join(workdir, "summary.json")) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(summary))
  for key in ("seen/map_at_r", "seen/precision_at_1", "unseen/map_at_r",
              "seen_clustering/nmi", "unseen_clustering/ami", "seen_knn/accuracy_at_1",
              "unseen_fewshot/5way_1shot_accuracy", "unseen_fewshot/5way_5shot_ci95",
              "unseen_verification/roc_auc", "unseen_verification/lfw_accuracy",
              "raw/seen/map_at_r", "raw/unseen/map_at_r", "steps", "wall_time_s"):
    assert key in written, key
  assert written["steps"] == 6
  # The raw-pixel baseline of the split: seen 0.675, unseen 0.611.
  assert written["raw/seen/map_at_r"] == pytest.approx(0.675, abs=1e-3)
  assert written["raw/unseen/map_at_r"] == pytest.approx(0.611, abs=1e-3)


def test_tensorboard_reads_the_model_and_the_raw_baseline(run):
  from tensorboard.backend.event_processing import event_accumulator
  workdir, summary = run
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  tags = set(events.Reload().Tags()["scalars"])
  for key in ("train/loss", "eval/unseen/map_at_r", "raw/unseen/map_at_r", "raw/seen/map_at_r"):
    assert key in tags, key
  raw = events.Scalars("raw/unseen/map_at_r")
  assert [e.step for e in raw] == [6]
  assert raw[0].value == pytest.approx(summary["raw/unseen/map_at_r"], rel=1e-6)
  assert summary["skipped_bad_files"] == 0


def test_workdir_records_config_provenance_model_and_label_names(run):
  workdir, _ = run
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  resolved, defaults = config_lib.resolve(test_config.get_config())
  assert saved == resolved and config_lib.config_differences(saved, resolved) == []
  # Every setting in effect is recorded, the parts' defaults included.
  assert "loss.reduction" in defaults and saved["loss"]["reduction"] == "mean"
  assert saved["model"]["dropout"] == 0.0 and saved["optimizer"]["b1"] == 0.9
  assert saved["evals"]["seen"]["ks"] == [1, 2, 4, 8]
  for section in ("data", "model", "loss"):
    registry = {"data": data_registry, "model": models, "loss": loss_registry}[section]
    assert set(registry.arguments(saved[section]["name"])) <= set(saved[section]), section
  with open(os.path.join(workdir, "provenance.json")) as f:
    prov = json.load(f)
  assert prov["metric_learning_version"] and "git_commit" in prov
  with open(os.path.join(workdir, "labels.json")) as f:
    assert json.load(f) == {str(i): str(i) for i in range(10)}
  with open(os.path.join(workdir, "model.json")) as f:
    spec = json.load(f)
  assert spec["name"] == "mlp" and set(spec["settings"]) == set(models.arguments("mlp"))


def test_enrollment_index_holds_seen_and_unseen_classes_with_names(run):
  from metric_learning.index import EmbeddingIndex
  index = EmbeddingIndex.load(os.path.join(run[0], "index.npz"))
  assert set(np.unique(index.labels)) == set(range(10))
  assert index.name_of(7) == "7"


def test_resume_from_an_earlier_checkpoint_ends_exactly_like_the_uninterrupted_run(
    run, tmp_path):
  """Simulate a kill after step 3: only checkpoint 3 survives; rerun the same command."""
  import shutil
  workdir, summary = run
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  shutil.rmtree(os.path.join(copy, "checkpoints", "6"))
  resumed = train.train_and_evaluate(test_config.get_config(), copy)
  assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
  for key, value in summary.items():
    if key not in ("wall_time_s", "resumed_from_step"):
      assert resumed[key] == value, key
  # No step logged twice, one TensorBoard event file, wall time cumulative.
  steps = [r["step"] for r in _rows(copy) if "train/loss" in r]
  assert steps == [2, 4, 6]
  evals = [r["step"] for r in _rows(copy) if "eval/seen/map_at_r" in r]
  assert evals == sorted(set(evals))
  events = os.listdir(os.path.join(copy, "tensorboard"))
  assert len([f for f in events if f.startswith("events.out.tfevents")]) == 1
  with open(os.path.join(copy, "progress.json")) as f:
    before = json.load(f)["3"]
  assert resumed["wall_time_s"] > before


def test_finished_run_restarts_at_its_last_step(run):
  workdir, summary = run
  again = train.train_and_evaluate(test_config.get_config(), workdir)
  assert again["resumed_from_step"] == 6 and again["steps"] == 6
  assert again["seen/map_at_r"] == summary["seen/map_at_r"]


def test_a_changed_config_in_a_used_workdir_is_refused_and_fresh_moves_it_aside(run, tmp_path):
  import shutil
  copy = str(tmp_path / "used")
  shutil.copytree(run[0], copy)
  before = sorted(os.listdir(copy))
  cfg = test_config.get_config()
  cfg.loss = {"name": "multi_similarity_loss"}
  cfg.num_steps = 8
  with pytest.raises(train.ConfigError, match=r"different config \(.*loss.margin: 0.2 → "
                     r"'<absent>';.* loss.name: 'batch_hard_triplet_loss' → "
                     r"'multi_similarity_loss';.* num_steps: 6 → 8\)"):
    train.train_and_evaluate(cfg, copy)
  assert sorted(os.listdir(copy)) == before            # nothing written
  cfg.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  summary = train.train_and_evaluate(cfg, copy, fresh=True)
  assert summary["resumed_from_step"] == 0 and summary["steps"] == 8
  aside = [d for d in os.listdir(tmp_path) if d.startswith("used.old-")]
  assert len(aside) == 1 and sorted(os.listdir(tmp_path / aside[0])) == before


def _light(cfg):
  """The test config with one cheap evaluator, for runs that check one part each."""
  cfg.num_steps, cfg.log_every, cfg.eval_every, cfg.checkpoint_every = 2, 1, 0, 2
  cfg.evals = {"seen": {"name": "retrieval", "split": "seen"}}
  cfg.raw_baseline, cfg.plots = False, False
  return cfg


def _by_name(section, name):
  """What ``--config.SECTION.name=NAME`` alone gives (the launcher's resolution)."""
  cfg = test_config.get_config()
  file_cfg = test_config.get_config()
  cfg[section].name = name
  return _light(config_lib.resolve_part_overrides(cfg, file_cfg, {f"{section}.name": name}))


# A preset is its loss with pinned values, registered by one loop: the developer
# loop trains every loss and one preset, the README command every preset too.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow if n in sorted(presets.NAMES)[1:] else ())
    for n in sorted(loss_registry.LOSSES)])
def test_every_loss_and_preset_trains_by_name_alone(name, tmp_path):
  summary = train.train_and_evaluate(_by_name("loss", name), str(tmp_path))
  assert summary["steps"] == 2 and 0 <= summary["seen/map_at_r"] <= 1
  assert summary["skipped_updates"] == 0


# One name per model class: resnet34 / resnet50 and vit_b16 are the classes of
# resnet18 and vit_s16 at other sizes (their layers are checked against
# torchvision's and timm's parameter counts in models_test.py), and resnet50
# trains end to end in the TriNet recipe test (recipes_test.py).
ONE_NAME_PER_CLASS = ["mlp", "cnn", "resnet18", "vit_s16", "efficientnet_lite0"]


def test_one_name_per_model_class_covers_every_class():
  classes = lambda names: {getattr(models.MODELS[n], "func", models.MODELS[n]) for n in names}
  assert classes(ONE_NAME_PER_CLASS) == classes(models.MODELS)


@pytest.mark.slow
@pytest.mark.values_only      # two steps of a deep model: compiling, not running (conftest.py)
@pytest.mark.parametrize("name", ONE_NAME_PER_CLASS)
def test_every_model_trains_by_name_alone(name, tmp_path):
  cfg = _by_name("model", name)
  if name.startswith("vit"):
    # A ViT's 16×16 patches need inputs of at least 16×16: the digits upscaled 2×.
    full = data_registry.create("digits")
    images = np.concatenate([full[s].inputs for s in ("train", "seen", "unseen")])
    labels = np.concatenate([full[s].labels for s in ("train", "seen", "unseen")])
    path = str(tmp_path / "digits16.npz")
    np.savez(path, inputs=np.kron(images, np.ones((1, 2, 2, 1), np.float32)), labels=labels)
    cfg.data = {"name": "npz", "path": path}
  summary = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert summary["steps"] == 2 and 0 <= summary["seen/map_at_r"] <= 1


def test_every_public_loss_is_selectable_by_name():
  import metric_learning as ml
  # Not in-batch losses: they take explicit triplets or a miner's selection,
  # not (embeddings, labels), so a config cannot choose them.
  explicit = {"triplet_margin_loss", "selected_triplet_loss"}
  public = {n for n in ml.__all__ if n.endswith("_loss")} - explicit
  assert public <= set(loss_registry.LOSSES), public - set(loss_registry.LOSSES)
  assert set(ml.presets.NAMES) <= set(loss_registry.LOSSES)


def test_a_preset_keeps_its_pinned_values_unless_set():
  assert loss_registry.arguments("pml")["margin"] == 0.05
  assert loss_registry.arguments("hermans")["soft"] is True
  cfg = _by_name("loss", "pml")
  assert dict(cfg.loss) == {"name": "pml"}
  cfg = test_config.get_config()
  cfg.loss.name, cfg.loss.margin = "pml", 0.3
  resolved = config_lib.resolve_part_overrides(cfg, test_config.get_config(),
                                             {"loss.name": "pml", "loss.margin": 0.3})
  assert dict(resolved.loss) == {"name": "pml", "margin": 0.3}


@pytest.mark.parametrize("section,table,arguments", [
    ("loss", loss_registry.LOSSES, loss_registry.arguments),
    ("model", models.MODELS, models.arguments),
    ("data", data_registry.DATASETS, data_registry.arguments),
    ("optimizer", optim.OPTIMIZERS, optim.optimizer_arguments),
    ("schedule", optim.SCHEDULES, optim.schedule_arguments),
])
def test_a_field_the_part_does_not_take_fails_before_training_naming_both(
    section, table, arguments, tmp_path):
  for name in table:
    cfg = test_config.get_config()
    cfg[section] = {"name": name, "not_an_argument": 1}
    if section == "optimizer":
      cfg[section]["learning_rate"] = 1e-3
    with pytest.raises(train.ConfigError, match=(
        rf"config\.{section}\.not_an_argument is not an argument of {section} '{name}'")):
      train.train_and_evaluate(cfg, str(tmp_path / section))
    assert "not_an_argument" not in arguments(name)
  assert not (tmp_path / section).exists()


def test_unknown_names_fail_fast_listing_the_valid_ones(tmp_path):
  for section, value in (("loss", "hinge"), ("model", "vit"), ("data", "imagenet"),
                         ("optimizer", "lamb2"), ("schedule", "linear")):
    cfg = test_config.get_config()
    cfg[section].name = value
    with pytest.raises(train.ConfigError, match=rf"^config\.{section}\.name: unknown "
                       rf"\w+ '{value}'; "):
      train.train_and_evaluate(cfg, str(tmp_path / section))
  cfg = test_config.get_config()
  cfg.evals.seen.name = "recall"
  with pytest.raises(train.ConfigError, match="config.evals.seen: .*unknown evaluator"):
    train.train_and_evaluate(cfg, str(tmp_path / "evals"))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("field,value,match", [
    ("num_steps", -5, r"config\.num_steps must be >= 1; got -5"),
    ("log_every", 0, r"config\.log_every must be >= 1; got 0"),
    ("eval_every", -1, r"config\.eval_every must be >= 0"),
    ("parallel", "ring", r"config\.parallel must be one of"),
    ("nonfinite", "ignore", r"config\.nonfinite must be one of"),
    ("keep_checkpoints", 0, r"config\.keep_checkpoints must be >= 1"),
    ("loss_lr_scale", 0.0, r"config\.loss_lr_scale must be a number > 0"),
    ("embed_chunk", -1, r"config\.embed_chunk must be >= 0"),
    ("embed_chunk", 5, r"config\.embed_chunk=5 must divide the batch of 16 rows"),
    ("loss_lr_scale", 10.0, r"config\.loss_lr_scale sets the learning rate of a proxy .*"
                            r"loss 'batch_hard_triplet_loss' has none"),
])
def test_bad_scalar_fields_fail_naming_the_field(field, value, match, tmp_path):
  cfg = test_config.get_config()
  cfg[field] = value
  with pytest.raises(train.ConfigError, match=match):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_unknown_top_level_and_sampler_fields_fail(tmp_path):
  cfg = test_config.get_config()
  cfg.num_step = 3
  with pytest.raises(train.ConfigError, match=r"config\.num_step is not a field"):
    train.train_and_evaluate(cfg, str(tmp_path))
  cfg = test_config.get_config()
  cfg.sampler.k = 1
  with pytest.raises(train.ConfigError, match=r"config\.sampler needs p >= 1 and k >= 2"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_missing_dataset_path_says_what_layout_was_expected(tmp_path):
  cfg = test_config.get_config()
  cfg.data = {"name": "image_folder", "path": str(tmp_path / "nope")}
  cfg.augment = {"size": (8, 8)}
  with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))


def test_default_config_is_the_documented_experiment():
  cfg = default_config.get_config()
  assert cfg.data.name == "digits" and tuple(cfg.data.seen_classes) == (0, 1, 2, 3, 4)
  assert cfg.data.test_fraction == 0.3 and cfg.data.split_seed == 0
  config_lib.validate(cfg)


RECIPES = ["trinet_market1501", "mlrc_cub200", "mlrc_cars196", "mlrc_sop", "inshop",
           "lfw_verification"]
FASHION = ["fashion_mnist", "fashion_mnist_ms", "fashion_mnist_proxy", "fashion_mnist_efficientnet"]
CONFIGS = ["default", "test", "mnist_npz", *FASHION, *RECIPES]


def test_every_config_file_is_listed():
  folder = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")
  files = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
  assert files == set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_validates_and_its_evaluators_exist(name):
  cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
  config_lib.validate(cfg)
  for spec in cfg.evals.values():
    assert spec["name"] in evaluators.EVALUATORS


def test_an_idx_config_can_keep_some_training_classes_as_stand_in_unseen_classes(tmp_path):
  """The validation split fashion_mnist_ms.py was chosen on, as a config gives it:
  data.classes=(0, 1, 2, 3, 4), data.seen_classes=(0, 1, 2)."""
  from tests import protocol_fixtures as fx
  root = fx.make_idx(str(tmp_path / "idx"))
  splits = data_registry.create("idx", path=root, classes=(0, 1, 2, 3, 4),
                                seen_classes=(0, 1, 2), unseen_from="all")
  assert {k: sorted(set(v.labels.tolist())) for k, v in splits.items()} == {
      "train": [0, 1, 2], "seen": [0, 1, 2], "unseen": [3, 4]}
  assert data_registry.arguments("idx")["classes"] is None


def test_the_multi_similarity_recipe_changes_only_the_loss_and_keeps_the_paper_settings():
  """fashion_mnist_ms.py's docstring: fashion_mnist.py with multi-similarity at its
  paper's settings (alpha 2, beta 50, base 0.5, miner epsilon 0.1)."""
  from experiments.configs import fashion_mnist, fashion_mnist_ms
  ms, base = fashion_mnist_ms.get_config().to_dict(), fashion_mnist.get_config().to_dict()
  assert ms.pop("loss") == {"name": "multi_similarity_loss"}
  base.pop("loss")
  assert ms == base
  args = loss_registry.arguments("multi_similarity_loss")
  assert {k: args[k] for k in ("alpha", "beta", "base", "epsilon")} == {
      "alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1}


@pytest.mark.parametrize("name", [*RECIPES, "mnist_npz", *FASHION])
def test_dataset_configs_fail_clearly_without_data(name, tmp_path):
  cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
  cfg.data.path = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="expected"):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))


def test_mnist_npz_config_trains_on_a_generated_file(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "mnist.npz")
  labels = np.repeat(np.arange(10), 12)
  np.savez(path, inputs=rng.integers(0, 255, (120, 28, 28), dtype=np.uint8), labels=labels)
  from experiments.configs import mnist_npz
  cfg = _light(mnist_npz.get_config())
  cfg.data.path = path
  cfg.model.widths = (4, 8)
  cfg.sampler.p, cfg.sampler.k = 3, 4
  cfg.progress_bar = False
  summary = train.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert summary["steps"] == 2 and 0 <= summary["seen/map_at_r"] <= 1


@pytest.mark.slow
@pytest.mark.values_only      # two steps of a deep model: compiling, not running (conftest.py)
def test_the_efficientnet_recipe_trains_its_head_alone_on_resized_idx_images(tmp_path):
  """fashion_mnist_efficientnet.py on generated IDX files (a narrow network, no weights)."""
  from experiments.configs import fashion_mnist_efficientnet
  from metric_learning.training import embedder
  from tests import protocol_fixtures as fx
  cfg = _light(fashion_mnist_efficientnet.get_config())
  cfg.data.path = fx.make_idx(str(tmp_path / "idx"), train_per_class=4, test_per_class=2)
  cfg.data.resize = (20, 20)
  cfg.model.weights = None
  cfg.model.width_multiplier = 0.25
  cfg.sampler.p, cfg.sampler.k = 3, 4
  cfg.progress_bar = False
  initial = models.create(input_shape=(20, 20, 1), seed=cfg.seed, **{
      k: v for k, v in cfg.model.items() if k != "name"}, name="efficientnet_lite0")
  summary = train.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert summary["steps"] == 2 and 0 <= summary["seen/map_at_r"] <= 1
  with open(tmp_path / "w" / "config.json") as f:
    recorded = json.load(f)
  assert recorded["data"]["resize"] == [20, 20] and recorded["model"]["freeze_backbone"]
  trained, _ = embedder.load_model(str(tmp_path / "w"), None)
  x = np.random.default_rng(0).random((3, 20, 20, 1), dtype=np.float32)
  trained.eval()
  initial.eval()
  np.testing.assert_array_equal(trained.features(x), initial.features(x))   # frozen


def test_unseen_sweep_variants_all_apply_to_the_default_config():
  from experiments import unseen_sweep
  for name, edit in unseen_sweep.variants().items():
    cfg = default_config.get_config()
    edit(cfg)
    assert "," not in name          # --only is a comma-separated list
    config_lib.validate(cfg)


def test_proxy_losses_train_their_proxies_and_load_embedder_returns_the_encoder(tmp_path):
  from metric_learning import training
  from metric_learning.index import EmbeddingIndex
  from metric_learning.training import checkpoint
  cfg = _by_name("loss", "proxy_anchor_loss")
  cfg.plots = True        # writes index.npz
  workdir = str(tmp_path / "base")
  train.train_and_evaluate(cfg, workdir)
  with open(os.path.join(workdir, "model.json")) as f:
    assert json.load(f)["proxies"] == [5, 8, 1]     # 5 training classes, 8-D
  import orbax.checkpoint as ocp
  from flax import nnx

  from metric_learning.models import Proxies
  mgr = checkpoint.manager(workdir)
  stored = mgr.restore(2, args=ocp.args.PyTreeRestore())
  mgr.close()
  trained = np.asarray(stored["params"]["proxies"]["value"]["value"])
  initial = np.asarray(Proxies(5, 8, rngs=nnx.Rngs(cfg.seed + 1))())
  assert trained.shape == initial.shape == (5, 8)
  assert not np.allclose(trained, initial)            # the proxies were trained
  # config.loss_lr_scale: the proxies (only) train at 100x the rate. Adam's
  # steps are about the learning rate whatever the gradient, so they move ~100x
  # as far while the encoder's first update is the same.
  scaled_dir = str(tmp_path / "scaled")
  with cfg.unlocked():
    cfg.loss_lr_scale = 100.0
    cfg.plots = False
  train.train_and_evaluate(cfg, scaled_dir)
  mgr = checkpoint.manager(scaled_dir)
  scaled = mgr.restore(2, args=ocp.args.PyTreeRestore())
  mgr.close()
  moved = np.abs(np.asarray(scaled["params"]["proxies"]["value"]["value"]) - initial).mean()
  assert 30 < moved / np.abs(trained - initial).mean() < 300
  embed = training.load_embedder(workdir)
  index = EmbeddingIndex.load(os.path.join(workdir, "index.npz"))
  seen = data_registry.create("digits")["seen"]
  np.testing.assert_allclose(embed(seen.inputs), index.embeddings[:len(seen)], atol=1e-5)


def test_gradient_caching_trains_like_the_whole_batch_at_once(tmp_path):
  """config.embed_chunk: the MLP (no BatchNorm, no dropout) gets the same
  gradients chunk by chunk, so the same run up to rounding."""
  summaries = []
  for chunk in (0, 4):
    cfg = _light(test_config.get_config())
    cfg.embed_chunk = chunk
    summaries.append(train.train_and_evaluate(cfg, str(tmp_path / f"chunk{chunk}")))
  assert summaries[1]["seen/map_at_r"] == pytest.approx(summaries[0]["seen/map_at_r"], abs=1e-4)
  losses = []
  for chunk in (0, 4):
    with open(tmp_path / f"chunk{chunk}" / "metrics.jsonl") as f:
      losses.append([r["train/loss"] for r in map(json.loads, f) if "train/loss" in r])
  assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-5)
  with open(tmp_path / "chunk4" / "config.json") as f:
    assert json.load(f)["embed_chunk"] == 4


def test_bfloat16_encoder_trains_with_float32_losses(tmp_path):
  """config.model.dtype=bfloat16 computes the encoder in bf16; the embeddings the
  loss sees, and so the loss, are float32."""
  cfg = _light(test_config.get_config())
  cfg.model = dict(name="cnn", widths=(8, 16), embedding_dim=8, dtype="bfloat16")
  summary = train.train_and_evaluate(cfg, str(tmp_path / "bf16"))
  assert summary["skipped_updates"] == 0 and 0 <= summary["seen/map_at_r"] <= 1
  model = models.create("cnn", (8, 8, 1), widths=(8, 16), embedding_dim=8, dtype="bfloat16")
  x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
  assert model(x).dtype == np.float32
  import jax
  model.eval()
  text = str(jax.make_jaxpr(lambda v: model.features(v))(x))
  assert "bf16[4,8,8,8]" in text           # the convolutions run in bfloat16
