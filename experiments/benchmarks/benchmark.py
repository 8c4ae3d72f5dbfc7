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

interleaved (the order reversed every other round), ``--repeats`` times each,
and reports medians; "x floor" is the median over rounds of a method's time
over the floor's in the same round (less moved by a changing load than the
ratio of the medians). With ``--memory``
each (method, B) point also runs in a subprocess that reports its peak
resident memory. Prints a table, writes JSON and a log-log PNG plot.

  python -m experiments.benchmarks.benchmark --batch_sizes=1024,4096 --dim=128 --repeats=5
"""

from __future__ import annotations

from absl import app
from absl import flags

from experiments.benchmarks import harness

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


def _jax_runner(method: str, batch: int, dim: int, block: int):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  import metric_learning as ml  # pylint: disable=import-outside-toplevel

  x, y = harness.embeddings(batch, dim)
  if method == "floor":
    return harness.gemm_floor(x)
  x, y = jnp.asarray(x), jnp.asarray(y)
  if method == "autodiff":
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

  def run():
    jax.block_until_ready(fn(x, y))

  return run


def _pml_runner(batch: int, dim: int):
  try:
    import torch  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import losses  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import miners  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  x, y = harness.embeddings(batch, dim)
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
  try:
    return harness.in_fresh_process("experiments.benchmarks.benchmark",
                                    f"--single={method}:{batch}",
                                    *harness.flag_args("dim", "block_size"))["peak_rss_mb"]
  except harness.FreshProcessError:
    return None


def _single(spec: str) -> None:
  method, batch = spec.split(":")
  run = _runner(method, int(batch), _DIM.value, _BLOCK.value)
  run()
  run()
  harness.report(peak_rss_mb=harness.peak_rss_mb())


def _plot(results, path):
  harness.loglog_plot(
      path, [harness.Line(method, [(r["batch"], r["median_ms"]) for r in results
                                   if r["method"] == method and r["median_ms"] is not None])
             for method in _METHODS.value],
      xlabel="batch size B", ylabel=f"loss + gradient, median ms (D={_DIM.value})",
      title="Batch-hard triplet loss")


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  results = []
  for batch in map(int, _BATCH_SIZES.value):
    runners = {}
    for method in _METHODS.value:
      run = None if _skip(method, batch) else _runner(method, batch, _DIM.value, _BLOCK.value)
      if run is not None:
        runners[method] = run
    timings = harness.interleaved(runners, rounds=_REPEATS.value, warmup=1, alternate=True)
    for method in _METHODS.value:
      row = {"method": method, "batch": batch, "dim": _DIM.value,
             "median_ms": 1e3 * timings.median(method) if method in runners else None,
             "runs_ms": timings.ms(method) if method in runners else None,
             "floor_ratio": (timings.paired_ratio(method, "floor")
                             if method in runners and "floor" in runners else None)}
      if _MEMORY.value and method in runners:
        row["peak_rss_mb"] = _peak_rss_mb(method, batch)
      results.append(row)
  pml = {r["batch"]: r["median_ms"] for r in results if r["method"] == "pml"}
  meta = harness.machine()
  columns = [("method", "<10"), ("B", ">7"), ("median ms", ">10.1f"), ("x floor", ">8.2f"),
             ("pml / this", ">10.1f")] + ([("peak MB", ">8.0f")] if _MEMORY.value else [])
  rows = []
  for r in results:
    if r["median_ms"] is None:
      continue
    p = pml.get(r["batch"])
    rows.append([r["method"], r["batch"], r["median_ms"], r["floor_ratio"],
                 p / r["median_ms"] if p else None, r.get("peak_rss_mb")])
  print(f"\ndevice: {meta['device']}, D={_DIM.value}, repeats={_REPEATS.value}")
  print(harness.table(columns, rows))
  harness.write_json(_OUTPUT.value, {"meta": meta, "results": results})
  if _PLOT.value:
    _plot(results, _PLOT.value)


if __name__ == "__main__":
  app.run(main)
