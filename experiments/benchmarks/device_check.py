r"""One prepared command for an accelerator: correctness tests, then the benchmarks.

Three parts, each a subprocess with its own time allowance (a share of
``--budget_s``; what a part leaves unused goes to the ones after it):

1. **tests** — pytest on the test files that check values and gradients against
   the NumPy references, the fast paths (automatic, dense, streamed) and the
   cross-device paths (``pmap``, ``shard_map``, a sharded ``jit``), with
   ``-m "not slow"``, one process per file and a timeout per file.
   ``ML_TEST_PLATFORM=gpu`` makes ``tests/conftest.py`` leave the platform
   alone (no fake CPU devices) and stop if JAX's default backend is not the GPU;
   the parallel tests then split their batch over the devices there are.
2. **losses** — ``loss_benchmark`` (loss + gradient, ours against
   pytorch-metric-learning on ``--torch_device=cuda``) for batch-hard,
   batch-all, semi-hard, contrastive and multi-similarity at B = 1024 to 65,536,
   one process per loss; PML points estimated above the memory limit, and points
   predicted to take too long, are skipped with the reason.
3. **train** — ``train_benchmark``: the train step of ResNet-50 at 224², bfloat16,
   against torchvision's ResNet-50 under bf16 autocast, images per second.

On ``--platform=gpu`` JAX runs with ``JAX_PLATFORMS=cuda`` (no silent fallback to
the CPU) and ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (so that torch, in the same
process or a sibling, gets GPU memory too), and torch on ``cuda``;
``--platform=cpu`` runs the same commands on the CPU. Nothing else differs.
Without torch, torchvision or pytorch-metric-learning (or with a torch that sees
no GPU) the comparison is reported as skipped with the reason. A part that does
not fit in what is left of the budget is skipped and says so.

Writes ``--out``/device_check.json (everything: devices, versions, every part's
results and timings), ``--out``/device_check.md (the table printed on stdout),
the benchmarks' own JSON and one log per subprocess under ``--out``/logs. The exit
status is 1 when a test failed or a part crashed; else 2 when something did not fit
in the budget (a part or a test file skipped or stopped, not by ``--parts``); else 0.

  python -m experiments.benchmarks.device_check --out=device_check   # a GPU, < 8 min
  python -m experiments.benchmarks.device_check --platform=cpu --tiny --out=/tmp/dc
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from absl import app
from absl import flags

from experiments.benchmarks import harness

_PLATFORM = flags.DEFINE_enum("platform", "gpu", ["gpu", "cpu"], "Where JAX and torch run.")
_TINY = flags.DEFINE_bool("tiny", False, "Tiny shapes and a few filtered tests (a smoke run).")
_OUT = flags.DEFINE_string("out", "device_check", "Output directory.")
_BUDGET_S = flags.DEFINE_float("budget_s", 450.0, "Wall-clock seconds for the three parts.")
_PARTS = flags.DEFINE_list("parts", ["tests", "losses", "train"], "Parts to run (the others are "
                           "reported as not selected).")
_TESTS = flags.DEFINE_list("tests", [], "Test files or node ids instead of the default ones "
                           "(each its own pytest process).")

# Each part's share of the budget, in the order they run.
SHARES = {"tests": 0.40, "losses": 0.30, "train": 0.30}

# (file or node id, -k filter): the reference, fast-path and cross-device checks.
TEST_FILES = (
    ("tests/losses_test.py", None),
    ("tests/gradients_test.py", None),
    ("tests/mining_test.py", None),
    ("tests/fast_paths_test.py", "not loss_benchmark_smoke"),   # part 2 times it for real
    ("tests/parallel_test.py", None),
)
TINY_TEST_FILES = (
    ("tests/gradients_test.py::test_gradient_matches_finite_differences[batch_hard]", None),
    ("tests/parallel_test.py::test_shard_map_equals_single_device[batch_hard]", None),
)

LOSSES = ("batch_hard", "batch_all", "semi_hard", "contrastive", "multi_similarity")
FULL = {
    "losses": LOSSES, "batch_sizes": (1024, 4096, 16384, 65536),
    "loss_flags": ["--repeats=3", "--min_time=1", "--pml_max_s=20", "--pml_max_gb=16"],
    "train_flags": ["--models=resnet50", "--image_size=224", "--batch=128",
                    "--dtype=bfloat16", "--steps=10", "--repeats=3", "--warmup=2"],
    "min_s": {"tests": 30.0, "losses": 30.0, "train": 90.0},
}
TINY = {
    "losses": ("batch_hard", "contrastive"), "batch_sizes": (64, 256),
    "loss_flags": ["--repeats=1", "--min_time=0", "--pml_max_s=20"],
    "train_flags": ["--models=cnn", "--batch=16", "--dtype=bfloat16", "--steps=1",
                    "--repeats=1", "--warmup=1"],
    "min_s": {"tests": 3.0, "losses": 3.0, "train": 3.0},
}

_PROBE = r"""
import json
got = {}
import jax
got["jax"] = jax.__version__
got["jax_backend"] = jax.default_backend()
got["jax_devices"] = [d.device_kind for d in jax.devices()]
for name in ("torch", "torchvision", "pytorch_metric_learning"):
  try:
    got[name] = __import__(name).__version__
  except ImportError as e:
    got[name] = None
if got["torch"]:
  import torch
  got["torch_cuda"] = torch.cuda.is_available()
  got["torch_devices"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                          if got["torch_cuda"] else [])
print(json.dumps(got))
"""


# --------------------------------------------------------- subprocesses ---- #

def _env(kind: str) -> dict:
  """The environment of a subprocess; ``kind`` is "tests" or "bench"."""
  path = os.environ.get("PYTHONPATH")
  env = dict(os.environ, PYTHONPATH=harness.ROOT + (os.pathsep + path if path else ""),
             XLA_FLAGS="")
  if _PLATFORM.value == "gpu":
    env.update(JAX_PLATFORMS="cuda", XLA_PYTHON_CLIENT_PREALLOCATE="false")
  else:
    env.update(JAX_PLATFORMS="cpu")
  if kind == "tests":
    env["ML_TEST_PLATFORM"] = _PLATFORM.value      # cpu: conftest's 8 fake devices, as always
  return env


def _run(cmd: list[str], *, kind: str, timeout: float, log: str) -> dict:
  """Runs ``cmd`` in the repository root; its output goes to ``log``.

  Returns:
    ``{"rc", "seconds", "timed_out", "log", "tail"}`` (``rc`` None when it timed out).
  """
  start = time.perf_counter()
  with open(log, "w") as f:
    proc = subprocess.Popen(cmd, cwd=harness.ROOT, env=_env(kind), stdout=f,
                            stderr=subprocess.STDOUT, text=True)
    try:
      rc, timed_out = proc.wait(timeout=max(1.0, timeout)), False
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      rc, timed_out = None, True
  with open(log) as f:
    tail = f.read()[-2000:]
  return {"rc": rc, "seconds": round(time.perf_counter() - start, 2), "timed_out": timed_out,
          "log": log, "tail": tail}


def _probe(out: str) -> dict:
  got = _run([sys.executable, "-c", _PROBE], kind="bench", timeout=120,
             log=os.path.join(out, "logs", "probe.log"))
  if got["rc"] != 0:
    lines = got["tail"].strip().splitlines()
    why = lines[-1] if lines else f"exit {got['rc']}"
    return {"error": "the probe timed out" if got["timed_out"] else
            f"JAX could not start ({why[:200]}; see {got['log']})"}
  return json.loads(got["tail"].strip().splitlines()[-1])


def _torch_missing(env: dict, *packages: str) -> str | None:
  """Why the torch side cannot run here, or None."""
  for name in packages:
    if not env.get(name):
      return f"skipped: not installed ({name})"
  if _PLATFORM.value == "gpu" and not env.get("torch_cuda"):
    return "skipped: torch sees no CUDA device"
  return None


# --------------------------------------------------------------- budget ---- #

class Budget:
  """Each part's allowance: its share of what is left, what earlier parts left unused included.

  Args:
    seconds: the whole budget.
    parts: the parts that will run, in order (their shares are ``SHARES``).
  """

  def __init__(self, seconds: float, parts):
    self.seconds, self.start = seconds, time.monotonic()
    self.parts = [p for p in SHARES if p in parts]

  def left(self) -> float:
    return self.seconds - (time.monotonic() - self.start)

  def allowance(self, part: str) -> float:
    remaining = self.parts[self.parts.index(part):]
    return max(0.0, self.left() * SHARES[part] / sum(SHARES[p] for p in remaining))


# ---------------------------------------------------------------- parts ---- #

def _junit_counts(path: str) -> dict | None:
  try:
    root = ET.parse(path).getroot()
  except (OSError, ET.ParseError):
    return None
  suite = root if root.tag == "testsuite" else root.find("testsuite")
  tests, failed, errors, skipped = (int(suite.get(k, 0)) for k in
                                    ("tests", "failures", "errors", "skipped"))
  return {"tests": tests, "passed": tests - failed - errors - skipped, "failed": failed,
          "errors": errors, "skipped": skipped}


def _tests(out: str, allowance: float, files, min_s: float) -> dict:
  """pytest per file, ``-m "not slow"``; a file's timeout is what is left of the part."""
  deadline, results = time.monotonic() + allowance, []
  for path, keyword in files:
    left = deadline - time.monotonic()
    name = os.path.basename(path.split("::")[0])
    row = {"file": path, "filter": keyword, "status": None, "seconds": None}
    if left < min_s:
      row["status"] = f"skipped: over budget ({left:.0f} s left)"
      results.append(row)
      continue
    junit = os.path.join(out, "junit", name.replace(".py", ".xml"))
    cmd = [sys.executable, "-m", "pytest", "-q", path, "-m", "not slow", "-p",
           "no:cacheprovider", f"--junitxml={junit}"] + (["-k", keyword] if keyword else [])
    got = _run(cmd, kind="tests", timeout=left, log=os.path.join(out, "logs", f"{name}.log"))
    counts = None if got["timed_out"] else _junit_counts(junit)
    row.update(counts or {}, seconds=got["seconds"], rc=got["rc"], log=got["log"])
    if got["timed_out"]:
      row["status"] = f"timeout after {got['seconds']:.0f} s"
    elif got["rc"] == 0 and counts and counts["passed"]:
      row["status"] = "passed"
    elif got["rc"] == 1:
      row["status"] = "failed"
    elif got["rc"] == 0:
      row["status"] = "error: no test ran"
    else:                          # 2 interrupted, 3 internal/refused platform, 4 usage, 5 none
      row["status"] = f"error (pytest exit {got['rc']})"
      row["tail"] = got["tail"][-1000:]
    results.append(row)
  ran = [r for r in results if not r["status"].startswith("skipped")]
  # A timeout is not a failure, but the file is not checked: the run is incomplete.
  timeouts = [r for r in ran if r["status"].startswith("timeout")]
  return {"files": results,
          "ok": all(r["status"] == "passed" for r in ran if r not in timeouts),
          "complete": len(ran) == len(results) and not timeouts}


def _losses(out: str, allowance: float, plan: dict, pml_skip: str | None, min_s: float) -> dict:
  """``loss_benchmark`` once per loss; a loss gets an equal share of what is left."""
  deadline, points, runs = time.monotonic() + allowance, [], []
  names = plan["losses"]
  for i, name in enumerate(names):
    share = (deadline - time.monotonic()) / (len(names) - i)
    run = {"loss": name, "status": None, "seconds": None}
    runs.append(run)
    if share < min_s:
      run["status"] = f"skipped: over budget ({share:.0f} s left)"
      continue
    path = os.path.join(out, f"loss_benchmark_{name}.json")
    cmd = [sys.executable, "-m", "experiments.benchmarks.loss_benchmark", f"--losses={name}",
           "--batch_sizes=" + ",".join(map(str, plan["batch_sizes"])), "--nomemory",
           "--plot_dir=", f"--out={path}", f"--max_point_s={share / 4:.1f}",
           f"--torch_device={'cuda' if _PLATFORM.value == 'gpu' else 'cpu'}",
           *plan["loss_flags"]] + (["--nopml"] if pml_skip else [])
    got = _run(cmd, kind="bench", timeout=share, log=os.path.join(out, "logs", f"loss_{name}.log"))
    run.update(seconds=got["seconds"], rc=got["rc"], log=got["log"])
    rows = []
    if os.path.exists(path):                         # rewritten after every point
      with open(path) as f:
        rows = json.load(f)["results"]
    done = {r["batch"] for r in rows}
    for r in rows:
      if pml_skip and r.get("pml_skipped") == "--nopml":
        r["pml_skipped"] = pml_skip.removeprefix("skipped: ")
    for batch in plan["batch_sizes"]:
      if batch not in done:
        why = "over its time share" if got["timed_out"] else "the run crashed"
        rows.append({"loss": name, "batch": batch, "ml_ms": None, "pml_ms": None,
                     "floor_ms": None, "ml_skipped": why, "pml_skipped": why})
    points += sorted(rows, key=lambda r: r["batch"])
    if got["timed_out"]:
      run["status"] = f"stopped after {got['seconds']:.0f} s (its share)"
    elif got["rc"] == 0:
      run["status"] = "ran"
    else:
      run["status"] = f"crashed (exit {got['rc']})"
      run["tail"] = got["tail"][-1000:]
  return {"runs": runs, "points": points, "pml": pml_skip or "ran",
          "ok": not any(r["status"].startswith("crashed") for r in runs),
          "complete": all(r["status"] == "ran" for r in runs)}


def _train(out: str, allowance: float, plan: dict, torch_skip: str | None) -> dict:
  path = os.path.join(out, "train_benchmark.json")
  cmd = [sys.executable, "-m", "experiments.benchmarks.train_benchmark", f"--out={path}",
         *plan["train_flags"]]
  if _PLATFORM.value == "gpu":
    cmd += ["--torch_device=cuda", "--torch_channels_last"]
  if torch_skip:
    cmd.append("--notorch")
  got = _run(cmd, kind="bench", timeout=allowance, log=os.path.join(out, "logs", "train.log"))
  part = {"seconds": got["seconds"], "rc": got["rc"], "log": got["log"], "results": [],
          "torch": torch_skip or "ran", "ok": got["rc"] == 0 or got["timed_out"],
          "complete": got["rc"] == 0}
  if got["rc"] == 0:
    with open(path) as f:
      part["results"] = json.load(f)["results"]
    for r in part["results"]:
      if torch_skip:
        r["note"] = f"torch side {torch_skip}"
  elif got["timed_out"]:
    part["status_detail"] = f"stopped after {got['seconds']:.0f} s (its share)"
  else:
    part["status_detail"] = f"crashed (exit {got['rc']})"
    part["tail"] = got["tail"][-1000:]
  return part


# ---------------------------------------------------------------- table ---- #

def _fmt_ms(ms):
  if ms is None:
    return "—"
  return f"{ms / 1e3:.2f} s" if ms >= 1e3 else f"{ms:.2f} ms"


def _table(report: dict) -> str:
  """One markdown table: every test file, loss point and train row, skipped ones included."""
  lines = ["| part | item | result | detail | s |", "|---|---|---|---|---:|"]

  def add(part, item, result, detail="", seconds=None):
    s = "" if seconds is None else f"{seconds:.1f}"
    lines.append(f"| {part} | {item} | {result} | {detail} | {s} |")

  parts = report["parts"]
  for name in SHARES:
    if parts[name].get("skipped"):
      add(name, "(all)", parts[name]["skipped"])
  tests = parts["tests"]
  for r in tests.get("files", []):
    counts = (f"{r['passed']} passed, {r['failed']} failed, {r['errors']} errors, "
              f"{r['skipped']} skipped" if "passed" in r else "")
    add("tests", r["file"] + (f" -k '{r['filter']}'" if r["filter"] else ""), r["status"],
        counts, r["seconds"])
  for r in parts["losses"].get("points", []):
    ratio = (f"PML ÷ ours {r['pml_ms'] / r['ml_ms']:.1f}" if r.get("pml_ms") and r.get("ml_ms")
             else f"PML: {r.get('pml_skipped') or '—'}")
    if r.get("ml_skipped"):
      result, ratio = f"skipped: {r['ml_skipped']}", ""
    else:
      result = f"ours {_fmt_ms(r['ml_ms'])}, PML {_fmt_ms(r['pml_ms'])}"
      if r.get("floor_ms"):
        ratio += f"; ours ÷ floor {r['ml_ms'] / r['floor_ms']:.1f}"
    add("losses", f"{r['loss']} B={r['batch']}", result, ratio)
  for r in parts["losses"].get("runs", []):
    if r["status"] != "ran":
      add("losses", f"{r['loss']} (run)", r["status"], "", r["seconds"])
  train = parts["train"]
  for r in train.get("results", []):
    shape = "x".join(map(str, r["input_shape"]))
    torch_ips = r.get("torch_images_per_s")
    add("train", f"{r['model']} {shape} {r['dtype']} B={r['batch']}",
        f"ours {r['ours_images_per_s']:.0f} img/s, torch "
        + (f"{torch_ips:.0f} img/s" if torch_ips else "—"),
        f"torch ÷ ours {r['torch_over_ours']:.2f}" if r.get("torch_over_ours")
        else (r.get("note") or ""), train["seconds"])
  if train.get("status_detail"):
    add("train", "(run)", train["status_detail"], "", train["seconds"])
  return "\n".join(lines)


# ----------------------------------------------------------------- main ---- #

def main(argv):
  del argv
  out = os.path.abspath(_OUT.value)
  for sub in ("", "logs", "junit"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
  plan = TINY if _TINY.value else FULL
  unknown = sorted(set(_PARTS.value) - set(SHARES))
  if unknown:
    raise app.UsageError(f"--parts: unknown {unknown}; the parts are {list(SHARES)}")
  budget = Budget(_BUDGET_S.value, _PARTS.value)
  env = _probe(out)
  report = {"platform": _PLATFORM.value, "tiny": _TINY.value, "budget_s": _BUDGET_S.value,
            "shares": SHARES, "environment": env, "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                     "loadavg_start": harness.loadavg()},
            "parts": {name: {} for name in SHARES}}
  wrong = env.get("error") or (
      f"JAX's default backend is {env['jax_backend']}, not {_PLATFORM.value}"
      if env["jax_backend"] != _PLATFORM.value else None)
  for name in SHARES:
    part = report["parts"][name]
    allowance = budget.allowance(name) if name in _PARTS.value else 0.0
    part["allowance_s"] = round(allowance, 1)
    if name not in _PARTS.value:
      part.update(skipped="skipped: not selected (--parts)", ok=True, complete=True)
      continue
    if wrong:
      part.update(skipped=f"skipped: {wrong}", ok=False, complete=False)
      continue
    if allowance < plan["min_s"][name]:
      part.update(skipped=f"skipped: over budget ({allowance:.0f} s left, needs "
                  f"{plan['min_s'][name]:.0f})", ok=True, complete=False)
      continue
    print(f"[device_check] {name}: up to {allowance:.0f} s", flush=True)
    start = time.perf_counter()
    if name == "tests":
      files = ([(path, None) for path in _TESTS.value] or
               (TINY_TEST_FILES if _TINY.value else TEST_FILES))
      part.update(_tests(out, allowance, files, plan["min_s"]["tests"]))
    elif name == "losses":
      part.update(_losses(out, allowance, plan, _torch_missing(env, "torch",
                                                               "pytorch_metric_learning"),
                          plan["min_s"]["losses"]))
    else:
      needs = ("torch",) if "--models=cnn" in plan["train_flags"] else ("torch", "torchvision")
      part.update(_train(out, allowance, plan, _torch_missing(env, *needs)))
    part["wall_s"] = round(time.perf_counter() - start, 1)
  report["wall_s"] = round(budget.seconds - budget.left(), 1)
  report["host"]["loadavg_end"] = harness.loadavg()
  report["ok"] = all(p["ok"] for p in report["parts"].values())
  report["complete"] = all(p["complete"] for p in report["parts"].values())
  table = _table(report)
  devices = ", ".join(env.get("jax_devices", [])) or "?"
  head = (f"# device_check ({_PLATFORM.value}{', tiny' if _TINY.value else ''})\n\n"
          f"JAX {env.get('jax')} on {devices}; torch {env.get('torch')} "
          f"({', '.join(env.get('torch_devices', [])) or 'no CUDA device'}); "
          f"torchvision {env.get('torchvision')}; "
          f"pytorch-metric-learning {env.get('pytorch_metric_learning')}. "
          f"Budget {_BUDGET_S.value:.0f} s, took {report['wall_s']:.0f} s; "
          f"ok: {report['ok']}, complete: {report['complete']}.\n")
  print(f"\n{head}\n{table}")
  with open(os.path.join(out, "device_check.md"), "w") as f:
    f.write(f"{head}\n{table}\n")
  harness.write_json(os.path.join(out, "device_check.json"), report)
  if not report["ok"]:
    return 1
  return 0 if report["complete"] else 2


if __name__ == "__main__":
  app.run(main)
