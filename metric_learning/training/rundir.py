"""The run directory: every file a training run writes, named and written in one place.

A workdir holds::

  config.json       the resolved config (every default in effect)
  provenance.json   versions, devices and command line of the run
  model.json        how to rebuild the encoder by name
  labels.json       class names of the labelled splits
  progress.json     wall-clock seconds spent per checkpointed step
  summary.json      the final figures
  index.npz         the enrollment index of the evaluated splits
  metrics.jsonl     every logged scalar, one JSON object per line
  tensorboard/      the same scalars as TensorBoard events
  checkpoints/      orbax checkpoints, one folder per step
  plots/            the figures (PNG)
  evals/            re-evaluations by ``experiments.tools.evaluate``

The trainer, the embedders and the tools read and write these through
:class:`RunDir`, so a file's name and format are decided here only. JSON files
are written atomically (a temporary file, then ``os.replace``): a run killed
mid-write leaves the previous version, never half a file.
"""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG = "config.json"
PROVENANCE = "provenance.json"
MODEL_SPEC = "model.json"
LABELS = "labels.json"
PROGRESS = "progress.json"
SUMMARY = "summary.json"
INDEX = "index.npz"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
EVALS = "evals"

FILES = (CONFIG, PROVENANCE, MODEL_SPEC, LABELS, PROGRESS, SUMMARY, INDEX, METRICS)
FOLDERS = (TENSORBOARD, CHECKPOINTS, PLOTS, EVALS)


class RunDir:
  """One run's directory.

  Example:
    >>> import tempfile
    >>> from metric_learning.training import rundir
    >>> run = rundir.RunDir(tempfile.mkdtemp())
    >>> path = run.write_json(rundir.SUMMARY, {"steps": 3})
    >>> run.read_json(rundir.SUMMARY), run.read_json(rundir.PROGRESS)
    ({'steps': 3}, None)
  """

  def __init__(self, workdir: str):
    self.workdir = workdir

  def __repr__(self) -> str:
    return f"RunDir({self.workdir!r})"

  def path(self, name: str, *more: str) -> str:
    """The path of a file or folder of the run (``name`` one of :data:`FILES` /
    :data:`FOLDERS`; ``more``: components inside a folder)."""
    if name not in FILES + FOLDERS:
      raise ValueError(f"{name!r} is not a file of a run directory; the files are "
                       f"{list(FILES + FOLDERS)}.")
    return os.path.join(self.workdir, name, *more)

  def exists(self, name: str) -> bool:
    return os.path.exists(self.path(name))

  def used(self) -> bool:
    """Whether a run has recorded anything here (a config or checkpoints)."""
    return os.path.isdir(self.workdir) and (self.exists(CONFIG) or self.exists(CHECKPOINTS))

  def read_json(self, name: str, *more: str) -> Any:
    """The content of a JSON file of the run, or None when it does not exist."""
    path = self.path(name, *more)
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      return json.load(f)

  def write_json(self, name: str, content: Any, *more: str, **dump_options) -> str:
    """Writes a JSON file of the run atomically; returns its path."""
    path = self.path(name, *more)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      json.dump(content, f, **{"indent": 1, "sort_keys": True, **dump_options})
    os.replace(tmp, path)
    return path
