"""The accelerator check, run here on the CPU in its tiny mode (timings are not asserted).

The GPU path is the same commands with another platform and torch device; no GPU
has run it in this suite.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _device_check(out, *flags, timeout=300):
  return subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.device_check", "--platform=cpu",
       f"--out={out}", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_tiny_run_writes_every_part(tmp_path):
  proc = _device_check(tmp_path, "--tiny")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads((tmp_path / "device_check.json").read_text())
  table = (tmp_path / "device_check.md").read_text()
  assert table.split("| part |", 1)[1] in proc.stdout       # the same table on stdout
  assert report["ok"] and report["platform"] == "cpu" and report["tiny"]
  assert report["environment"]["jax_backend"] == "cpu"
  parts = report["parts"]
  assert set(parts) == {"tests", "losses", "train"}
  assert all("wall_s" in part or part.get("skipped") for part in parts.values())

  files = parts["tests"]["files"]
  assert len(files) == 2 and all(f["status"] == "passed" for f in files)
  assert all(f["passed"] == 1 and f["failed"] == 0 and f["seconds"] > 0 for f in files)

  points = parts["losses"]["points"]
  assert {(p["loss"], p["batch"]) for p in points} == {
      (loss, b) for loss in ("batch_hard", "contrastive") for b in (64, 256)}
  for p in points:                            # measured, or skipped with a reason
    assert (p["ml_ms"] or 0) > 0 or p["ml_skipped"], p
    assert (p["pml_ms"] or 0) > 0 or p["pml_skipped"], p
  assert any(p["ml_ms"] for p in points)
  has_pml = all(importlib.util.find_spec(m) for m in ("torch", "pytorch_metric_learning"))
  if not has_pml:
    assert parts["losses"]["pml"].startswith("skipped: not installed")
    assert all(p["pml_ms"] is None for p in points)

  (row,) = parts["train"]["results"]
  assert row["model"] == "cnn" and row["dtype"] == "bfloat16" and row["ours_images_per_s"] > 0
  if importlib.util.find_spec("torch") is None:
    assert "not installed" in row["note"] and row["torch_ms"] is None
  for needle in ("tests/gradients_test.py", "batch_hard B=64", "contrastive B=256", "cnn"):
    assert needle in table


@pytest.mark.slow
def test_a_failing_test_fails_the_check(tmp_path):
  failing = tmp_path / "failing_test.py"
  failing.write_text("def test_passes():\n  pass\n\n\ndef test_fails():\n  assert 1 == 2\n")
  proc = _device_check(tmp_path / "out", "--tiny", "--parts=tests", f"--tests={failing}")
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads((tmp_path / "out" / "device_check.json").read_text())
  assert not report["ok"]
  (row,) = report["parts"]["tests"]["files"]
  assert row["status"] == "failed" and row["passed"] == 1 and row["failed"] == 1
  for name in ("losses", "train"):
    assert report["parts"][name]["skipped"] == "skipped: not selected (--parts)"
  assert "failed" in proc.stdout
