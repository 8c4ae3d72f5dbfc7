r"""Train-step throughput: our JAX step against the same network, loss and optimizer in PyTorch.

For each model it times full train steps (forward, batch-hard triplet loss,
backward, Adam update) on the same batches:

* ``cnn``      — the CNN of ``experiments/configs/mnist_npz.py``: widths 32-64-128,
                 head BatchNorm, 64-D L2-normalised; 28×28×1 uint8 inputs, P=5 K=32.
* ``resnet18`` — torchvision's ResNet-18 with a 64-D L2-normalised linear head,
                 ImageNet input normalisation; ``--image_size``² RGB uint8, K=4.
* ``resnet50`` — the same with torchvision's ResNet-50 (``--image_size=224`` for
                 the ImageNet shape).

``--dtype=bfloat16`` computes in bfloat16 on both sides: our model's ``dtype=``
(parameters stay float32) and ``torch.autocast(dtype=torch.bfloat16)`` around
the network; the loss runs in float32 on both. ``--torch_device=cuda`` puts the
PyTorch side on the GPU (ours runs on JAX's default device; on a GPU machine run
with ``JAX_PLATFORMS=cuda`` and ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that
the two processes share the GPU's memory); ``--torch_channels_last`` gives torch
its fast convolution layout there.

Ours is the trainer's own step (``parallel.make_runner("none")``: ``jax.jit`` with
the state donated). The PyTorch side runs in a subprocess (``--torch_python``, by
default this interpreter; give one with torchvision for ``resnet18``) that
builds the same network (torchvision's ``resnet18`` for ``resnet18``) and a
hand-written batch-hard triplet loss with our definition — euclidean distances,
hardest positive and negative per anchor, ``mean(relu(m + d+ - d-))`` over
anchors, m = 0.2 — and ``torch.optim.Adam(lr=1e-4)``. The two are interleaved
``--repeats`` times (``--steps`` steps each, after warm-up) and the medians of
the per-step wall and process CPU times are reported, with the load average;
without torch the torch columns are left empty, with a note.

  python -m experiments.benchmarks.train_benchmark --models=cnn,resnet18 --repeats=5 \
      --torch_python=/path/to/venv-with-torchvision/bin/python
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from experiments.benchmarks import harness

_MODELS = flags.DEFINE_list("models", ["cnn", "resnet18"], "Models: cnn, resnet18, resnet50.")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size (0: 160 for cnn, 64 for the ResNets).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "ResNet input height = width.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of the network, both sides.")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "torch device (cpu, cuda, ...).")
_TORCH_CHANNELS_LAST = flags.DEFINE_bool("torch_channels_last", False,
                                         "torch network and inputs in channels-last layout.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per repeat and side.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats (ours, torch, ...).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation).")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch side too.")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", "", "Python with torch (and torchvision "
                                    "for resnet18); default: this interpreter.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's "
                                      "default, one per core).")
_OUT = flags.DEFINE_string("out", "train_benchmark.json", "JSON output path.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'torch:MODEL' runs the PyTorch side.")

MARGIN, LEARNING_RATE, EMBEDDING_DIM = 0.2, 1e-4, 64


def _setup(model: str) -> tuple[int, tuple[int, ...], int]:
  """(batch, input shape, samples per class) of a model's benchmark."""
  if model == "cnn":
    return _BATCH.value or 160, (28, 28, 1), 32
  if model in ("resnet18", "resnet50"):
    return _BATCH.value or 64, (_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3), 4
  raise app.UsageError(f"--models: unknown model {model!r}; the models are cnn, resnet18, "
                       "resnet50.")


def _batch(model: str):
  import numpy as np  # pylint: disable=import-outside-toplevel
  batch, shape, k = _setup(model)
  rng = np.random.default_rng(0)
  return {"inputs": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
          "labels": (np.arange(batch) // k).astype(np.int32), "where": np.ones(batch, bool)}


def _time_steps(step, n: int) -> dict:
  wall, cpu = [], []
  for _ in range(n):
    w, c = time.perf_counter(), time.process_time()
    step()
    wall.append(1e3 * (time.perf_counter() - w))
    cpu.append(1e3 * (time.process_time() - c))
  return {"wall_ms": wall, "cpu_ms": cpu}


# ----------------------------------------------------------------- ours ---- #

def _jax_step(model: str):
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from metric_learning import models  # pylint: disable=import-outside-toplevel
  from metric_learning import training  # pylint: disable=import-outside-toplevel
  from metric_learning.losses import registry  # pylint: disable=import-outside-toplevel
  from metric_learning.training import parallel  # pylint: disable=import-outside-toplevel

  batch_size, shape, _ = _setup(model)
  settings = dict(embedding_dim=EMBEDDING_DIM, normalize=True, dtype=_DTYPE.value)
  if model == "cnn":
    settings.update(widths=(32, 64, 128), head_batch_norm=True)
  net = models.create(model, shape, **settings)
  tx = optax.adam(LEARNING_RATE)
  graphdef, state = training.init_state(net, tx, 0)
  loss = registry.create("batch_hard_triplet_loss", margin=MARGIN)
  runner = parallel.make_runner("none", graphdef, tx,
                                lambda axis: (lambda e, y, w: loss(e, y, where=w)), batch_size)
  batch = jax.device_put(_batch(model))     # on the device once, as the torch side's
  holder = [runner.put_state(state)]

  def step():
    holder[0], metrics = runner.step(holder[0], batch)
    jax.block_until_ready(metrics)

  return step


# ---------------------------------------------------------------- torch ---- #

def _torch_step(model: str):
  import contextlib  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel

  if model == "cnn":
    class CNN(nn.Module):
      def __init__(self):
        super().__init__()
        w = (1, 32, 64, 128)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(w, w[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in w[1:])
        self.head_norm, self.linear = nn.BatchNorm1d(w[-1]), nn.Linear(w[-1], EMBEDDING_DIM)

      def forward(self, x):
        x = x / 255.0
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
          x = F.relu(norm(conv(x)))
          if i < len(self.convs) - 1:
            x = F.avg_pool2d(x, 2)
        return self.linear(self.head_norm(x.mean((2, 3))))

    net = CNN()
  else:
    import torchvision  # pylint: disable=import-outside-toplevel
    backbone = getattr(torchvision.models, model)()
    backbone.fc = nn.Linear(backbone.fc.in_features, EMBEDDING_DIM)

    class ImageNetInput(nn.Module):
      def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

      def forward(self, x):
        return (x / 255.0 - self.mean) / self.std

    net = nn.Sequential(ImageNetInput(), backbone)

  def batch_hard(e, labels):
    sq = (e * e).sum(1)
    d = torch.sqrt(torch.clamp(sq[:, None] + sq[None, :] - 2 * e @ e.T, min=1e-12))
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    dp = torch.where(pos, d, torch.full_like(d, -float("inf"))).max(1).values
    dn = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    return F.relu(MARGIN + dp - dn).mean()

  device = torch.device(_TORCH_DEVICE.value)
  layout = torch.channels_last if _TORCH_CHANNELS_LAST.value else torch.contiguous_format
  net = net.to(device, memory_format=layout)
  opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
  batch = _batch(model)
  inputs = torch.from_numpy(batch["inputs"]).to(device)     # no copy on the CPU
  labels = torch.from_numpy(batch["labels"].astype(np.int64)).to(device)
  # The network in bfloat16 under autocast; the loss in float32, as ours.
  autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)
              if _DTYPE.value == "bfloat16" else contextlib.nullcontext())
  net.train()

  def step():
    x = inputs.permute(0, 3, 1, 2).float()
    if _TORCH_CHANNELS_LAST.value:
      x = x.contiguous(memory_format=torch.channels_last)
    with autocast():
      out = net(x)
    loss = batch_hard(F.normalize(out.float(), dim=1), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss.item()

  return step


def _worker(spec: str) -> None:
  """The PyTorch side: builds, warms up, then runs ``n`` steps per stdin line."""
  _, model = spec.split(":")
  try:
    import torch  # pylint: disable=import-outside-toplevel
    if _TORCH_THREADS.value:
      torch.set_num_threads(_TORCH_THREADS.value)
    step = _torch_step(model)
  except ImportError as e:
    harness.report(error=f"{type(e).__name__}: {e}")
    return
  for _ in range(_WARMUP.value):
    step()
  harness.report(ready=True, torch=torch.__version__, threads=torch.get_num_threads())
  for line in sys.stdin:
    if not line.strip():
      break
    harness.report(**_time_steps(step, int(line)))


class _TorchSide:
  """The PyTorch worker process of one model; ``run(n)`` times n steps there."""

  def __init__(self, model: str):
    cmd = [_TORCH_PYTHON.value or sys.executable, "-m", "experiments.benchmarks.train_benchmark",
           f"--worker=torch:{model}", f"--batch={_BATCH.value}",
           f"--image_size={_IMAGE_SIZE.value}", f"--warmup={_WARMUP.value}",
           f"--torch_threads={_TORCH_THREADS.value}", f"--dtype={_DTYPE.value}",
           f"--torch_device={_TORCH_DEVICE.value}",
           f"--torch_channels_last={_TORCH_CHANNELS_LAST.value}"]
    self.proc = subprocess.Popen(cmd, cwd=harness.ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    self.info = self._read()
    if "error" in self.info or self.info == {}:
      self.close()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    return json.loads(line) if line.strip() else {}

  def run(self, n: int) -> dict:
    self.proc.stdin.write(f"{n}\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


# ----------------------------------------------------------------- main ---- #

def _median(xs):
  return statistics.median(xs) if xs else None


def _bench(model: str) -> dict:
  batch_size, shape, _ = _setup(model)
  load_start = harness.loadavg()[0]
  ours = _jax_step(model)
  for _ in range(_WARMUP.value):
    ours()
  torch_side = _TorchSide(model) if _TORCH.value else None
  note = None
  if torch_side is not None and "ready" not in torch_side.info:
    note = f"torch side skipped: {torch_side.info.get('error', 'the worker failed')}"
    torch_side = None
  elif torch_side is None:
    note = "torch side skipped: --notorch"
  sides = {"ours": lambda: _time_steps(ours, _STEPS.value)}
  if torch_side is not None:
    sides["torch"] = lambda: torch_side.run(_STEPS.value)
  # Each call times its own steps (the torch side's in its process); the
  # interleaving alternates who goes first.
  timings = harness.interleaved(sides, rounds=_REPEATS.value, alternate=True)
  if torch_side is not None:
    torch_side.close()
  row = {"model": model, "batch": batch_size, "input_shape": list(shape), "dtype": _DTYPE.value,
         "load_start": load_start, "load_end": harness.loadavg()[0], "note": note,
         "torch": torch_side.info if torch_side is not None else None}
  for side in ("ours", "torch"):
    runs = timings.values.get(side, [])
    wall_ms = [t for got in runs for t in got.get("wall_ms", [])]
    cpu_ms = [t for got in runs for t in got.get("cpu_ms", [])]
    wall, cpu = _median(wall_ms), _median(cpu_ms)
    row[f"{side}_ms"], row[f"{side}_cpu_ms"] = wall, cpu
    row[f"{side}_images_per_s"] = 1e3 * batch_size / wall if wall else None
    row[f"{side}_runs_ms"] = wall_ms
  row["torch_over_ours"] = row["torch_ms"] / row["ours_ms"] if row["torch_ms"] else None
  return row


def main(argv):
  del argv
  if _WORKER.value:
    _worker(_WORKER.value)
    return
  rows = [_bench(m) for m in _MODELS.value]
  meta = {**harness.machine(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "steps": _STEPS.value, "repeats": _REPEATS.value, "dtype": _DTYPE.value,
          "torch_device": _TORCH_DEVICE.value, "torch_channels_last": _TORCH_CHANNELS_LAST.value,
          "torch_loss": "hand-written batch-hard triplet (euclidean, mean over anchors)"}
  print(f"\ndevice: {meta['device']} (torch: {_TORCH_DEVICE.value}), {os.cpu_count()} CPUs, "
        f"{_DTYPE.value}, steps={_STEPS.value}"
        f" x repeats={_REPEATS.value}, medians per step")
  print(harness.table(
      [("model", "<9"), ("batch", ">5"), ("input", ">10"), ("ours ms", ">8.1f"),
       ("torch ms", ">8.1f"), ("ours img/s", ">10.0f"), ("torch img/s", ">11.0f"),
       ("torch/ours", ">10.2f"), ("ours cpu", ">8.1f"), ("torch cpu", ">9.1f"), ("load", ">9")],
      [[r["model"], r["batch"], "x".join(map(str, r["input_shape"])), r["ours_ms"],
        r["torch_ms"], r["ours_images_per_s"], r["torch_images_per_s"], r["torch_over_ours"],
        r["ours_cpu_ms"], r["torch_cpu_ms"], f"{r['load_start']:>4.1f}-{r['load_end']:<4.1f}"]
       for r in rows], missing="-"))
  for r in rows:
    if r["note"]:
      print(f"  ({r['model']}: {r['note']})")
  harness.write_json(_OUT.value, {"meta": meta, "results": rows})


if __name__ == "__main__":
  app.run(main)
