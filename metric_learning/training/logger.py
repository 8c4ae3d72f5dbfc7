"""Metric logging: TensorBoard event files (tensorboardX, no TensorFlow) + metrics.jsonl."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from metric_learning.training import rundir


class MetricLogger:
  """Writes scalars to ``workdir/tensorboard`` and appends them to ``metrics.jsonl``.

  ``resume_step``: a run resumed from the checkpoint of that step first drops
  the rows logged after it (they will be logged again) and rebuilds the
  TensorBoard events from the rows kept, so neither holds a step twice and
  TensorBoard has one event file. With ``enabled=False`` (processes other than
  0) it writes nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = rundir.RunDir(workdir).path(rundir.METRICS)
    self._writer = None
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    events = rundir.RunDir(workdir).path(rundir.TENSORBOARD)
    kept = [r for r in self.history() if resume_step is not None and r["step"] <= resume_step]
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self.path)
    shutil.rmtree(events, ignore_errors=True)
    self._writer = SummaryWriter(events)
    for row in kept:
      self._add(row["step"], {k: v for k, v in row.items() if k != "step"})

  def _add(self, step: int, scalars: dict) -> None:
    for k, v in scalars.items():
      self._writer.add_scalar(k, v, step)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._add(step, clean)
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")

  def history(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None
