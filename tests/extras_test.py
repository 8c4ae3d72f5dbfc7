"""The light core runs on the install requirements alone; every extra names its pip command.

Each check runs in a fresh subprocess whose import system refuses the
packages under test, as a machine without them would.
"""

import configparser
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from packaging.requirements import Requirement

from metric_learning import _extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_cfg():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  return cfg


def _requirements(text: str) -> list[Requirement]:
  return [Requirement(line.strip()) for line in text.strip().splitlines() if line.strip()]


def _closure(names) -> set[str]:
  """The installed distributions ``names`` need, transitively (no extras)."""
  seen, todo = set(), [n.lower().replace("_", "-") for n in names]
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    try:
      requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
      continue
    for text in requires:
      req = Requirement(text)
      if req.marker is None or req.marker.evaluate({"extra": ""}):
        todo.append(req.name.lower().replace("_", "-"))
  return seen


def _non_core_modules() -> list[str]:
  """Top-level modules of every installed distribution outside the core's closure."""
  core = _closure([r.name for r in _requirements(_setup_cfg()["options"]["install_requires"])])
  core |= {"metric-learning-jax", "pip", "setuptools", "wheel"}
  out = set()
  for module, dists in importlib.metadata.packages_distributions().items():
    if module.startswith("_") or module in sys.stdlib_module_names:
      continue
    if not any(d.lower().replace("_", "-") in core for d in dists):
      out.add(module)
  return sorted(out)


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})

    class Blocker(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None

    sys.meta_path.insert(0, Blocker())
    """)


def _run(blocked, body: str) -> dict:
  code = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(body)
  env = {**os.environ, "PYTHONPATH": ROOT}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_extras_table_matches_setup_cfg():
  extras = _setup_cfg()["options.extras_require"]
  for extra, modules in _extras.EXTRAS.items():
    declared = {r.name.lower() for r in _requirements(extras[extra])}
    assert {d.lower() for d in modules.values()} == declared, extra


@pytest.mark.slow
def test_core_runs_with_only_the_install_requirements():
  blocked = _non_core_modules()
  # The packages the issue names must be among those refused.
  assert {"flax", "optax", "sklearn", "grain", "matplotlib", "ml_collections",
          "flatbuffers"} <= set(blocked)
  out = _run(blocked, """
      import doctest, json, pkgutil
      import numpy as np
      import jax, jax.numpy as jnp
      import metric_learning as ml
      from metric_learning.losses import registry

      x = jax.random.normal(jax.random.key(0), (12, 6))
      y = jnp.arange(12) // 3
      ran = {}
      for name in sorted(registry.LOSSES):
        per_class = registry.proxies_per_class(name, {})
        loss = registry.create(name)
        args = (x, y) if per_class is None else (x, y, jnp.ones((4 * per_class, 6)))
        value, grad = jax.value_and_grad(lambda e: loss(e, *args[1:]))(x)
        ran[name] = bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))
      d = ml.pairwise_distances(x)
      sims = -d
      miners = {
          "batch_hard": ml.mining.batch_hard(d, y),
          "batch_all": ml.mining.batch_all(d, y),
          "semi_hard": ml.mining.semi_hard(d, y),
          "easy_positive": ml.mining.easy_positive(d, y),
          "distance_weighted": ml.mining.distance_weighted(d, y, key=jax.random.key(1), dim=6),
          "statistics": ml.mining.statistics(d, y),
          "pair_margin": ml.mining.pair_margin(d, y),
          "triplet_margin": ml.mining.triplet_margin(d, y),
          "multi_similarity_pairs": ml.mining.multi_similarity_pairs(sims, y),
      }
      ran.update({k: True for k in miners})
      ran["retrieval_metrics"] = "map_at_r" in ml.metrics.retrieval_metrics(x, y)
      index = ml.index.EmbeddingIndex.create(np.asarray(x), np.asarray(y))
      ran["index"] = index.search(np.asarray(x[:2]), k=3)[0].shape == (2, 3)
      # Serving an exported embedder needs the core and the serving extra (flatbuffers).
      import os, tempfile
      batch, = jax.export.symbolic_shape("b")
      exported = jax.export.export(jax.jit(lambda v: ml.l2_normalize(v)))(
          jax.ShapeDtypeStruct((batch, 6), jnp.float32))
      path = os.path.join(tempfile.mkdtemp(), "e.jax")
      try:
        ml.serving.save(path, exported, {"step": 1})
        serving_message = None
      except ModuleNotFoundError as e:
        serving_message = str(e)
      ran["serving_writes_nothing"] = not os.listdir(os.path.dirname(path))
      # Every example in the core's docstrings, except the one that needs scikit-learn.
      failed = {}
      modules = [m.name for m in pkgutil.walk_packages(ml.__path__, "metric_learning.")
                 if m.name.split(".")[1] not in ("models", "data", "training", "evaluators")]
      for name in modules:
        module = __import__(name, fromlist=["_"])
        finder = doctest.DocTestFinder()
        for test in finder.find(module):
          if (test.name.endswith("clustering_metrics") or test.name.startswith(
              "metric_learning.serving") or not test.examples):
            continue
          result = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE).run(
              test, out=lambda s: None)
          if result.failed:
            failed[test.name] = result.failed
      try:
        ml.metrics.clustering_metrics(np.asarray(x), np.asarray(y))
        sklearn_message = None
      except ModuleNotFoundError as e:
        sklearn_message = str(e)
      print(json.dumps({"ran": ran, "failed": failed, "modules": modules,
                        "sklearn": sklearn_message, "serving": serving_message}))
      """)
  assert out["ran"] and all(out["ran"].values()), out["ran"]
  assert not out["failed"], out["failed"]
  assert "metric_learning.losses.proxies" in out["modules"]
  assert "metric_learning.serving" in out["modules"]
  assert 'pip install "metric-learning-jax[serving]"' in out["serving"]
  assert 'pip install "metric-learning-jax[experiments]"' in out["sklearn"]


def test_each_missing_experiments_package_names_the_extra():
  parts = ["metric_learning.models", "metric_learning.data", "metric_learning.training",
           "metric_learning.evaluators", "experiments.train", "experiments.main"]
  out = _run([], f"""
      import json, sys
      results = {{}}
      for module in {sorted(_extras.EXTRAS["experiments"])!r}:
        BLOCKED.clear(); BLOCKED.add(module.split(".")[0])
        for name in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
          del sys.modules[name]     # imported earlier (jax imports flatbuffers): now missing
        for part in {parts!r}:
          for name in [m for m in sys.modules if m.startswith(("metric_learning.", "experiments"))]:
            del sys.modules[name]
          try:
            __import__(part)
            results[module + " " + part] = None
          except ImportError as e:
            results[module + " " + part] = str(e)
      print(json.dumps(results))
      """)
  for key, message in out.items():
    module = key.split()[0]
    assert message is not None, f"{key}: imported although {module} is missing"
    assert 'pip install "metric-learning-jax[experiments]"' in message, (key, message)
    assert re.search(rf"\b{re.escape(module)}\b", message), (key, message)
