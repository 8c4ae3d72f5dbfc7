"""Test setup: 8 fake CPU devices, configured before JAX initialises.

``ML_TEST_PLATFORM`` other than ``cpu`` (``experiments/benchmarks/device_check.py``
sets ``gpu``) leaves ``JAX_PLATFORMS`` and ``XLA_FLAGS`` as the caller set them:
the tests run on that platform with its real devices, and the session stops at
once if JAX's default backend is not that platform (no silent fallback to CPU).
Unset or ``cpu``: the fake CPU devices, as always.
"""

import gc
import os
import tempfile

import pytest

TEST_PLATFORM = os.environ.get("ML_TEST_PLATFORM", "cpu")

if TEST_PLATFORM == "cpu":
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache for the session: both xdist workers and every
# subprocess the tests start (they inherit this environment) reuse what another one
# compiled -- the README commands and the end-to-end runs compile the same training
# step again and again. Entries are compiled programs keyed by the program, the
# flags and the jax/XLA versions; a run that finds the cache empty (CI) compiles as before.
# Every program is kept, however quick its compile: the eager operations (a model's
# initialisers, its first eager call, the references) compile one small program each,
# thousands in all, and are compiled again after each module frees its programs
# (below). Measured, models + tools + reliability tests, cache filled: 148 s keeping
# only programs compiled in 0.2 s or more, 104 s keeping all; empty: no difference.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "metric_learning-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# The fixture makers run by hand, in an environment with torch (their docstrings say
# how): not test modules, and --doctest-modules would import them.
collect_ignore = ["fixtures/make_pretrained_fixtures.py"]


@pytest.fixture(autouse=True, scope="module")
def _compile_for_values(request):
  """Modules marked ``values_only`` compile with XLA's
  ``jax_disable_most_optimizations`` (LLVM at -O0, no expensive passes): they
  check the values of many small programs, each run once or twice, and compiling
  them was most of their time on 2 cores. The rest — training runs, models,
  recipes, the doctests and every subprocess (README commands, end-to-end runs) —
  compile as users do: there an unoptimised program runs slower than it compiles.
  Set per module, before its module-scoped fixtures run, so that no program of a
  module is compiled both ways.
  """
  import jax  # pylint: disable=import-outside-toplevel
  fast = request.node.get_closest_marker("values_only") is not None
  jax.config.update("jax_disable_most_optimizations", fast)
  yield
  jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(autouse=True)
def _compile_mode_when_marked(request):
  """A test marked ``xla_optimized`` (it reads what the optimised program plans:
  memory) compiles with XLA's optimisations in a ``values_only`` module too; a
  single test marked ``values_only`` (one large program compiled to run a step
  or two: a deep model's training step) compiles without them in any module."""
  own = {m.name for m in request.node.own_markers}
  if "xla_optimized" in own or "values_only" in own:
    import jax  # pylint: disable=import-outside-toplevel
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", "values_only" in own)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
  else:
    yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Frees every compiled program after each test module.

  Each program a process keeps compiled holds about 20 memory mappings on CPU, and
  Linux allows 65,530 per process (``vm.max_map_count``): an xdist worker that keeps
  every program of a whole suite (module-level caches hold the jitted functions)
  approaches the limit, and a failed mapping inside XLA is a segmentation fault. Three
  full runs in a row each lost a worker to a segmentation fault inside XLA (a compile
  or the cache write) late in the run, in different modules: what this prevents.
  Programs are rarely shared between modules, so little is recompiled.
  """
  yield
  import jax  # pylint: disable=import-outside-toplevel
  jax.clear_caches()
  gc.collect()


def pytest_sessionstart(session):
  """On a platform other than the fake CPUs, refuses to run anywhere else."""
  del session
  if TEST_PLATFORM == "cpu":
    return
  import jax  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel
  backend = jax.default_backend()
  if backend != TEST_PLATFORM:
    pytest.exit(f"ML_TEST_PLATFORM={TEST_PLATFORM} but JAX's default backend is {backend} "
                f"({jax.devices()})", returncode=3)


def pytest_report_header(config):
  del config
  if TEST_PLATFORM == "cpu":
    return None
  import jax  # pylint: disable=import-outside-toplevel
  return f"ML_TEST_PLATFORM={TEST_PLATFORM}: {jax.device_count()} x {jax.devices()[0].device_kind}"
