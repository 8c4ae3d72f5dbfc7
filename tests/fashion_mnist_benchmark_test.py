"""Smoke test of the Fashion-MNIST benchmark on generated IDX files (numbers are not asserted)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests import protocol_fixtures as fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_plot_names_the_classes_trained_and_keeps_its_legend_off_the_bars(tmp_path):
  # In a subprocess: the benchmark module defines its absl flags on import, as other
  # command-line modules imported by this worker do (--seeds twice would clash).
  check = f"""
from experiments.benchmarks import fashion_mnist_benchmark as bench
scores = {{k: (0.5, 0.1) for k in bench._scores_keys()}}
fig = bench._plot({str(tmp_path / "p.png")!r}, {{"ours": scores, "raw pixels": scores}}, [0, 1, 2])
ax, = fig.axes
assert ax.get_title().startswith("classes 0, 1, 2 trained"), ax.get_title()
fig.canvas.draw()
assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes
"""
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.slow
def test_fashion_mnist_benchmark_writes_table_json_and_plot(tmp_path):
  root = fx.make_idx(str(tmp_path / "idx"), train_per_class=4, test_per_class=2)
  out, plot = tmp_path / "b.json", tmp_path / "b.png"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.fashion_mnist_benchmark", f"--path={root}",
       "--steps=2", "--seeds=0,1", f"--workdir={tmp_path / 'runs'}", f"--out={out}",
       f"--plot={plot}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "seen/map_at_r" in proc.stdout and "raw pixels" in proc.stdout and " ± " in proc.stdout
  result = json.loads(out.read_text())
  assert result["meta"]["splits"] == {"train": 20, "seen": 10, "unseen": 30}  # unseen: both files
  ours = result["summary"]["ours"]["unseen/map_at_r"]
  assert 0 <= ours["mean"] <= 1 and ours["ci95"] >= 0
  assert result["summary"]["raw pixels"]["seen/precision_at_1"]["ci95"] is None
  assert [r["seed"] for r in result["runs"]["ours"]] == [0, 1]
  assert plot.stat().st_size > 0
  has_pml = all(importlib.util.find_spec(m) is not None
                for m in ("torch", "pytorch_metric_learning"))
  assert ("pml" in result["summary"]) == has_pml
  if not has_pml:
    assert "pml rows skipped" in proc.stdout


@pytest.mark.slow
def test_the_proxy_recipe_trains_its_proxies_at_its_own_rate(tmp_path):
  """fashion_mnist_proxy.py: Proxy-Anchor with loss_lr_scale=100, on generated IDX files."""
  root = fx.make_idx(str(tmp_path / "idx"), train_per_class=4, test_per_class=2)
  out = tmp_path / "p.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.fashion_mnist_benchmark", f"--path={root}",
       "--config=experiments/configs/fashion_mnist_proxy.py", "--methods=ours", "--steps=2",
       "--seeds=0", f"--workdir={tmp_path / 'runs'}", f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  run, = [os.path.join(tmp_path / "runs", d) for d in os.listdir(tmp_path / "runs")]
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)
  assert config["loss"]["name"] == "proxy_anchor_loss" and config["loss_lr_scale"] == 100.0
  with open(os.path.join(run, "model.json")) as f:
    assert json.load(f)["proxies"][0] == 5                 # one proxy per training class
  assert 0 <= json.loads(out.read_text())["summary"]["ours"]["seen/map_at_r"]["mean"] <= 1


@pytest.mark.slow
def test_untrained_baselines_and_config_overrides(tmp_path):
  """--methods=raw,init: raw pixels and the untrained model, each euclidean and
  L2-normalised; --config.SECTION.FIELD reaches the model (a field the file lacks too)."""
  root = fx.make_idx(str(tmp_path / "idx"), train_per_class=4, test_per_class=2)
  out = tmp_path / "i.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.fashion_mnist_benchmark", f"--path={root}",
       "--methods=raw,init", "--config.model.embedding_dim=128",
       "--config.model.head_batch_norm=False", "--config.model.head_init=identity",
       "--seeds=0", f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  summary = result["summary"]
  assert set(summary) == {"raw pixels", "raw pixels, L2-normalised",
                          "cnn features at initialisation",
                          "cnn features at initialisation, L2-normalised"}
  assert result["meta"]["recipe"]["model"]["head_init"] == "identity"
  assert result["meta"]["recipe"]["model"]["head_batch_norm"] is False
  for name, rows in result["runs"].items():
    assert [r["seed"] for r in rows] == [None], name
    assert all(0 <= rows[0][f"{s}/{m}"] <= 1 for s in ("seen", "unseen")
               for m in ("map_at_r", "precision_at_1", "r_precision")), name
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.fashion_mnist_benchmark", f"--path={root}",
       "--methods=raw", "--config.model.embeding_dim=8", f"--out={tmp_path / 'bad.json'}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode == 2 and "embeding_dim" in bad.stderr and "Traceback" not in bad.stderr
  assert not (tmp_path / "bad.json").exists()
