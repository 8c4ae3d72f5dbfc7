r"""The streaming input pipeline: throughput, peak memory and step-time overhead.

On a folder of synthetic 256×256 JPEGs (``--images`` of them in ``--classes``
classes, generated once into ``--data_dir`` and reused) it measures

* **throughput** — decode + augment images/s of a ResNet-style training
  transform (random resized crop to 224, flip) and of the same transform to the
  training CNN's ``--train_size``, for each ``--workers`` count, with reduced-size
  JPEG decoding (``Transform.draft``) off and on, interleaved ``--repeats`` times
  (medians reported);
* **peak memory** — a short training run of the small CNN fed by the pipeline
  on the first N images for each N in ``--rss_sizes``, each in a fresh
  subprocess; the peak is the largest sum of the resident set sizes of the run's
  process and all its descendants (grain workers), sampled every 50 ms with
  psutil (``ru_maxrss`` of the process and of its largest child are reported
  too). Memory should not depend on N: only the index of paths grows with it;
* **step time** — in the same runs, the median step time of the CNN fed by the
  pipeline against the same step on one cached batch, measured in interleaved
  blocks ordered fed, cached, cached, fed, ... (linear drift in the machine's
  load cancels); the first ``--skip`` steps of each block are not counted, so
  the pipeline's prefetch buffers, filled while cached steps run, neither serve
  counted fed steps for free nor slow counted cached steps (ratio near 1: the
  pipeline keeps up). One run per size and ``--drafts`` setting, interleaved.

Every measurement records ``/proc/loadavg`` (other processes share the CPUs).

Prints a table and writes JSON to ``--out``.

  python -m experiments.benchmarks.pipeline_benchmark --images=20000 --steps=100
  python -m experiments.benchmarks.pipeline_benchmark --images=64 --rss_sizes=32,64 --steps=2 \
      --block=1 --skip=0 --repeats=1  # smoke
"""

from __future__ import annotations

import functools
import os
import resource
import statistics
import time

from absl import app
from absl import flags

from experiments.benchmarks import harness

_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/pipeline_benchmark_data",
                                "Folder of generated JPEGs (reused when present).")
_IMAGES = flags.DEFINE_integer("images", 20000, "JPEGs to generate.")
_CLASSES = flags.DEFINE_integer("classes", 200, "Classes of the generated images.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the generated JPEGs.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker processes to compare.")
_THREADS = flags.DEFINE_integer("threads", 2, "Decoding threads per process.")
_P = flags.DEFINE_integer("p", 16, "Classes per batch.")
_K = flags.DEFINE_integer("k", 4, "Samples per class.")
_THROUGHPUT_STEPS = flags.DEFINE_integer("throughput_steps", 20,
                                         "Batches timed per throughput point.")
_RSS_SIZES = flags.DEFINE_list("rss_sizes", ["5000", "20000"],
                               "Dataset sizes of the training runs (each <= --images).")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed training steps per run (half fed, "
                              "half cached, interleaved in blocks).")
_BLOCK = flags.DEFINE_integer("block", 25, "Steps per interleaved timing block.")
_SKIP = flags.DEFINE_integer("skip", 8, "Steps at the start of each block not counted "
                             "(about the batches the pipeline buffers ahead).")
_DRAFTS = flags.DEFINE_list("drafts", ["off", "on"], "Transform.draft settings to compare.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Interleaved repeats of each throughput point.")
_DRAFT = flags.DEFINE_bool("draft", True, "Internal: Transform.draft of a training run.")
_TRAIN_WORKERS = flags.DEFINE_integer("train_workers", 2, "grain workers of training runs.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 64, "Input side of the training CNN.")
_OUT = flags.DEFINE_string("out", "/tmp/pipeline_benchmark.json", "JSON output path.")
_CHILD = flags.DEFINE_integer("child", 0, "Internal: run one training run on N images.")


def _make_image(args):
  """A smooth random image (upsampled low-resolution noise): JPEG-sized like a photo."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  path, index, size = args
  if os.path.exists(path):
    return
  rng = np.random.default_rng(index)
  low = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
  image = Image.fromarray(low).resize((size, size), Image.BICUBIC)
  detail = rng.integers(-12, 13, (size, size, 3))
  pixels = np.clip(np.asarray(image, np.int16) + detail, 0, 255).astype(np.uint8)
  tmp = path + ".tmp"
  Image.fromarray(pixels).save(tmp, format="JPEG", quality=90)
  os.replace(tmp, path)      # a killed run never leaves a truncated JPEG behind


def image_files(n: int):
  """The first ``n`` generated images as ``ImageFiles`` (generating missing ones)."""
  import multiprocessing  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from metric_learning.data.files import ImageFiles  # pylint: disable=import-outside-toplevel
  root = os.path.abspath(_DATA_DIR.value)
  classes = _CLASSES.value
  paths = [os.path.join(root, f"c{i % classes:04d}", f"{i:06d}.jpg") for i in range(n)]
  missing = [(p, i, _IMAGE_SIZE.value) for i, p in enumerate(paths) if not os.path.exists(p)]
  if missing:
    for c in range(min(classes, n)):
      os.makedirs(os.path.join(root, f"c{c:04d}"), exist_ok=True)
    print(f"generating {len(missing)} JPEGs in {root} ...", flush=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
      pool.map(_make_image, missing, chunksize=64)
  return ImageFiles(np.array(paths), np.arange(n) % classes, name=f"synthetic{n}")


def _draft_flag(value: str) -> bool:
  if value not in ("off", "on"):
    raise app.UsageError(f"--drafts takes off and on; got {value!r}.")
  return value == "on"


def throughput(workers: int, side: int = 224, draft: bool = False) -> dict:
  """Images/s of decode + random resized crop to side × side + flip, after 2 warm-up
  batches per worker."""
  from metric_learning.data import pipeline  # pylint: disable=import-outside-toplevel
  from metric_learning.data.sampler import PKSampler  # pylint: disable=import-outside-toplevel
  from metric_learning.data.transforms import Transform  # pylint: disable=import-outside-toplevel
  files = image_files(_IMAGES.value)
  sampler = PKSampler(files.labels, p=_P.value, k=_K.value, seed=0)
  transform = Transform(size=(side, side), random_resized_crop=(0.08, 1.0), flip=True,
                        draft=draft)
  steps = _THROUGHPUT_STEPS.value
  load = harness.loadavg()
  warmup = 2 * max(workers, 1)               # every worker started and producing
  batches = pipeline.train_batches(files, sampler, transform, seed=0, start_step=0,
                                   num_steps=warmup + steps, workers=workers,
                                   threads=_THREADS.value)
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in batches:
    pass
  seconds = time.perf_counter() - start
  return {"workers": workers, "size": side, "draft": draft, "threads": _THREADS.value,
          "batch": sampler.batch_size, "batches": steps, "seconds": seconds,
          "images_per_s": steps * sampler.batch_size / seconds,
          "loadavg": [load, harness.loadavg()]}


def training_run(n: int) -> dict:
  """A short CNN training run on the first ``n`` images, fed by the pipeline."""
  monitor = harness.ProcessTreePeak()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  import metric_learning as ml  # pylint: disable=import-outside-toplevel
  from metric_learning import models  # pylint: disable=import-outside-toplevel
  from metric_learning.data import pipeline  # pylint: disable=import-outside-toplevel
  from metric_learning.data.sampler import PKSampler  # pylint: disable=import-outside-toplevel
  from metric_learning.data.transforms import Transform  # pylint: disable=import-outside-toplevel
  from metric_learning.training import optim  # pylint: disable=import-outside-toplevel
  from metric_learning.training import state as state_lib  # pylint: disable=import-outside-toplevel

  files = image_files(n)
  sampler = PKSampler(files.labels, p=_P.value, k=_K.value, seed=0)
  side = _TRAIN_SIZE.value
  transform = Transform(size=(side, side), random_resized_crop=(0.08, 1.0), flip=True,
                        draft=_DRAFT.value)
  model = models.create("cnn", transform.input_shape)
  tx = optim.make_optimizer("adam", 1e-3)
  graphdef, state = state_lib.init_state(model, tx, seed=0)
  loss_fn = lambda emb, labels, where: ml.batch_hard_triplet_loss(emb, labels, where=where)
  train_step = state_lib.make_train_step(graphdef, tx, loss_fn)

  @jax.jit
  def step(state, batch):
    # uint8 travels to the device; the float conversion is part of the step.
    batch = dict(batch, inputs=batch["inputs"].astype(jnp.float32) / 255.0)
    return train_step(state, batch)

  block, steps, skip = _BLOCK.value, _STEPS.value, _SKIP.value
  skip = min(skip, block - 1)
  rounds = max(1, steps // (2 * block))
  total_fed = 1 + rounds * block
  load = harness.loadavg()
  batches = pipeline.train_batches(files, sampler, transform, seed=0, start_step=0,
                                   num_steps=total_fed, workers=_TRAIN_WORKERS.value,
                                   threads=_THREADS.value)
  cached = next(batches)
  state, metrics = step(state, cached)       # compile
  jax.block_until_ready(metrics)
  holder = [state, metrics]

  def steps_of(source):
    """One block of steps on ``source`` (None: the cached batch); the counted seconds."""
    times = []
    for i in range(block):
      start = time.perf_counter()
      holder[:] = step(holder[0], cached if source is None else next(source))
      jax.block_until_ready(holder[1])
      if i >= skip:
        times.append(time.perf_counter() - start)
    return times

  timings = harness.interleaved(                       # fed, cached, cached, fed, ...
      {"fed": lambda: steps_of(batches), "cached": lambda: steps_of(None)}, rounds=rounds,
      alternate=True)
  fed_times, cached_times = ([t for block_times in timings.values[k] for t in block_times]
                             for k in ("fed", "cached"))
  metrics = holder[1]
  batches.close()
  loss = float(metrics["loss"])
  peak = monitor.stop()
  return {
      "images": n, "draft": _DRAFT.value, "loadavg": [load, harness.loadavg()],
      "steps_fed": len(fed_times), "steps_cached": len(cached_times),
      "batch": sampler.batch_size, "input": list(transform.input_shape),
      "workers": _TRAIN_WORKERS.value, "final_loss": loss if np.isfinite(loss) else None,
      "peak_rss_mb": peak / 2**20,
      "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "maxrss_largest_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
      "step_fed_ms": 1e3 * statistics.median(fed_times),
      "step_cached_ms": 1e3 * statistics.median(cached_times),
  }


def _child_run(n: int, draft: bool) -> dict:
  """``training_run(n)`` in a fresh interpreter, so its peak memory is its own."""
  return harness.in_fresh_process(
      "experiments.benchmarks.pipeline_benchmark", f"--child={n}", f"--draft={draft}",
      *harness.flag_args("data_dir", "classes", "image_size", "threads", "p", "k", "steps",
                         "block", "skip", "train_workers", "train_size"))


def main(argv):
  del argv
  if _CHILD.value:
    harness.report(**training_run(_CHILD.value))
    return
  sizes = [int(s) for s in _RSS_SIZES.value]
  if max(sizes) > _IMAGES.value:
    raise app.UsageError(f"--rss_sizes {sizes} exceed --images={_IMAGES.value}.")
  drafts = [_draft_flag(d) for d in _DRAFTS.value]
  image_files(_IMAGES.value)
  sides = sorted({224, _TRAIN_SIZE.value}, reverse=True)
  configs = [(int(w), side, d) for w in _WORKERS.value for side in sides for d in drafts]
  timings = harness.interleaved({c: functools.partial(throughput, *c) for c in configs},
                                rounds=_REPEATS.value)
  points = [p for c in configs for p in timings.values[c]]
  summary = []
  for (w, side, d), same in timings.values.items():
    summary.append({"workers": w, "size": side, "draft": d,
                    "images_per_s": statistics.median(p["images_per_s"] for p in same),
                    "loadavg_1min": [p["loadavg"][0][0] for p in same]})
  result = {"cpus": os.cpu_count(), "images": _IMAGES.value, "classes": _CLASSES.value,
            "image_size": _IMAGE_SIZE.value, "data_dir": os.path.abspath(_DATA_DIR.value),
            "rss_method": "psutil: peak of the summed RSS of the run and its descendants, "
                          "sampled every 50 ms",
            "throughput_runs": points, "throughput": summary,
            "peak_rss": [_child_run(n, d) for n in sizes for d in drafts]}
  runs = result["peak_rss"]
  peaks = [r["peak_rss_mb"] for r in runs]
  result["peak_rss_spread"] = max(peaks) / min(peaks) - 1
  result["step_time"] = [{"images": r["images"], "draft": r["draft"], "fed_ms": r["step_fed_ms"],
                          "cached_ms": r["step_cached_ms"],
                          "ratio": r["step_fed_ms"] / r["step_cached_ms"],
                          "loadavg": r["loadavg"]} for r in runs]

  print(f"\nthroughput: decode + random resized crop + flip, batch {_P.value * _K.value}, "
        f"{_THREADS.value} threads/process, {os.cpu_count()} CPUs, median of "
        f"{_REPEATS.value} interleaved runs")
  print(harness.table(
      [("workers", ">8"), ("size", ">5"), ("draft", ">6"), ("images/s", ">10.1f"),
       (" 1-min load", "")],
      [[r["workers"], r["size"], str(r["draft"]), r["images_per_s"],
        " " + " ".join(f"{v:.2f}" for v in r["loadavg_1min"])] for r in summary]))
  print(f"\ntraining runs: cnn {_TRAIN_SIZE.value}x{_TRAIN_SIZE.value}, "
        f"{_TRAIN_WORKERS.value} workers")
  print(harness.table(
      [("images", ">8"), ("draft", ">6"), ("peak RSS MB", ">12.0f"), ("fed ms", ">8.1f"),
       ("cached ms", ">10.1f"), ("ratio", ">6.2f"), (" load (start, end)", "")],
      [[r["images"], str(r["draft"]), r["peak_rss_mb"], t["fed_ms"], t["cached_ms"], t["ratio"],
        f" {t['loadavg'][0][0]:.2f} {t['loadavg'][1][0]:.2f}"]
       for r, t in zip(runs, result["step_time"])]))
  print(f"peak RSS spread across runs: {100 * result['peak_rss_spread']:.1f} %")
  harness.write_json(_OUT.value, result, indent=2)


if __name__ == "__main__":
  app.run(main)
