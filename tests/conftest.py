"""Test setup: 8 fake CPU devices, configured before JAX initialises."""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The fixture makers run by hand, in an environment with torch (their docstrings say
# how): not test modules, and --doctest-modules would import them.
collect_ignore = ["fixtures/make_pretrained_fixtures.py"]
