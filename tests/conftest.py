"""Test setup: 8 fake CPU devices, configured before JAX initialises."""

import os
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the session: both xdist workers and every
# subprocess the tests start (they inherit this environment) reuse what another one
# compiled -- the README commands and the end-to-end runs compile the same training
# step again and again. Entries are compiled programs keyed by the program, the
# flags and the jax/XLA versions; a run that finds the cache empty (CI) compiles as before.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "metric_learning-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# The fixture makers run by hand, in an environment with torch (their docstrings say
# how): not test modules, and --doctest-modules would import them.
collect_ignore = ["fixtures/make_pretrained_fixtures.py"]
