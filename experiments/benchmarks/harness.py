r"""What every benchmark shares: timing, peak memory, and writing the results.

* **Timing** — ``interleaved`` calls each runner once a round, round after
  round, so that a drift in the machine's load (other processes share the CPUs)
  touches every runner alike; the benchmarks report medians of the rounds.
  ``loadavg`` and ``machine`` record the conditions.
* **Peak memory** — a point runs again in a fresh interpreter
  (``in_fresh_process``: ``python -m BENCHMARK --single=...``), which measures
  and prints one JSON line (``report``, ``peak_rss_mb``). The peak is ``VmHWM``,
  which starts afresh at ``execve``; ``ru_maxrss`` would not do: Linux carries
  it over ``fork`` + ``exec``, so a child would report its parent's peak.
  ``ProcessTreePeak`` samples a process and its descendants (worker pools).
* **Inputs** — ``embeddings`` (a PK-like batch) and ``gemm_floor`` (one fused
  [B, B] matmul, the floor no in-batch loss can beat).
* **Outputs** — ``table`` (fixed-width text for stdout), ``write_json`` and
  ``loglog_plot`` (a PNG, matplotlib's object API: no pyplot state).

Only the standard library is imported here; JAX, psutil and matplotlib are
imported by the functions that need them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any
from typing import Callable
from typing import Iterable
from typing import Mapping
from typing import Sequence

from absl import flags

# The repository root: ``python -m experiments.benchmarks.NAME`` imports from here.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- timing ---- #

@dataclasses.dataclass
class Timings:
  """Per runner: the seconds of every timed call and what each call returned."""
  seconds: dict[str, list[float]]
  values: dict[str, list[Any]]

  def median(self, name: str) -> float:
    return statistics.median(self.seconds[name])

  def ms(self, name: str) -> list[float]:
    return [1e3 * s for s in self.seconds[name]]

  def paired_ratio(self, name: str, baseline: str) -> float:
    """The median over rounds of ``name``'s time / ``baseline``'s in the same round.

    A load that changes between rounds slows both calls of a round alike, so
    this ratio drifts less than the ratio of the two medians.
    """
    return statistics.median(a / b for a, b in zip(self.seconds[name],
                                                   self.seconds[baseline], strict=True))


def interleaved(runners: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 0,
                min_time: float = 0.0, max_rounds: int = 50,
                alternate: bool = False) -> Timings:
  """Times ``runners`` in interleaved rounds: each round calls every runner once.

  Args:
    runners: name -> a function of no arguments that blocks until its work is
      done (``jax.block_until_ready``); the order is the order of each round.
    rounds: timed rounds, at least.
    warmup: untimed rounds first (compilation, caches).
    min_time: keep adding rounds until this many seconds have passed, up to
      ``max_rounds``, so that sub-millisecond points are not the median of a few.
    max_rounds: the most rounds ``min_time`` may add up to.
    alternate: reverse the order every other round (a, b, b, a, ...), so that
      going first is shared and a linear drift in the load cancels.

  Returns:
    ``Timings``: for each runner, ``perf_counter`` seconds of every timed call
    and the value each returned.
  """
  for _ in range(warmup):
    for run in runners.values():
      run()
  order = list(runners)
  seconds = {name: [] for name in order}
  values = {name: [] for name in order}
  begin, done = time.perf_counter(), 0
  while done < rounds or (time.perf_counter() - begin < min_time and done < max_rounds):
    for name in order[::-1] if alternate and done % 2 else order:
      start = time.perf_counter()
      values[name].append(runners[name]())
      seconds[name].append(time.perf_counter() - start)
    done += 1
  return Timings(seconds, values)


def loadavg() -> list[float]:
  """The 1, 5 and 15 minute load averages (others' processes included)."""
  return list(os.getloadavg())


def machine() -> dict:
  """The JAX device, platform, CPU count and JAX version, for a result's ``meta``."""
  import jax  # pylint: disable=import-outside-toplevel
  return {"device": jax.devices()[0].device_kind, "platform": platform.platform(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__}


# ---------------------------------------------------------------- inputs ---- #

def embeddings(batch: int, dim: int, *, group: int = 4, seed: int = 0):
  """Standard-normal float32 ``[batch, dim]`` embeddings and int32 labels in groups of
  ``group`` (every anchor has a positive and a negative)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, dim)).astype(np.float32)
  return x, (np.arange(batch) // group).astype(np.int32)


def gemm_floor(x) -> Callable[[], None]:
  """A runner of ``jnp.min(x @ x.T, axis=1)``, jitted, forward only: one fused [B, B]
  matmul and one pass over it — no in-batch loss on ``x`` is faster."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  x = jnp.asarray(x)
  fn = jax.jit(lambda e: jnp.min(jnp.matmul(e, e.T), axis=1))
  return lambda: jax.block_until_ready(fn(x))


# ----------------------------------------------------------- peak memory ---- #

def _proc_status_mb(field: str) -> float | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def peak_rss_mb() -> float:
  """This process's peak resident memory in MB (``VmHWM``; ``ru_maxrss`` without /proc)."""
  peak = _proc_status_mb("VmHWM")
  return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
  """This process's resident memory now, in MB (``VmRSS``)."""
  now = _proc_status_mb("VmRSS")
  return now if now is not None else peak_rss_mb()


def report(**values) -> None:
  """The fresh process's answer: one JSON line on stdout, read by ``in_fresh_process``."""
  print(json.dumps(values), flush=True)


class FreshProcessError(RuntimeError):
  """A fresh-process run failed; ``reason`` is short (``exit 1``, ``> 120 s``)."""

  def __init__(self, module: str, reason: str, stderr: str = ""):
    super().__init__(f"python -m {module} failed ({reason})\n{stderr[-3000:]}".rstrip())
    self.reason = reason


def in_fresh_process(module: str, *args: str, timeout: float | None = None) -> dict:
  """``python -m module *args`` in a new interpreter; the JSON of its last stdout line.

  The child runs in this working directory (relative paths in ``args`` mean the
  same there) with the repository root on its ``PYTHONPATH``.

  Raises:
    FreshProcessError: the child exited non-zero or ran past ``timeout`` seconds.
  """
  path = os.environ.get("PYTHONPATH")
  env = dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + path if path else ""))
  try:
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True,
                          text=True, check=False, timeout=timeout)
  except subprocess.TimeoutExpired:
    raise FreshProcessError(module, f"> {timeout:.0f} s") from None
  if proc.returncode:
    raise FreshProcessError(module, f"exit {proc.returncode}", proc.stderr)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def flag_args(*names: str) -> list[str]:
  """``--name=value`` of the current flags, for the fresh process to see the same."""
  return [flags.FLAGS[name].serialize() for name in names]


def flag_values(*names: str) -> dict:
  """The current values of the named flags, for the JSON."""
  return {name: flags.FLAGS[name].value for name in names}


class ProcessTreePeak:
  """Samples the summed RSS of this process and its descendants in a thread (bytes).

  For runs with worker processes, whose memory ``VmHWM`` does not see. Needs psutil.
  """

  def __init__(self, interval: float = 0.05):
    import psutil  # pylint: disable=import-outside-toplevel
    self.process, self.peak, self.interval = psutil.Process(), 0, interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def sample(self) -> int:
    total = 0
    for proc in [self.process, *self.process.children(recursive=True)]:
      try:
        total += proc.memory_info().rss
      except Exception:  # pylint: disable=broad-except  # exited between listing and reading
        pass
    self.peak = max(self.peak, total)
    return total

  def _run(self):
    while not self._stop.is_set():
      self.sample()
      self._stop.wait(self.interval)

  def stop(self) -> int:
    """Stops sampling; the peak, a last sample included."""
    self._stop.set()
    self._thread.join()
    return max(self.peak, self.sample())


# --------------------------------------------------------------- outputs ---- #

def _width(spec: str) -> tuple[str, str]:
  """(alignment, width) of a format spec: ``">10.1f"`` -> (">", "10")."""
  align, width = re.match(r"([<>^]?)(\d*)", spec).groups()
  return align or ">", width


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]], *,
          missing: str = "—") -> str:
  """A fixed-width text table.

  Args:
    columns: ``(title, format spec)`` of each column, e.g. ``("B", ">7")`` or
      ``("median ms", ">10.1f")``; the title takes the spec's alignment and width.
    rows: one sequence of cells per row, in column order.
    missing: what a ``None`` or NaN cell shows.

  Returns:
    The header and the rows, one line each.
  """
  def cell(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return format(missing, "".join(_width(spec)))
    return format(value, spec)

  lines = [" ".join(format(title, "".join(_width(spec))) for title, spec in columns)]
  lines += [" ".join(cell(v, spec) for v, (_, spec) in zip(row, columns)) for row in rows]
  return "\n".join(line.rstrip() for line in lines)


def write_json(path: str, payload: Any, *, indent: int = 1, quiet: bool = False) -> None:
  """Writes ``payload`` as JSON to ``path`` (whole or not at all) and says so unless ``quiet``."""
  partial = f"{path}.partial"
  with open(partial, "w") as f:
    json.dump(payload, f, indent=indent)
  os.replace(partial, path)        # a reader (or a kill) never sees half a file
  if not quiet:
    print(f"wrote {path}")


@dataclasses.dataclass
class Line:
  """One line of a plot: ``points`` are ``(x, y)``; ``fmt`` as matplotlib's (``"--s"``)."""
  label: str
  points: Sequence[tuple[float, float]]
  fmt: str = "-o"
  color: str | None = None


def loglog_plot(path: str, lines: Iterable[Line], *, xlabel: str, ylabel: str, title: str,
                figsize: tuple[float, float] = (6, 4), dpi: int = 120,
                fontsize: float | None = None) -> None:
  """A log-log PNG of ``lines`` (empty ones left out); ``fontsize`` sets the title's and
  the legend's."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for line in lines:
    if line.points:
      ax.loglog(*zip(*line.points), line.fmt, label=line.label,
                **({"color": line.color} if line.color else {}))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, **({"fontsize": fontsize} if fontsize else {}))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(**({"fontsize": fontsize - 2} if fontsize else {}))
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  print(f"wrote {path}")
