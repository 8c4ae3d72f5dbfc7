"""Every paper recipe trains and evaluates end to end on a fixture in its dataset's
real layout, so the configs, the protocols, the streaming pipeline and the
evaluators they name fit together.

Shrunk to run in seconds on 2 CPU cores: 2 steps, small crops (the recipe's
resize / crop ratios kept), networks 1/16 as wide. TriNet keeps its ResNet-50;
the other recipes train a ResNet-18 with the recipe's other model settings (the
ResNet-50 train step alone takes about a minute to compile here). The three
MLRC recipes share one function (``mlrc_cub200.mlrc``), so Cars196 and SOP
check their data section, protocol and evaluator on the fixture, and CUB-200
trains.
"""

import importlib
import os

import protocol_fixtures as fixtures
import pytest

import metric_learning as ml

from experiments import config as config_lib
from experiments import train


def _shrink(cfg, *, size=(32, 32)):
  """The recipe's parts and settings, at a size that runs in seconds on 2 cores."""
  cfg.num_steps = 2
  cfg.log_every = 1
  cfg.eval_every = 0
  cfg.checkpoint_every = 2
  cfg.eval_batch_size = 8
  cfg.workers = 0
  cfg.progress_bar = False
  cfg.model.base_width = 4
  cfg.sampler.p, cfg.sampler.k = 2, cfg.sampler.k
  h, w = size
  scale = lambda s: None if s is None else (
      (round(s[0] * h / cfg.augment.size[0]), round(s[1] * w / cfg.augment.size[1]))
      if isinstance(s, (tuple, list)) else s)
  for key in ("resize", "eval_resize"):
    if cfg.augment.get(key) is not None:
      cfg.augment[key] = scale(tuple(cfg.augment[key]))
  cfg.augment.size = (h, w)
  return cfg


def _run(name, tmp_path, *, size=(32, 32), model=None, **data):
  cfg = _shrink(importlib.import_module(f"experiments.configs.{name}").get_config(),
                size=size)
  if model:
    cfg.model.name = model
  for k, v in data.items():
    cfg.data[k] = str(v)
  return train.train_and_evaluate(cfg, str(tmp_path / "run")), cfg


def _unit(summary, *keys):
  for key in keys:
    assert 0.0 <= summary[key] <= 1.0, (key, summary[key])


@pytest.mark.slow
def test_trinet_market1501_recipe(tmp_path):
  root = fixtures.make_market1501(str(tmp_path / "Market-1501"), train_ids=3, test_ids=3)
  summary, cfg = _run("trinet_market1501", tmp_path, size=(32, 16), path=root)
  assert cfg.augment.resize == (36, 18) and cfg.augment.tta == "five_crop_flip"
  _unit(summary, "reid/cmc_rank_1", "reid/mean_average_precision", "reid/minp",
        "reid_rerank/cmc_rank_1", "reid_rerank/mean_average_precision", "reid_rerank/minp")
  assert summary["steps"] == 2 and summary["reid/num_queries"] >= 1
  assert summary["reid_rerank/num_queries"] == summary["reid/num_queries"]


@pytest.mark.slow
def test_mlrc_cub200_recipe(tmp_path):
  root = fixtures.make_cub200(str(tmp_path / "data"))
  summary, cfg = _run("mlrc_cub200", tmp_path, path=root, model="resnet18")
  assert cfg.model.freeze_batch_norm and cfg.loss.reduction == "mean_nonzero"
  _unit(summary, "test/map_at_r", "test/r_precision", "test/precision_at_1")
  assert summary["steps"] == 2
  # The outputs follow the split its evaluator declares ("test"), not fixed names.
  run = tmp_path / "run"
  for name in ("embedding_map", "distances", "curves", "retrieval_grid"):
    assert (run / "plots" / f"{name}.png").stat().st_size > 0, name
  index = ml.index.EmbeddingIndex.load(str(run / "index.npz"))
  assert len(index.labels) > 0 and index.model["step"] == 2


@pytest.mark.parametrize("name,make,margin", [("mlrc_cars196", fixtures.make_cars196, 0.1190),
                                              ("mlrc_sop", fixtures.make_sop, 0.0451)])
def test_mlrc_cars_and_sop_recipes_read_their_fixture(name, make, margin, tmp_path):
  from metric_learning.data import pipeline
  from metric_learning.data import registry
  from metric_learning.data import sampler as sampler_lib
  from metric_learning.data import transforms
  cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
  cfg.data.path = make(str(tmp_path / "data"))
  config_lib.validate(cfg)
  assert cfg.loss.margin == margin and cfg.sampler.p * cfg.sampler.k == 32
  splits = registry.create(cfg.data.name, **{k: v for k, v in cfg.data.items() if k != "name"})
  assert set(splits) == {"train", "test"}
  assert not set(splits["train"].labels) & set(splits["test"].labels)   # class-disjoint
  for spec in cfg.evals.values():
    assert spec["split"] in splits
  sampler = sampler_lib.PKSampler(splits["train"].labels, p=2, k=cfg.sampler.k, seed=0)
  transform = transforms.Transform(**{**cfg.augment, "size": (32, 32),
                                      "eval_resize": (36, 36)})
  batch = next(pipeline.train_batches(splits["train"], sampler, transform, seed=0,
                                      start_step=0, num_steps=1))
  assert batch["inputs"].shape == (8, 32, 32, 3) and batch["inputs"].dtype.name == "uint8"


@pytest.mark.slow
def test_inshop_recipe(tmp_path):
  root = fixtures.make_inshop(str(tmp_path / "inshop"))
  summary, _ = _run("inshop", tmp_path, path=root, model="resnet18")
  _unit(summary, "inshop/recall_at_1", "inshop/map_at_r")


@pytest.mark.slow
def test_lfw_verification_recipe(tmp_path):
  lfw = fixtures.make_lfw(str(tmp_path / "lfw"))
  faces = fixtures.make_image_folder(str(tmp_path / "faces"), classes=4, per_class=3)
  summary, _ = _run("lfw_verification", tmp_path, path=lfw, train_path=faces,
                    model="resnet18")
  _unit(summary, "verification/lfw_accuracy", "verification/roc_auc")
  assert os.path.exists(tmp_path / "run" / "summary.json")
