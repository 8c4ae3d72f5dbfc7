"""Two local processes x 4 CPU devices (jax.distributed, gloo, 127.0.0.1 only) give
the same loss curve as one process with 8 devices."""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _cmd(workdir, mode, *extra):
  # No plots (process 0 draws them after all that is compared here) and no raw-pixel
  # baseline (the evaluators the model's embeddings go through, run on pixels).
  return [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
          f"--workdir={workdir}", f"--config.parallel={mode}", "--config.num_steps=6",
          "--config.plots=False", "--config.raw_baseline=False", *extra]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["step"], r["train/loss"]) for r in map(json.loads, f) if "train/loss" in r]


def _single_and_two_processes(tmp_path, mode, *extra):
  """Runs one process with 8 devices and two with 4 each; returns their workdirs
  and the two processes' stderr, after checking every run succeeded and that both
  logged the same loss curve."""
  single = str(tmp_path / "single")
  out = subprocess.run(_cmd(single, mode, *extra), cwd=ROOT, env=_env(8),
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  multi = str(tmp_path / "multi")
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(multi, mode, *extra, f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={i}"), cwd=ROOT, env=_env(4),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    results = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  a, b = _losses(single), _losses(multi)
  assert [s for s, _ in a] == [s for s, _ in b] == [2, 4, 6]
  for (_, x), (_, y) in zip(a, b):
    assert x == pytest.approx(y, rel=1e-5)
  return single, multi, [err for _, err in results]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_two_processes_match_one_process_with_eight_devices(mode, tmp_path):
  _, multi, errs = _single_and_two_processes(tmp_path, mode)
  assert "process 1/2" in errs[1]
  with open(os.path.join(multi, "summary.json")) as f:
    assert json.load(f)["steps"] == 6
  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["3", "6"]


@pytest.mark.slow
def test_two_processes_stream_image_files_like_one_process(tmp_path):
  """Each process decodes only its half of every global batch (the pipeline's
  process share) and the run equals one process on the whole batch."""
  import protocol_fixtures
  root = protocol_fixtures.make_image_folder(str(tmp_path / "imgs"), classes=11,
                                             per_class=20)
  data = ["--config.data.name=image_folder", f"--config.data.path={root}",
          "--config.data.seen_classes=(0,1,2,3,4)", "--config.augment.size=(12,12)",
          "--config.augment.flip=True"]
  _, multi, _ = _single_and_two_processes(tmp_path, "mesh", *data)
  with open(os.path.join(multi, "config.json")) as f:
    augment = json.load(f)["augment"]
  assert augment["size"] == [12, 12] and augment["flip"] is True  # the overrides, resolved
