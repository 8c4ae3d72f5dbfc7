"""Metric logging: TensorBoard event files (tensorboardX, no TensorFlow) + metrics.jsonl."""

from __future__ import annotations

import json
import os

import numpy as np


class MetricLogger:
  """Writes scalars to ``workdir/tensorboard`` and appends them to ``metrics.jsonl``.

  With ``enabled=False`` (processes other than 0) it writes nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for k, v in clean.items():
      self._writer.add_scalar(k, v, step)
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")

  def history(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
