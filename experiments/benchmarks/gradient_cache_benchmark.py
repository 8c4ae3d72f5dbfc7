r"""Gradient caching: train-step memory and time against the batch size.

  python -m experiments.benchmarks.gradient_cache_benchmark --model=resnet18 \
      --image_size=64 --batch_sizes=64,256,1024,4096 --embed_chunk=64

For each batch size B, the plain train step and the cached one
(``make_train_step(..., embed_chunk=N)``, batch-hard loss over the whole
batch): **planned memory**, XLA's buffer assignment of the compiled step
(arguments + outputs + temporaries, ``compiled.memory_analysis()``; what the
step needs, known before it runs) for every B; and **measured** peak resident
memory and the median step time, each point in a fresh process, for B up to
``--run_max_batch`` (and only where the plan fits ``--memory_limit_gb``: a
step planned past the machine's memory is reported as "out of memory", not
run). Writes a table, JSON and a PNG of memory against B.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app
from absl import flags

from experiments.benchmarks import harness

_MODEL = flags.DEFINE_string("model", "resnet18", "Encoder (a model registry name).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Input height = width (RGB).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256", "1024", "4096"],
                                 "Batch sizes B (multiples of the chunk and of 4).")
_CHUNK = flags.DEFINE_integer("embed_chunk", 64, "Rows embedded at a time, cached step.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps per measured point (after one "
                              "untimed, compiling step).")
_RUN_MAX = flags.DEFINE_integer("run_max_batch", 1024, "Measure (run) points up to this B; "
                                "larger ones are planned only.")
_LIMIT = flags.DEFINE_float("memory_limit_gb", 20.0, "A step planned above this is not run: "
                            "'out of memory' (this machine: 24 GB).")
_OUT = flags.DEFINE_string("out", "gradient_cache_benchmark.json", "JSON output path.")
_PLOT = flags.DEFINE_string("plot", "docs/gradient_cache_memory.png", "PNG output path.")
_SINGLE = flags.DEFINE_string("single", "", "Internal: 'plain:B' or 'cached:B' in a fresh "
                              "process.")


def _step(kind: str, batch: int):
  """``(jitted step, state, batch)`` of the plain or cached train step."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metric_learning import models  # pylint: disable=import-outside-toplevel
  from metric_learning import training  # pylint: disable=import-outside-toplevel
  from metric_learning.losses import registry  # pylint: disable=import-outside-toplevel
  from metric_learning.training import state as state_lib  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  size = _IMAGE_SIZE.value
  model = models.create(_MODEL.value, (size, size, 3), embedding_dim=128, seed=0)
  tx = training.make_optimizer("adam", 1e-4)
  graphdef, state = training.init_state(model, tx, 0)
  loss = registry.create("batch_hard_triplet_loss", margin=0.2)
  chunk = _CHUNK.value if kind == "cached" else None
  step = jax.jit(state_lib.make_train_step(graphdef, tx, lambda e, y, w: loss(e, y, where=w),
                                           embed_chunk=chunk), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = {"inputs": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
          "labels": (np.arange(batch) // 4).astype(np.int32),
          "where": np.ones(batch, bool)}
  return step, state, data


def planned_gb(kind: str, batch: int) -> float:
  """Arguments + outputs + temporaries of the compiled step (aliased outputs once)."""
  step, state, data = _step(kind, batch)
  m = step.lower(state, data).compile().memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return total / 2**30


def _single(spec: str) -> None:
  kind, batch = spec.split(":")
  step, state, data = _step(kind, int(batch))
  state, metrics = step(state, data)            # compiles
  float(metrics["loss"])
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = step(state, data)
    float(metrics["loss"])
    times.append(time.perf_counter() - start)
  harness.report(step_s=statistics.median(times), peak_rss_mb=harness.peak_rss_mb())


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  rows = []
  for batch in map(int, _BATCH_SIZES.value):
    for kind in ("plain", "cached"):
      row = {"B": batch, "step": kind, "embed_chunk": _CHUNK.value if kind == "cached" else None,
             "planned_gb": planned_gb(kind, batch)}
      if row["planned_gb"] > _LIMIT.value:
        row["status"] = "out of memory (planned)"
      elif batch > _RUN_MAX.value:
        row["status"] = "planned only"
      else:
        try:
          got = harness.in_fresh_process(
              "experiments.benchmarks.gradient_cache_benchmark", f"--single={kind}:{batch}",
              *harness.flag_args("model", "image_size", "embed_chunk", "steps"))
          row.update(status="ran", step_s=got["step_s"], peak_rss_gb=got["peak_rss_mb"] / 1024,
                     images_per_s=batch / got["step_s"])
        except harness.FreshProcessError as e:
          row["status"] = f"failed: {e.reason}"
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(harness.table(
      [("B", ">6"), ("step", "<7"), ("planned GB", ">10.2f"), ("peak RSS GB", ">11.2f"),
       ("step s", ">8.2f"), ("img/s", ">8.1f"), ("status", "<24")],
      [(r["B"], r["step"], r["planned_gb"], r.get("peak_rss_gb"), r.get("step_s"),
        r.get("images_per_s"), r["status"]) for r in rows]))
  harness.write_json(_OUT.value, {
      "machine": harness.machine(), "loadavg": harness.loadavg(),
      "settings": harness.flag_values("model", "image_size", "batch_sizes", "embed_chunk",
                                      "steps", "run_max_batch", "memory_limit_gb"),
      "results": rows})
  if _PLOT.value:
    lines = [harness.Line(f"{kind} step (XLA's plan)", [(r["B"], r["planned_gb"]) for r in rows
                                                        if r["step"] == kind], fmt)
             for kind, fmt in (("plain", "-o"), ("cached", "-s"))]
    lines += [harness.Line(f"{kind} step (measured peak RSS)",
                           [(r["B"], r["peak_rss_gb"]) for r in rows
                            if r["step"] == kind and "peak_rss_gb" in r], fmt)
              for kind, fmt in (("plain", "--o"), ("cached", "--s"))]
    harness.loglog_plot(_PLOT.value, lines, xlabel="batch size B", ylabel="GB",
                        title=f"{_MODEL.value} {_IMAGE_SIZE.value}² train step, "
                              f"embed_chunk={_CHUNK.value}")


if __name__ == "__main__":
  app.run(main)
