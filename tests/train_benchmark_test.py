"""Smoke test of the train-step benchmark on a tiny batch (timings are not asserted)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow    # a subprocess that compiles two models' train steps
def test_train_benchmark_writes_table_and_json(tmp_path):
  out = tmp_path / "t.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.train_benchmark", "--models=cnn", "--batch=8",
       "--steps=1", "--repeats=2", "--warmup=1", f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "torch/ours" in proc.stdout and "img/s" in proc.stdout
  (row,) = json.loads(out.read_text())["results"]
  assert row["model"] == "cnn" and row["batch"] == 8 and row["input_shape"] == [28, 28, 1]
  assert row["ours_ms"] > 0 and len(row["ours_runs_ms"]) == 2
  if importlib.util.find_spec("torch") is not None:
    assert row["torch_ms"] > 0 and row["torch_over_ours"] > 0 and row["note"] is None
  else:
    assert row["torch_ms"] is None and "torch side skipped" in row["note"]
