r"""Batch-hard triplet loss + gradient: time and peak memory against baselines.

For each batch size B (labels in groups of 4, float32, dim D) it times
``value_and_grad`` of

* ``default``   — ``ml.batch_hard_triplet_loss(x, labels)`` as a user calls it
                  (``block_size=None``: automatic, dense up to 512 rows, blocks
                  of 256 above; gradient through the selected rows only);
* ``dense``     — the same forced onto one [B, B] matrix (``block_size=B``);
* ``streaming`` — the same with ``--block_size`` (O(block · B) memory);
* ``autodiff``  — a straightforward jitted JAX version: dense distances, masked
                  max/min, plain autodiff (two more B×B×D matmuls backward);
* ``floor``     — the bare floor: one fused ``jnp.min(x @ x.T, axis=1)``, forward only;
* ``pml``       — pytorch-metric-learning BatchHardMiner + TripletMarginLoss, when
                  installed;

interleaved, ``--repeats`` times each, and reports medians. With ``--memory``
each (method, B) point also runs in a subprocess that reports its peak
resident memory. Prints a table, writes JSON and a log-log PNG plot.

  python -m experiments.benchmark --batch_sizes=1024,4096 --dim=128 --repeats=5
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Batch sizes B.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding dimension D.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per point (median reported).")
_METHODS = flags.DEFINE_list("methods", ["default", "dense", "streaming", "autodiff", "floor",
                                         "pml"],
                             "Methods to run.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Rows per block for 'streaming'.")
_MEMORY = flags.DEFINE_bool("memory", False, "Measure peak RSS per point (subprocesses).")
_MAX_AUTODIFF = flags.DEFINE_integer(
    "max_dense_batch", 16384, "Skip dense/autodiff/pml above this B (B×B memory).")
_OUTPUT = flags.DEFINE_string("output", "benchmark.json", "JSON output path.")
_PLOT = flags.DEFINE_string("plot", "benchmark.png", "PNG plot path ('' to skip).")
_SINGLE = flags.DEFINE_string("single", "", "Internal: 'method:B' for a memory subprocess.")

MARGIN = 0.2


def _data(batch: int, dim: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, dim)).astype(np.float32)
  y = (np.arange(batch) // 4).astype(np.int32)
  return x, y


def _jax_runner(method: str, batch: int, dim: int, block: int):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  import metric_learning as ml  # pylint: disable=import-outside-toplevel

  x, y = _data(batch, dim)
  x, y = jnp.asarray(x), jnp.asarray(y)
  if method == "floor":
    fn = jax.jit(lambda e: jnp.min(jnp.matmul(e, e.T), axis=1))
  elif method == "autodiff":
    def naive(e, labels):
      sq = jnp.sum(e * e, 1)
      d = jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 1e-12))
      same = labels[:, None] == labels[None, :]
      pos = same & ~jnp.eye(e.shape[0], dtype=bool)
      dp = jnp.max(jnp.where(pos, d, -jnp.inf), axis=1)
      dn = jnp.min(jnp.where(same, jnp.inf, d), axis=1)
      return jnp.mean(jax.nn.relu(MARGIN + dp - dn))
    fn = jax.jit(jax.value_and_grad(naive))
  else:
    block_size = {"streaming": block, "dense": batch, "default": None}[method]
    fn = jax.jit(jax.value_and_grad(lambda e, labels: ml.batch_hard_triplet_loss(
        e, labels, margin=MARGIN, block_size=block_size)))
  args = (x,) if method == "floor" else (x, y)

  def run():
    jax.block_until_ready(fn(*args))

  return run


def _pml_runner(batch: int, dim: int):
  try:
    import torch  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import losses  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import miners  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  x, y = _data(batch, dim)
  miner, loss_fn = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=MARGIN)
  labels = torch.from_numpy(y).long()

  def run():
    e = torch.from_numpy(x).requires_grad_(True)
    loss = loss_fn(e, labels, miner(e, labels))
    loss.backward()

  return run


def _runner(method, batch, dim, block):
  if method == "pml":
    return _pml_runner(batch, dim)
  return _jax_runner(method, batch, dim, block)


def _skip(method, batch):
  return method in ("dense", "autodiff", "pml") and batch > _MAX_AUTODIFF.value


def _peak_rss_mb(method: str, batch: int) -> float | None:
  cmd = [sys.executable, "-m", "experiments.benchmark", f"--single={method}:{batch}",
         f"--dim={_DIM.value}", f"--block_size={_BLOCK.value}"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _single(spec: str) -> None:
  method, batch = spec.split(":")
  run = _runner(method, int(batch), _DIM.value, _BLOCK.value)
  run()
  run()
  print(json.dumps({"peak_rss_mb": _vm_hwm_kb() / 1024}))


def _vm_hwm_kb() -> float:
  """Peak resident set of this process image. Unlike ru_maxrss, which Linux keeps
  across execve (a child would report its parent's peak), VmHWM starts afresh."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return float(line.split()[1])
  except OSError:
    pass
  return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _plot(results, path):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(6, 4))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for method in _METHODS.value:
    pts = [(r["batch"], r["median_ms"]) for r in results if r["method"] == method
           and r["median_ms"] is not None]
    if pts:
      ax.loglog(*zip(*pts), marker="o", label=method)
  ax.set_xlabel("batch size B")
  ax.set_ylabel(f"loss + gradient, median ms (D={_DIM.value})")
  ax.set_title("Batch-hard triplet loss")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  import jax  # pylint: disable=import-outside-toplevel
  results = []
  for batch in map(int, _BATCH_SIZES.value):
    runners = {}
    for method in _METHODS.value:
      if _skip(method, batch):
        continue
      run = _runner(method, batch, _DIM.value, _BLOCK.value)
      if run is None:
        continue
      run()                                  # compile / warm up
      runners[method] = run
    times = {m: [] for m in runners}
    for _ in range(_REPEATS.value):          # interleaved
      for method, run in runners.items():
        start = time.perf_counter()
        run()
        times[method].append(1e3 * (time.perf_counter() - start))
    for method in _METHODS.value:
      row = {"method": method, "batch": batch, "dim": _DIM.value,
             "median_ms": statistics.median(times[method]) if method in times else None,
             "runs_ms": times.get(method)}
      if _MEMORY.value and method in times:
        row["peak_rss_mb"] = _peak_rss_mb(method, batch)
      results.append(row)
  floor = {r["batch"]: r["median_ms"] for r in results if r["method"] == "floor"}
  pml = {r["batch"]: r["median_ms"] for r in results if r["method"] == "pml"}
  header = f"{'method':<10} {'B':>7} {'median ms':>10} {'x floor':>8} {'pml / this':>10}"
  if _MEMORY.value:
    header += f" {'peak MB':>8}"
  print(f"\ndevice: {jax.devices()[0].device_kind}, D={_DIM.value}, repeats={_REPEATS.value}")
  print(header)
  for r in results:
    if r["median_ms"] is None:
      continue
    f, p = floor.get(r["batch"]), pml.get(r["batch"])
    line = (f"{r['method']:<10} {r['batch']:>7} {r['median_ms']:>10.1f} "
            f"{r['median_ms'] / f if f else float('nan'):>8.2f} "
            f"{p / r['median_ms'] if p else float('nan'):>10.1f}")
    if _MEMORY.value:
      line += f" {r.get('peak_rss_mb') or float('nan'):>8.0f}"
    print(line)
  meta = {"device": jax.devices()[0].device_kind, "platform": platform.platform(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__}
  with open(_OUTPUT.value, "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  if _PLOT.value:
    _plot(results, _PLOT.value)
  print(f"wrote {_OUTPUT.value}" + (f" and {_PLOT.value}" if _PLOT.value else ""))


if __name__ == "__main__":
  app.run(main)
