"""One registry per kind of part; every public part is in its registry; bad names and
settings fail naming them."""

import functools
import inspect

import jax
import numpy as np
import optax
import pytest

import metric_learning as ml
from metric_learning import evaluators
from metric_learning import models
from metric_learning.data import registry as data_registry
from metric_learning.losses import registry as loss_registry
from metric_learning.training import optim


def test_every_public_model_class_is_registered():
  registered = {getattr(v, "func", v) for v in models.MODELS.values()}
  assert {models.MLP, models.CNN, models.ResNet, models.VisionTransformer,
          models.EfficientNetLite} <= registered


def test_every_public_dataset_loader_is_registered():
  import importlib
  import inspect
  import pkgutil

  from metric_learning.data import protocols
  # Every public function defined in a protocols module is exported by the package...
  defined = set()
  for info in pkgutil.iter_modules(protocols.__path__):
    module = importlib.import_module(f"{protocols.__name__}.{info.name}")
    defined |= {n for n, f in vars(module).items() if inspect.isfunction(f)
                and f.__module__ == module.__name__ and not n.startswith("_")}
  assert defined == set(protocols.__all__)
  # ... and every exported protocol (all but the IDX reader) is a registered loader.
  public = set(protocols.__all__) - {"read_idx"}
  loaders = {"digits", "npz"} | public
  assert loaders == set(data_registry.DATASETS)
  assert data_registry.STREAMED == set(data_registry.DATASETS) - {"digits", "npz", "idx"}


def test_every_evaluator_module_is_registered():
  import pkgutil
  modules = {m.name for m in pkgutil.iter_modules(evaluators.__path__)} - {"base"}
  assert modules == set(evaluators.EVALUATORS)


@pytest.mark.parametrize("name", sorted(loss_registry.LOSSES))
def test_loss_arguments_are_the_functions_keywords_without_runtime_ones(name):
  args = loss_registry.arguments(name)
  assert not set(args) & set(loss_registry.RUNTIME_ARGUMENTS)
  loss = loss_registry.create(name, **{k: v for k, v in args.items() if k != "block_size"})
  x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  y = np.repeat(np.arange(4), 2)
  arrays = ()
  per_class = loss_registry.proxies_per_class(name, {})
  if per_class is not None:       # proxy losses also take [classes * per_class, dim]
    arrays = (np.random.default_rng(1).normal(size=(4 * per_class, 3)).astype(np.float32),)
  value = float(loss(x, y, *arrays))
  fn = ml.presets.get(name) if name in ml.presets.NAMES else loss_registry.LOSSES[name]
  params = inspect.signature(getattr(fn, "loss", fn)).parameters
  required = {k: v for k, v in args.items()      # what the function itself cannot default
              if k in params and params[k].default is inspect.Parameter.empty}
  assert set(required) <= ({"temperature", "bias"} if name == "sigmoid_loss" else set())
  default = fn(x, y, *arrays, **required)
  assert np.isfinite(value) and value == pytest.approx(float(default), rel=1e-6)


# The one keyword order every loss follows after its hyper-parameters.
CALL_ARGUMENTS = ("pairs", "where", "reduction", "block_size", "ref_embeddings", "ref_labels",
                  "ref_where", "axis_name")


def _signature_problems(fn, proxies: bool) -> list[str]:
  params = list(inspect.signature(fn).parameters.values())
  names = [p.name for p in params]
  problems = []
  positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
  expected = ["embeddings", "labels"] + (["proxies"] if proxies else [])
  if positional != expected:
    problems.append(f"positional arguments {positional}, expected {expected}")
  tail = [n for n in names if n in CALL_ARGUMENTS]
  if tail != [n for n in CALL_ARGUMENTS if n in tail]:
    problems.append(f"call arguments in the order {tail}, expected {list(CALL_ARGUMENTS)}")
  if tail and any(n not in CALL_ARGUMENTS for n in names[names.index(tail[0]):]):
    problems.append(f"a hyper-parameter after {tail[0]!r}: {names}")
  if proxies is False and "where" not in names:
    problems.append("no where argument")
  return problems


@pytest.mark.parametrize("name", sorted(loss_registry.LOSSES.names()))
def test_every_loss_takes_its_arguments_in_one_order(name):
  """``(embeddings, labels[, proxies], *, hyper-parameters..., pairs, where, reduction,
  block_size, ref_embeddings, ref_labels, ref_where, axis_name)``: one shape
  for every loss, one name for the proxy array."""
  fn = loss_registry.LOSSES[name]
  if name in ml.presets.NAMES:
    fn = fn.loss
  proxies = loss_registry.LOSSES.traits(name).get("proxies", False)
  assert _signature_problems(fn, proxies) == []


def test_the_signature_check_finds_a_wrong_order():
  def bad(embeddings, labels, *, where=None, margin=0.1, reduction="mean"):
    del embeddings, labels, where, margin, reduction
  def swapped(embeddings, labels, *, margin=0.1, reduction="mean", where=None):
    del embeddings, labels, where, margin, reduction
  def weights(embeddings, labels, weights, *, where=None):
    del embeddings, labels, weights, where
  assert len(_signature_problems(bad, False)) == 1
  assert len(_signature_problems(swapped, False)) == 1
  assert len(_signature_problems(weights, True)) == 1


def test_loss_registry_errors_name_the_setting_and_the_loss():
  with pytest.raises(ValueError, match=r"loss.margin is not an argument of loss "
                     r"'multi_similarity_loss'; its arguments are \['alpha'"):
    loss_registry.create("multi_similarity_loss", margin=0.1)
  with pytest.raises(ValueError, match=r"loss name: unknown loss 'hinge'; there are \d+ loss "
                     r"names, angular_loss, "):
    loss_registry.create("hinge")
  with pytest.raises(ValueError, match=r"unknown loss 'batch_hard_triplet_los'; did you mean "
                     r"'batch_hard_triplet_loss'\?$"):
    loss_registry.create("batch_hard_triplet_los")
  with pytest.raises(ValueError, match=r"loss.marginn is not an argument of loss 'contrastive_loss'; "
                     r"did you mean loss.margin"):
    loss_registry.create("contrastive_loss", marginn=0.1)


def test_model_registry_errors_and_defaults():
  assert models.arguments("resnet18")["embedding_dim"] == 128
  assert "stages" not in models.arguments("resnet50")        # fixed by the name
  with pytest.raises(ValueError, match=r"model.dropout is not an argument of model 'cnn'"):
    models.create("cnn", (8, 8, 1), dropout=0.1)
  with pytest.raises(ValueError, match=r"unknown model 'vit'; did you mean 'vit_[sb]16'\?"):
    models.create("vit", (8, 8, 1))


def test_data_registry_errors_and_default_split():
  with pytest.raises(ValueError, match=r"data.path is not an argument of dataset 'digits'"):
    data_registry.create("digits", path="x")
  with pytest.raises(ValueError, match=r"data name: unknown dataset 'imagenet'"):
    data_registry.create("imagenet")


def test_schedules_match_their_definitions():
  warm = optim.make_schedule("constant", learning_rate=1.0, num_steps=100, warmup_steps=10)
  assert [float(warm(s)) for s in (0, 5, 10, 99)] == [0.0, 0.5, 1.0, 1.0]
  cos = optim.make_schedule("cosine", learning_rate=1.0, num_steps=100, warmup_steps=0)
  assert float(cos(50)) == pytest.approx(0.5) and float(cos(100)) == pytest.approx(0.0)
  exp = optim.make_schedule("exponential", learning_rate=3e-4, num_steps=25000,
                            final_fraction=0.001, decay_begin=15000)
  assert float(exp(15000)) == pytest.approx(3e-4)
  assert float(exp(25000)) == pytest.approx(3e-7, rel=1e-4)
  assert float(exp(20000)) == pytest.approx(3e-4 * 0.001 ** 0.5, rel=1e-4)
  with pytest.raises(ValueError, match=r"schedule.gamma is not an argument of schedule 'cosine'"):
    optim.make_schedule("cosine", learning_rate=1.0, num_steps=10, gamma=0.1)


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_lr_scales_give_a_parameter_group_its_own_learning_rate(name):
  """Every optimizer, schedule and weight decay included: the scaled group moves
  exactly as the same optimizer with ``scale`` × the learning rate would move it,
  the rest exactly as without scales."""
  rng = np.random.default_rng(0)
  params = {"encoder": {"w": rng.standard_normal((3, 2)).astype(np.float32)},
            "proxies": {"value": rng.standard_normal((4, 2)).astype(np.float32)}}
  schedule = optim.make_schedule("cosine", learning_rate=0.01, num_steps=10, warmup_steps=2)
  tx = optim.make_optimizer(name, schedule, lr_scales={"proxies": 100.0})
  alone = {"encoder": optim.make_optimizer(name, schedule),
           "proxies": optim.make_optimizer(name, lambda s: 100.0 * schedule(s))}
  state = tx.init(params)
  states = {k: alone[k].init(params[k]) for k in params}
  for _ in range(4):
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    updates, state = tx.update(grads, state, params)
    for k in params:
      want, states[k] = alone[k].update(grads[k], states[k], params[k])
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-9),
                   updates[k], want)
    params = optax.apply_updates(params, updates)
  with pytest.raises(ValueError, match=r"lr_scales\['proxies'\] must be a number > 0; got 0"):
    optim.make_optimizer(name, 0.1, lr_scales={"proxies": 0})


def test_optimizers_are_optax_with_clipping():
  params = {"w": np.ones(3, np.float32)}
  grads = {"w": np.full(3, 10.0, np.float32)}
  tx = optim.make_optimizer("sgd", 1.0, grad_clip=1.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(1.0)
  assert "weight_decay" in optim.optimizer_arguments("adamw")
  with pytest.raises(ValueError, match=r"optimizer.weight_decay is not an argument of optimizer 'adam'"):
    optim.make_optimizer("adam", 1e-3, weight_decay=0.1)
  with pytest.raises(ValueError, match=r"optimizer name: unknown optimizer 'adagrad2'; the optimizer names are adam, adamw"):
    optim.make_optimizer("adagrad2", 1e-3)


def test_every_kind_of_part_uses_the_one_registry_mechanism():
  from metric_learning import registry
  from metric_learning.training import parallel
  for table in (loss_registry.LOSSES, models.MODELS, data_registry.DATASETS,
                optim.OPTIMIZERS, optim.SCHEDULES, evaluators.EVALUATORS, parallel.MODES):
    assert isinstance(table, registry.Registry) and len(table), table
    name = sorted(table)[0]
    with pytest.raises(ValueError, match=rf"unknown {table.kind} '{name}x'; did you mean "
                       rf"'{name}'\?"):
      table.lookup(name + "x")
  assert isinstance(models.MODELS["resnet50"], functools.partial)
  # Traits replace the parallel tables.
  assert data_registry.STREAMED == set(data_registry.DATASETS.names(streamed=True))
  assert loss_registry.proxies_per_class("subcenter_arcface_loss", {"sub_centers": 3}) == 3
  assert loss_registry.triplet_margin("hermans", {}) is None          # soft margin
  assert loss_registry.triplet_margin("pml", {}) == 0.05
  assert loss_registry.triplet_margin("contrastive_loss", {}) is None


def test_experiments_is_not_an_installed_package():
  import configparser
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(root, "setup.cfg"))
  assert cfg["options.packages.find"]["include"].split() == ["metric_learning*"]


def test_docstrings_cite_only_what_the_repository_contains():
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for folder in ("metric_learning", "experiments"):
    for dirpath, _, files in os.walk(os.path.join(root, folder)):
      for name in files:
        if name.endswith(".py"):
          with open(os.path.join(dirpath, name)) as f:
            text = f.read()
          for outside in ("DESIGN.md", "PEERS.md", "STYLE.md"):
            assert outside not in text, (name, outside)


def test_prng_keys_are_keyword_only_everywhere():
  import inspect
  for fn in (ml.mining.distance_weighted, ml.margin_loss):
    param = inspect.signature(fn).parameters["key"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__


def test_no_library_module_reads_a_config_or_flags():
  """Library code takes explicit arguments; only experiments/ reads configs and flags."""
  import os
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "metric_learning")
  for dirpath, _, files in os.walk(root):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(dirpath, name)) as f:
          text = f.read()
        for needle in ("ml_collections", "ConfigDict"):
          # _extras.py only names the packages of each extra, to say what to install.
          assert needle not in text or name == "_extras.py", (name, needle)
        if name == "pipeline.py":
          # The one exception: grain's worker machinery reads grain's own absl
          # flags; the pipeline only marks those as set to their defaults when no
          # command line was parsed, and reads no flag of its own.
          uses = [line.strip() for line in text.splitlines() if "flags." in line]
          assert all("grain_" in u or "FLAGS[name]" in u or "is_parsed" in u
                     or "for name in list(flags.FLAGS)" in u for u in uses), uses
        else:
          assert "from absl import flags" not in text, name
