"""Optional dependencies: a missing one fails with the pip command that installs it.

The core (losses, miners, distances, metrics, the index, reductions) needs only
the install requirements, jax and numpy. The Flax models, data pipeline,
training pieces and evaluators need the ``experiments`` extra; each of those
packages calls :func:`require_extra` first, so a partial install fails at
import with one message naming what is missing and how to install it, not with
a bare ``No module named ...`` from deep inside.
"""

from __future__ import annotations

import importlib
import importlib.util

PROJECT = "metric-learning-jax"

# The import name of each distribution of an extra (setup.cfg's
# [options.extras_require]); tests/extras_test.py checks the two agree.
EXTRAS: dict[str, dict[str, str]] = {
    "experiments": {
        "flax": "flax",
        "optax": "optax",
        "orbax.checkpoint": "orbax-checkpoint",
        "ml_collections": "ml-collections",
        "absl": "absl-py",
        "sklearn": "scikit-learn",
        "tqdm": "tqdm",
        "matplotlib": "matplotlib",
        "tensorboardX": "tensorboardX",
        "PIL": "pillow",
        "grain": "grain",
        "safetensors": "safetensors",
        "scipy": "scipy",
        "flatbuffers": "flatbuffers",
    },
    "serving": {"flatbuffers": "flatbuffers"},
    "faiss": {"faiss": "faiss-cpu"},
    "tune": {"optuna": "optuna"},
    "tensorboard": {"tensorboard": "tensorboard"},
}


def install_command(extra: str) -> str:
  return f'pip install "{PROJECT}[{extra}]"'


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def require_extra(extra: str, what: str) -> None:
  """Raises ``ModuleNotFoundError`` naming every missing module of ``extra``.

  Looks modules up without importing them (``importlib.util.find_spec``), so
  the check costs microseconds.

  Args:
    extra: a key of :data:`EXTRAS`.
    what: what needs the extra, for the message (``"metric_learning.models"``).
  """
  missing = [f"{module} ({dist})" for module, dist in EXTRAS[extra].items()
             if not _importable(module)]
  if missing:
    raise ModuleNotFoundError(f"{what} needs the {extra!r} extra, which is not fully "
                              f"installed (missing: {', '.join(missing)}); install it "
                              f"with: {install_command(extra)}")


def import_optional(module: str, *, extra: str, what: str):
  """``importlib.import_module(module)``, or an ImportError with the pip command."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    top = module.split(".")[0]
    dist = next((d for m, d in EXTRAS[extra].items() if m.split(".")[0] == top), top)
    raise ModuleNotFoundError(f"{what} needs {dist}, which is not installed; install it with: "
                              f"{install_command(extra)} (or pip install {dist}).") from e
