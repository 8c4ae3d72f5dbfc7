"""The documentation site builds, offline and warning-free, and covers the whole API.

``docs/`` is built the way Read the Docs builds it (``sphinx-build -W
--keep-going -b html``) from a scratch copy, so the autosummary stubs it
generates never land in the checkout, with every network connection refused,
so the build is proven offline. The notebooks are rendered without executing
them (``ML_DOCS_EXECUTE=0``): ``tests/notebooks_test.py`` executes them.

Also checked: every public name of every documented module has a page (is in an
``autosummary`` list of ``docs/api/``), every ``>>>`` example in the pages runs,
every benchmark plot in ``docs/`` is shown, and the library's docstrings cite
only files the repository contains.
"""

import doctest
import glob
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# The modules the reference documents; public = ``__all__``, or else the
# functions and classes a module defines under names without a leading "_".
MODULES = (
    "metric_learning",
    "metric_learning.losses",
    "metric_learning.losses.registry",
    "metric_learning.mining",
    "metric_learning.losses.presets",
    "metric_learning.distances",
    "metric_learning.masks",
    "metric_learning.memory",
    "metric_learning.reductions",
    "metric_learning.metrics",
    "metric_learning.reranking",
    "metric_learning.index",
    "metric_learning.serving",
    "metric_learning.models",
    "metric_learning.data",
    "metric_learning.data.registry",
    "metric_learning.data.protocols",
    "metric_learning.data.sources",
    "metric_learning.data.transforms",
    "metric_learning.data.image_ops",
    "metric_learning.data.pipeline",
    "metric_learning.evaluators",
    "metric_learning.training",
)
# Re-exported on purpose (defined beside the kernels that use them).
REEXPORTED = {
    "metric_learning.distances": ("l2_normalize", "safe_sqrt"),
}


def public_names(modname):
  module = importlib.import_module(modname)
  if hasattr(module, "__all__"):
    return set(module.__all__)
  names = {name for name, value in vars(module).items()
           if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
           and getattr(value, "__module__", None) == modname}
  return names | set(REEXPORTED.get(modname, ()))


def documented_names():
  """``{module: {name, ...}}`` from the autosummary lists of ``docs/api/*.md``."""
  out = {}
  for path in sorted(glob.glob(os.path.join(DOCS, "api", "*.md"))):
    module = None
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
      m = re.match(r"^\.\. (?:currentmodule|py:module|automodule):: (\S+)", lines[i])
      if m:
        module = m.group(1)
      if lines[i].startswith(".. autosummary::"):
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
          entry = lines[i].strip()
          if entry and not entry.startswith(":"):
            assert module, f"{path}: autosummary before any currentmodule"
            out.setdefault(module, set()).add(entry.lstrip("~"))
          i += 1
      i += 1
  return out


def test_every_public_name_is_in_an_autosummary_list():
  documented = documented_names()
  missing = {m: sorted(public_names(m) - documented.get(m, set())) for m in MODULES}
  missing = {m: names for m, names in missing.items() if names}
  assert not missing, (f"public names without a page — add them to an autosummary list "
                       f"in docs/api/: {missing}")
  unknown = {m: sorted(n for n in names if not hasattr(importlib.import_module(m), n))
             for m, names in documented.items()}
  assert not {m: n for m, n in unknown.items() if n}, unknown


def pages():
  return sorted(glob.glob(os.path.join(DOCS, "*.md")) + glob.glob(os.path.join(DOCS, "api", "*.md")))


@pytest.mark.parametrize("path", pages(), ids=lambda p: os.path.relpath(p, DOCS))
def test_doctests_in_the_pages_run(path):
  """Every ``>>>`` example of a page runs (the code fences themselves are dropped)."""
  text = open(path, encoding="utf-8").read()
  text = re.sub(r"^\s*```.*$", "", text, flags=re.M)   # a fence ends an expected output
  parser = doctest.DocTestParser()
  test = parser.get_doctest(text, {}, os.path.basename(path), path, 0)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {path}"


def test_every_benchmark_plot_is_shown():
  text = "".join(open(p, encoding="utf-8").read() for p in pages())
  for png in glob.glob(os.path.join(DOCS, "*.png")):
    assert os.path.basename(png) in text, f"{png} is on no page (add it to docs/benchmarks.md)"


def test_docstrings_cite_only_the_repository():
  offenders = []
  for path in glob.glob(os.path.join(ROOT, "metric_learning", "**", "*.py"), recursive=True):
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
      if re.search(r"\b(DESIGN|PEERS)\.md\b|\bPEERS\b", line):
        offenders.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
  assert not offenders, "\n".join(offenders)


def test_the_site_is_published_from_the_docs_extra():
  with open(os.path.join(ROOT, ".readthedocs.yaml")) as f:
    rtd = f.read()
  assert "configuration: docs/conf.py" in rtd and "- docs" in rtd
  assert "fail_on_warning: true" in rtd
  with open(os.path.join(ROOT, "setup.cfg")) as f:
    cfg = f.read()
  assert re.search(r"^docs =\n(    .+\n)*    sphinx>=", cfg, flags=re.M)
  test_extra = re.search(r"^test =\n    metric-learning-jax\[([\w,]+)\]", cfg, flags=re.M)
  assert test_extra and "docs" in test_extra.group(1).split(",")   # CI builds the site
  with open(os.path.join(DOCS, "conf.py")) as f:
    assert "intersphinx" not in f.read().replace("no intersphinx", "")


# Loaded into the build's interpreter: any connection off this machine fails.
_OFFLINE = '''
import socket
_connect = socket.socket.connect
def _local_only(self, address):
  host = address[0] if isinstance(address, tuple) else address
  if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
      "127.0.0.1", "::1", "localhost"):
    raise OSError(f"docs build tried to reach {address}: the build must run offline")
  return _connect(self, address)
socket.socket.connect = _local_only
'''


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
  pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
  pytest.importorskip("myst_nb", reason="the docs extra is not installed (pip install -e '.[docs]')")
  pytest.importorskip("sphinx_book_theme",
                      reason="the docs extra is not installed (pip install -e '.[docs]')")
  tmp = tmp_path_factory.mktemp("docs")
  source, out, guard = tmp / "source", tmp / "html", tmp / "guard"
  # symlinks=False: docs/notebooks/*.ipynb link to notebooks/; copy the files.
  shutil.copytree(DOCS, source, symlinks=False,
                  ignore=shutil.ignore_patterns("_build", "_autosummary", "jupyter_execute"))
  guard.mkdir()
  (guard / "sitecustomize.py").write_text(_OFFLINE)
  env = dict(os.environ, ML_DOCS_EXECUTE="0", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(guard), ROOT, os.environ.get("PYTHONPATH", "")]))
  env.pop("READTHEDOCS", None)
  proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                         "-q", str(source), str(out)],
                        env=env, capture_output=True, text=True, timeout=600)
  return proc, out


@pytest.mark.slow
def test_the_site_builds_offline_without_warnings(built_site):
  proc, out = built_site
  assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}"
  assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
  for page in ("index", "definitions", "choosing", "presets", "parallel", "numerics",
               "experiments", "benchmarks", "notebooks", "api/index",
               "notebooks/01_triplet_loss_explained", "notebooks/02_train_embeddings",
               "notebooks/03_losses_in_your_jax_project"):
    assert (out / f"{page}.html").exists(), page
  assert (out / "_images" / "benchmark_cpu.png").exists()


@pytest.mark.slow
def test_every_documented_name_has_a_generated_page(built_site):
  proc, out = built_site
  assert proc.returncode == 0, proc.stderr[-3000:]
  missing = []
  for module, names in documented_names().items():
    for name in names:
      obj = getattr(importlib.import_module(module), name)
      if inspect.ismodule(obj):
        continue                        # a submodule: its own page in docs/api/
      if not (out / "api" / "_autosummary" / f"{module}.{name}.html").exists():
        missing.append(f"{module}.{name}")
  assert not missing, missing


def test_adding_a_part_names_files_that_exist_and_hold_their_registries():
  """Every path in docs/adding_a_part.md's table exists (``<name>`` placeholders:
  the folder does), and each registry it names is defined or filled in its file."""
  text = open(os.path.join(DOCS, "adding_a_part.md"), encoding="utf-8").read()
  rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
  assert len(rows) == 8, rows
  for row in rows:
    cells = row.split("|")[2:6]
    written = re.findall(r"`((?:metric_learning|docs)/[^`]+)`", cells[0])
    for cell in cells:
      paths = re.findall(r"`((?:metric_learning|docs)/[^`]+)`", cell)
      for path in paths:
        target = path.split("/<")[0] if "<" in path else path
        assert os.path.exists(os.path.join(ROOT, target)), (row, path)
      # "the same file": a registry without a path of its own is in the module written
      for name in re.findall(r"`([A-Z]+)`", cell):
        files = [p for p in (paths or written) if "<" not in p]
        assert files and any(re.search(rf"\b{name}\b( = |\.register)", open(
            os.path.join(ROOT, p), encoding="utf-8").read()) for p in files), (row, name)
