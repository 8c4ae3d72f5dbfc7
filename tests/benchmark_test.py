"""Smoke test of the benchmark launcher on tiny sizes (timings are not asserted)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_writes_table_json_and_plot(tmp_path):
  out, png = tmp_path / "b.json", tmp_path / "b.png"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.benchmark", "--batch_sizes=48", "--dim=8",
       "--repeats=2", "--block_size=16", "--methods=default,dense,streaming,autodiff,floor",
       "--memory", f"--output={out}", f"--plot={png}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "streaming" in proc.stdout and "x floor" in proc.stdout
  data = json.loads(out.read_text())
  rows = {(r["method"], r["batch"]): r for r in data["results"]}
  assert set(rows) == {(m, b) for m in ("default", "dense", "streaming", "autodiff", "floor")
                       for b in (48,)}
  assert all(r["median_ms"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
  assert png.stat().st_size > 1000


@pytest.mark.slow
def test_gradient_cache_benchmark_plans_runs_and_plots(tmp_path):
  """Tiny sizes: planned memory for every B, measured points up to --run_max_batch."""
  out, png = tmp_path / "gc.json", tmp_path / "gc.png"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.gradient_cache_benchmark", "--model=cnn",
       "--image_size=16", "--batch_sizes=32,256", "--embed_chunk=16", "--run_max_batch=32",
       "--steps=1", f"--out={out}", f"--plot={png}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {(r["B"], r["step"]): r for r in json.loads(out.read_text())["results"]}
  assert set(rows) == {(b, s) for b in (32, 256) for s in ("plain", "cached")}
  assert rows[(32, "cached")]["status"] == "ran" and rows[(32, "cached")]["step_s"] > 0
  assert rows[(256, "plain")]["status"] == "planned only"
  # The cached step plans less memory, and the gap grows with the batch.
  assert rows[(256, "cached")]["planned_gb"] < rows[(256, "plain")]["planned_gb"] / 2
  assert png.stat().st_size > 1000
