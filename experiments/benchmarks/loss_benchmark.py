r"""Every in-batch loss against its pytorch-metric-learning counterpart.

For each loss and batch size B (float32, dim D, labels in groups of 4) it times
``value_and_grad`` of our default call and the PML loss (+ miner) with the
arguments the parity tests use, interleaved (median of at least ``--repeats``
rounds after a warm-up, more while a point takes less than ``--min_time``
seconds), and measures each one's peak resident memory in a fresh
subprocess. Each point also times the fused-GEMM floor, ``jnp.min(x @ x.T,
axis=1)`` forward only (one [B, B] matmul and one pass over it), interleaved with
the others: the "ml/floor" column says how far a loss is from that one matmul.
PML points that need more than ``--pml_max_gb`` (estimated from
the tensors it builds) or more than ``--pml_max_s`` seconds are skipped and
shown as "—" with the reason. With ``--max_point_s``, a point whose warm-up is
predicted (from the same loss at the previous, smaller B: B² growth, B³ for PML's
triplet cubes) to take longer than that is skipped too, ours and PML's alike.
PML runs on ``--torch_device`` (``cuda`` on a GPU; ours runs on JAX's default
device). Prints one table, writes JSON (``--out``, rewritten after every point,
so that a run cut short keeps what it measured) and one PNG per family into
``--plot_dir`` (``loss_benchmark_<family>.png``).

  python -m experiments.benchmarks.loss_benchmark --batch_sizes=256,1024,4096,16384
  python -m experiments.benchmarks.loss_benchmark --batch_sizes=64 --repeats=1   # smoke
"""

from __future__ import annotations

import math
import os
import statistics
import time

from absl import app
from absl import flags

from experiments.benchmarks import harness

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "1024", "4096", "16384"],
                                 "Batch sizes B.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding dimension D.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per point (median reported).")
_LOSSES = flags.DEFINE_list("losses", [], "Losses to run (default: all).")
_OUT = flags.DEFINE_string("out", "loss_benchmark.json", "JSON output path.")
_PLOT_DIR = flags.DEFINE_string("plot_dir", "docs", "Where loss_benchmark_<family>.png go "
                                "('' to skip).")
_MEMORY = flags.DEFINE_bool("memory", True, "Peak RSS per point (fresh subprocesses).")
_PML_MAX_GB = flags.DEFINE_float("pml_max_gb", 8.0, "Skip PML points estimated above this.")
_PML_MAX_S = flags.DEFINE_float("pml_max_s", 60.0, "Skip PML points slower than this.")
_SLOW_S = flags.DEFINE_float("slow_s", 5.0, "A point whose warm-up took longer than this "
                             "is timed once.")
_MIN_TIME = flags.DEFINE_float("min_time", 2.0, "Keep adding interleaved rounds until "
                                "this many seconds have passed (at most 50 rounds).")
_PML = flags.DEFINE_bool("pml", True, "Time pytorch-metric-learning too.")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "torch device of the PML side "
                                    "(cpu, cuda, cuda:1, ...).")
_MAX_POINT_S = flags.DEFINE_float("max_point_s", 0.0, "Skip a point whose warm-up is "
                                  "predicted from the previous B to exceed this (0: never).")
_SINGLE = flags.DEFINE_string("single", "", "Internal: 'impl:loss:B' memory subprocess.")
_POSITIVE_BOUNDS = flags.DEFINE_list(
    "positive_bounds", None, "Positives per anchor up to which batch-all and semi-hard take "
    "their sort-free path (metric_learning.mining.POSITIVE_BOUNDS; default: the library's); "
    "'none' times the sorted path alone.")

FAMILIES = {
    "triplet": ("batch_hard", "batch_all", "batch_all_soft", "semi_hard", "semi_hard_tfa",
                "quadruplet"),
    "pair_based": ("contrastive", "multi_similarity", "lifted_structure"),
    "contrastive": ("ntxent", "supcon"),
    "proxy": ("proxy_anchor", "arcface"),
    "more_pair_based": ("npair", "margin", "circle", "tuplet_margin", "generalized_lifted",
                        "nca", "fast_ap", "angular"),
}
ALL = tuple(name for names in FAMILIES.values() for name in names)


# Ours only: pytorch-metric-learning has no quadruplet loss, no TensorFlow
# Addons semi-hard rule (its semi-hard miner is FaceNet's), and its smooth
# triplet loss keeps the margin inside the softplus (not Hermans' soft margin).
_NO_PML = ("quadruplet", "semi_hard_tfa", "batch_all_soft")

# PML losses that build B×B×B tensors: their time grows like B³.
_PML_CUBIC = ("batch_all", "semi_hard", "ntxent", "tuplet_margin")


def _pml_bytes(name: str, batch: int) -> float:
  """What PML materialises: B×B×B masks for all-triplet losses, else B×B matrices."""
  if name in ("batch_all", "semi_hard"):
    return 6.0 * batch ** 3          # bool cube + int64 index lists of the triplets
  if name == "ntxent":
    # Every positive pair against every negative: NTXentLoss asked for 206 GB at
    # B=4096, and at B=1024 the process was killed for memory on a 24 GB machine.
    return 12.0 * batch ** 3
  if name == "tuplet_margin":
    # Measured: 1.15 GB peak at B=256 (every positive pair against every
    # negative, expanded); it grows like B³.
    return 50.0 * batch ** 3
  if name in ("proxy_anchor", "arcface"):
    return 40.0 * batch * max(1, batch // 4)
  return 40.0 * batch * batch


_SUMMED_BLOCKS = flags.DEFINE_bool(
    "summed_blocks", True, "Scalar reductions differentiate each streamed block as it is "
    "computed (the library's default); false: every block is rematerialised in the "
    "backward pass, as before (metric_learning.losses._pipeline.sums_rows).")


def set_summed_blocks(on: bool) -> None:
  """Applies ``--summed_blocks`` (read when a loss is traced)."""
  if not on:
    from metric_learning.losses import _pipeline  # pylint: disable=import-outside-toplevel
    _pipeline.sums_rows = lambda *args: False


def set_positive_bounds(values) -> None:
  """Applies ``--positive_bounds`` (read when a loss is traced); None: the library's."""
  if values is None:
    return
  from metric_learning.mining import blocks  # pylint: disable=import-outside-toplevel
  bounds = [v for v in values if v != "none"]
  blocks.POSITIVE_BOUNDS = tuple(sorted(int(v) for v in bounds))


def _ml_runner(name: str, batch: int, dim: int):
  """Our default call (``block_size`` left automatic), loss + gradient, jitted.

  Labels are arguments, as in a training step (closed-over labels would be
  compile-time constants that XLA spends seconds folding).
  """
  set_positive_bounds(_POSITIVE_BOUNDS.value)
  set_summed_blocks(_SUMMED_BLOCKS.value)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  import metric_learning as ml  # pylint: disable=import-outside-toplevel
  from metric_learning.losses import contrastive  # pylint: disable=import-outside-toplevel

  x, y = harness.embeddings(batch, dim)
  if name == "angular":
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  x, y = jnp.asarray(x), jnp.asarray(y)
  norm = ml.l2_normalize
  classes = max(1, batch // 4)
  proxies = jnp.asarray(np.random.default_rng(1).standard_normal((classes, dim)),
                        jnp.float32)
  fns = {
      "batch_hard": lambda e, y: ml.batch_hard_triplet_loss(e, y, margin=0.2),
      "batch_all": lambda e, y: ml.batch_all_triplet_loss(norm(e), y, margin=0.05),
      "semi_hard": lambda e, y: ml.semi_hard_triplet_loss(norm(e), y, margin=0.2,
                                                       reduction="mean_nonzero"),
      "contrastive": lambda e, y: ml.contrastive_loss(
          norm(e), y, margin=1.0, squared=False, reduce_separately=True,
          reduction="mean_nonzero"),
      "multi_similarity": lambda e, y: ml.multi_similarity_loss(e, y),
      "batch_all_soft": lambda e, y: ml.batch_all_triplet_loss(norm(e), y, soft=True,
                                                            reduction="mean"),
      "semi_hard_tfa": lambda e, y: ml.semi_hard_triplet_loss(norm(e), y, margin=0.2,
                                                           definition="tfa"),
      "quadruplet": lambda e, y: ml.quadruplet_loss(e, y),
      "lifted_structure": lambda e, y: ml.lifted_structure_loss(norm(e), y),
      "ntxent": lambda e, y: contrastive.ntxent_loss(e, y, temperature=0.07),
      "supcon": lambda e, y: contrastive.supcon_loss(e, y, temperature=0.1,
                                                  reduction="mean_nonzero"),
      # The rest as their parity tests call them (tests/gaps_test.py,
      # tests/pair_based_test.py); angular on unit vectors, as PML's equals ours there.
      "npair": lambda e, y: ml.presets.get("pml_npair")(e, y),
      "margin": lambda e, y: ml.presets.get("pml_margin")(e, y),
      "circle": lambda e, y: ml.circle_loss(e, y, margin=0.25, gamma=16.0, reduction="mean"),
      "tuplet_margin": lambda e, y: ml.tuplet_margin_loss(e, y, margin=math.radians(20.0),
                                                          scale=10.0),
      "generalized_lifted": lambda e, y: ml.generalized_lifted_structure_loss(
          norm(e), y, neg_margin=0.5, pos_margin=0.2),
      "nca": lambda e, y: ml.nca_loss(norm(e), y, softmax_scale=3.0),
      "fast_ap": lambda e, y: ml.fast_ap_loss(e, y, num_bins=4),
      "angular": lambda e, y: ml.angular_loss(e, y),
  }
  if name in fns:
    fn = jax.jit(jax.value_and_grad(fns[name]))
    args = (x, y)
  else:
    loss = {"proxy_anchor": ml.proxy_anchor_loss, "arcface": ml.arcface_loss}[name]
    fn = jax.jit(jax.value_and_grad(lambda e, p, y: loss(e, y, p), argnums=(0, 1)))
    args = (x, proxies, y)

  def run():
    jax.block_until_ready(fn(*args))

  return run


def _pml_runner(name: str, batch: int, dim: int):
  """The PML loss (and miner) of the parity tests, loss + backward, on ``--torch_device``."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import losses  # pylint: disable=import-outside-toplevel
    from pytorch_metric_learning import miners  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  import numpy as np  # pylint: disable=import-outside-toplevel
  from pytorch_metric_learning import reducers  # pylint: disable=import-outside-toplevel
  x, y = harness.embeddings(batch, dim)
  if name == "angular":
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  device = torch.device(_TORCH_DEVICE.value)
  base = torch.from_numpy(x).to(device)           # no copy on the CPU
  labels = torch.from_numpy(y).long().to(device)
  miner = None
  classes = max(1, batch // 4)
  if name == "batch_hard":
    miner, loss = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=0.2)
  elif name == "batch_all":
    loss = losses.TripletMarginLoss(margin=0.05)
  elif name == "semi_hard":
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    loss = losses.TripletMarginLoss(margin=0.2)
  elif name == "contrastive":
    loss = losses.ContrastiveLoss()
  elif name == "multi_similarity":
    miner, loss = miners.MultiSimilarityMiner(epsilon=0.1), losses.MultiSimilarityLoss()
  elif name == "lifted_structure":
    loss = losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
  elif name == "ntxent":
    loss = losses.NTXentLoss(temperature=0.07)
  elif name == "supcon":
    loss = losses.SupConLoss(temperature=0.1)
  elif name == "proxy_anchor":
    loss = losses.ProxyAnchorLoss(num_classes=classes, embedding_size=dim)
  elif name == "arcface":
    loss = losses.ArcFaceLoss(num_classes=classes, embedding_size=dim)
  elif name == "npair":
    loss = losses.NPairsLoss()
  elif name == "margin":
    loss = losses.MarginLoss()
  elif name == "circle":
    loss = losses.CircleLoss(m=0.25, gamma=16, reducer=reducers.MeanReducer())
  elif name == "tuplet_margin":
    loss = losses.TupletMarginLoss(margin=20.0, scale=10)
  elif name == "generalized_lifted":
    loss = losses.GeneralizedLiftedStructureLoss(neg_margin=0.5, pos_margin=0.2)
  elif name == "nca":
    loss = losses.NCALoss(softmax_scale=3)
  elif name == "fast_ap":
    loss = losses.FastAPLoss(num_bins=4)
  elif name == "angular":
    loss = losses.AngularLoss()
  else:
    raise ValueError(name)
  loss = loss.to(device)                          # the proxy losses hold parameters

  def run():
    e = base.detach().requires_grad_(True)
    value = loss(e, labels, miner(e, labels)) if miner else loss(e, labels)
    value.backward()
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  return run


def _runner(impl, name, batch, dim):
  if impl == "floor":
    return harness.gemm_floor(harness.embeddings(batch, dim)[0])
  return (_ml_runner if impl == "ml" else _pml_runner)(name, batch, dim)


def _single(spec: str) -> None:
  impl, name, batch = spec.split(":")
  run = _runner(impl, name, int(batch), _DIM.value)
  if run is None:
    raise ValueError(f"{impl} is not installed")
  run()
  run()
  harness.report(peak_rss_mb=harness.peak_rss_mb())


def _peak_rss_mb(impl: str, name: str, batch: int, timeout: float):
  """(peak MB, None), or (None, why not)."""
  try:
    got = harness.in_fresh_process("experiments.benchmarks.loss_benchmark",
                                   f"--single={impl}:{name}:{batch}",
                                   *harness.flag_args("dim", "torch_device", "positive_bounds",
                                                     "summed_blocks"),
                                   timeout=timeout)
  except harness.FreshProcessError as e:
    return None, e.reason
  return got["peak_rss_mb"], None


def _predicted_s(previous: dict | None, impl: str, name: str, batch: int) -> float | None:
  """The warm-up seconds of ``impl`` at ``batch``, scaled from the same loss's previous point."""
  if not previous or previous.get(f"{impl}_warm_s") is None:
    return None
  power = 3 if impl == "pml" and name in _PML_CUBIC else 2
  return previous[f"{impl}_warm_s"] * (batch / previous["batch"]) ** power


def _too_slow(previous: dict | None, impl: str, name: str, batch: int) -> str | None:
  """Why ``--max_point_s`` skips ``impl`` at ``batch``, or None."""
  if not _MAX_POINT_S.value or not previous:
    return None
  if previous.get(f"{impl}_skipped") and previous.get(f"{impl}_ms") is None:
    return previous[f"{impl}_skipped"]           # a larger B needs more still
  predicted = _predicted_s(previous, impl, name, batch)
  if predicted is not None and predicted > _MAX_POINT_S.value:
    return f"predicted {predicted:.0f} s > {_MAX_POINT_S.value:.0f} s"
  return None


def _point(name: str, batch: int, previous: dict | None = None) -> dict:
  """One (loss, B) point; ``previous`` is the same loss's point at a smaller B, if any."""
  row = {"loss": name, "batch": batch, "dim": _DIM.value, "ml_ms": None, "pml_ms": None,
         "floor_ms": None, "ml_peak_mb": None, "pml_peak_mb": None, "ml_skipped": None,
         "pml_skipped": None, "ml_warm_s": None, "pml_warm_s": None}
  why = _too_slow(previous, "ml", name, batch)
  if why:
    row["ml_skipped"], row["pml_skipped"] = why, "ours skipped"
    return row
  runners = {"ml": _runner("ml", name, batch, _DIM.value),
             "floor": _runner("floor", name, batch, _DIM.value)}
  why = _too_slow(previous, "pml", name, batch)
  if not _PML.value:
    row["pml_skipped"] = "--nopml"
  elif name in _NO_PML:
    row["pml_skipped"] = "no PML counterpart"
  elif _pml_bytes(name, batch) > _PML_MAX_GB.value * 2 ** 30:
    row["pml_skipped"] = f"needs > {_PML_MAX_GB.value:.0f} GB"
  elif why:
    row["pml_skipped"] = why
  else:
    pml = _runner("pml", name, batch, _DIM.value)
    if pml is None:
      row["pml_skipped"] = "not installed"
    else:
      runners["pml"] = pml
  warm = {}
  for impl, run in list(runners.items()):          # compile / warm up
    start = time.perf_counter()
    try:
      run()
    except (RuntimeError, MemoryError) as e:       # e.g. PML NTXent's B×B×B pairs
      if impl != "pml":
        raise
      row["pml_skipped"] = f"failed: {str(e).splitlines()[0][:60]}"
      del runners[impl]
      continue
    warm[impl] = time.perf_counter() - start
    if impl != "floor":
      row[f"{impl}_warm_s"] = warm[impl]
  if "pml" in warm and warm["pml"] > _PML_MAX_S.value:
    row["pml_skipped"] = f"> {_PML_MAX_S.value:.0f} s"
    del runners["pml"]
  repeats = 1 if max(warm.values()) > _SLOW_S.value else _REPEATS.value
  # More rounds than ``repeats`` until ``--min_time`` has passed, so that
  # sub-millisecond points are not the median of three runs that each follow a PML call.
  timings = harness.interleaved(runners, rounds=repeats, min_time=_MIN_TIME.value)
  for impl in runners:
    row[f"{impl}_ms"] = 1e3 * timings.median(impl)
    row[f"{impl}_runs_ms"] = timings.ms(impl)
    if _MEMORY.value and impl != "floor":
      peak, why = _peak_rss_mb(impl, name, batch, timeout=max(120.0, 10 * warm[impl]))
      row[f"{impl}_peak_mb"] = peak
      if why and impl == "pml":
        row["pml_skipped"] = why
  return row


def _table(results) -> str:
  columns = [("loss", "<17"), ("B", ">6"), ("ml ms", ">10.1f"), ("PML ms", ">10.1f"),
             ("PML/ml", ">7.1f"), ("ml/floor", ">8.2f"), ("ml MB", ">7.0f"), ("PML MB", ">7.0f"),
             (" note", "")]
  rows = []
  for r in results:
    ratio = r["pml_ms"] / r["ml_ms"] if r["pml_ms"] and r["ml_ms"] else None
    floor = r["ml_ms"] / r["floor_ms"] if r.get("floor_ms") and r["ml_ms"] else None
    note = "".join(f" {who} skipped: {r[key]}" for who, key in (("ours", "ml_skipped"),
                                                                  ("PML", "pml_skipped"))
                   if r.get(key) and not (key == "pml_skipped" and r.get("ml_skipped")))
    rows.append([r["loss"], r["batch"], r["ml_ms"], r["pml_ms"], ratio, floor, r["ml_peak_mb"],
                 r["pml_peak_mb"], note])
  return harness.table(columns, rows)


def _plot(results, family: str, names, path: str) -> None:
  lines = []
  for i, name in enumerate(names):
    for impl, fmt, who in (("ml", "-o", "ours"), ("pml", "--s", "PML")):
      lines.append(harness.Line(f"{name} ({who})", [
          (r["batch"], r[f"{impl}_ms"]) for r in results
          if r["loss"] == name and r[f"{impl}_ms"] is not None], fmt, color=f"C{i}"))
  floors = {}
  for r in results:
    if r["loss"] in names and r.get("floor_ms") is not None:
      floors.setdefault(r["batch"], []).append(r["floor_ms"])
  lines.append(harness.Line("fused-GEMM floor (min of x @ x.T)",
                            [(b, statistics.median(v)) for b, v in sorted(floors.items())],
                            ":", color="black"))
  harness.loglog_plot(
      path, lines, xlabel="batch size B", ylabel=f"loss + gradient, median ms (D={_DIM.value})",
      title=f"{family}: metric_learning (solid) vs pytorch-metric-learning (dashed)",
      figsize=(6.5, 4.2), dpi=110, fontsize=9)


def main(argv):
  del argv
  if _SINGLE.value:
    _single(_SINGLE.value)
    return
  names = tuple(_LOSSES.value) or ALL
  unknown = sorted(set(names) - set(ALL))
  if unknown:
    raise ValueError(f"unknown losses {unknown}; known: {list(ALL)}")
  load = harness.loadavg()
  meta = {**harness.machine(), "loadavg_start": load, "repeats": _REPEATS.value,
          "positive_bounds": _POSITIVE_BOUNDS.value, "summed_blocks": _SUMMED_BLOCKS.value,
          "torch_device": _TORCH_DEVICE.value if _PML.value else None}
  results = []
  for name in names:
    previous = None
    for batch in sorted(map(int, _BATCH_SIZES.value)):
      previous = _point(name, batch, previous)
      results.append(previous)
      print(_table(results[-1:]).splitlines()[-1], flush=True)
      harness.write_json(_OUT.value, {"meta": meta, "results": results, "complete": False},
                         quiet=True)
  meta["loadavg_end"] = harness.loadavg()
  print(f"\n{meta}\n{_table(results)}")
  harness.write_json(_OUT.value, {"meta": meta, "results": results, "complete": True})
  if _PLOT_DIR.value:
    os.makedirs(_PLOT_DIR.value, exist_ok=True)
    for family, members in FAMILIES.items():
      if any(r["loss"] in members for r in results):
        _plot(results, family, members,
              os.path.join(_PLOT_DIR.value, f"loss_benchmark_{family}.png"))


if __name__ == "__main__":
  app.run(main)
