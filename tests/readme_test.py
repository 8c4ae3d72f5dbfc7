"""The README cannot drift from the code: every command in its code blocks runs.

Python blocks are executed as written. Every line of every ``bash`` block is a
command, run in document order in a scratch copy of the repository, with two
deliberate, visible changes:

* the set-up prefix (``python3 -m venv .venv && . .venv/bin/activate && pip
  install -e ".[...]" &&``) is checked to be the one CI runs and then dropped:
  this test already runs inside that environment (``.ci/run`` performs exactly
  that install), so the command after it is what is run;
* size flags are shrunk (``SHRINK``; a training run without a step count gets
  ``--config.num_steps=30``), so the benchmark, the sweep and the runs take
  seconds: the flags themselves — their names and that they are accepted — are
  still exercised;
* the training runs after the first (the default run, whose plots are checked
  here) draw no plots and skip the raw-pixel baseline (``LATER_RUNS``): the same
  code, on other parts.

The README's test command itself is the one command not run here: it is what
runs this file; ``test_ci_runs_the_readme_test_command`` checks CI uses it.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = re.compile(r'^python3 -m venv \.venv && \. \.venv/bin/activate && '
                   r'pip install -e "\.\[(\w+)\]" && ')
SHRINK = (
    (re.compile(r"--batch_sizes=[\d,]+"), "--batch_sizes=64"),
    (re.compile(r"--repeats=\d+"), "--repeats=1"),
    (re.compile(r"--seeds=[\d,]+"), '--seeds=0 --max_steps=20 --only="400 steps"'),
    (re.compile(r"--config\.num_steps=\d+"), "--config.num_steps=30"),
)


def _readme() -> str:
  with open(os.path.join(ROOT, "README.md")) as f:
    return f.read()


def _test_command() -> str:
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    return next(line.strip() for line in f if "python -m pytest" in line)


def blocks():
  """``(language, source)`` of every fenced code block, in order."""
  return re.findall(r"```(\w+)\n(.*?)```", _readme(), flags=re.S)


LATER_RUNS = " --config.plots=False --config.raw_baseline=False"


def steps():
  """``("python", source)`` per Python block and ``("bash", command)`` per command
  of a bash block, in document order, after the documented substitutions."""
  first_run = True
  for lang, source in blocks():
    if lang == "python":
      yield lang, source
      continue
    for line in source.splitlines():
      line = line.split("  #")[0].strip()
      if not line or line == _test_command():
        continue
      m = SETUP.match(line)
      if m:
        line = line[m.end():]
      for pattern, replacement in SHRINK:
        line = pattern.sub(replacement, line)
      if "experiments.main" in line:
        if "--config.num_steps" not in line:
          line += " --config.num_steps=30"
        if not first_run:
          line += LATER_RUNS
        first_run = False
      yield lang, line


def commands() -> list[str]:
  return [command for lang, command in steps() if lang == "bash"]


def test_ci_runs_the_readme_test_command():
  assert _test_command() in _readme()


def test_readme_has_the_two_setup_commands():
  lines = [line.strip() for lang, src in blocks() if lang == "bash" for line in src.splitlines()]
  main = [line for line in lines if SETUP.match(line) and "experiments.main" in line]
  assert main == ['python3 -m venv .venv && . .venv/bin/activate && pip install -e '
                  '".[experiments]" && python -m experiments.main']
  assert _test_command() in lines
  assert all(lang in ("bash", "python") for lang, _ in blocks())


@pytest.mark.slow
def test_every_readme_command_runs_in_document_order(tmp_path):
  scratch = tmp_path / "repo"
  files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  for f in files:
    if f.startswith(("experiments/", "README.md")):
      os.makedirs(scratch / os.path.dirname(f), exist_ok=True)
      shutil.copy(os.path.join(ROOT, f), scratch / f)
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  cwd = os.getcwd()
  ran = []
  try:
    os.chdir(scratch)
    for lang, command in steps():
      if lang == "python":
        exec(compile(command, "README.md", "exec"), {})  # pylint: disable=exec-used
        continue
      out = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                           text=True, timeout=600)
      assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
      assert "Traceback" not in out.stderr, command
      ran.append(command)
  finally:
    os.chdir(cwd)
  assert ran == commands()
  assert os.path.exists(scratch / "workdir" / "default" / "summary.json")
  # The first run, as written: its plots and its raw-pixel baseline.
  plots = sorted(os.listdir(scratch / "workdir" / "default" / "plots"))
  assert len(plots) >= 4 and all(p.endswith(".png") for p in plots), plots
  with open(scratch / "workdir" / "default" / "summary.json") as f:
    assert any(key.startswith("raw/") for key in json.load(f))


def _experiments_page_commands() -> list[str]:
  """The training commands of the "Try it" block of docs/experiments.md."""
  with open(os.path.join(ROOT, "docs", "experiments.md")) as f:
    text = f.read()
  block = re.search(r"Try it — each command is run by the test suite.*?```bash\n(.*?)```",
                    text, flags=re.S)
  assert block, "docs/experiments.md lost its 'Try it' block"
  return [line.strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("command", _experiments_page_commands())
def test_every_command_of_the_experiments_page_runs(command, tmp_path):
  """As written, with fewer steps, no raw-pixel baseline and no plots (speed only)."""
  assert command.startswith("python -m experiments.main ")
  args = re.sub(r"--config\.num_steps=\d+", "--config.num_steps=4", command).split()[3:]
  args = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path / 'w'}" for a in args]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "experiments.main", *args,
                        "--config.raw_baseline=False", "--config.plots=False",
                        "--config.progress_bar=False"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
  assert (tmp_path / "w" / "summary.json").exists()


@pytest.mark.slow
def test_the_reality_check_command_of_the_experiments_page_runs(tmp_path):
  """As written, shrunk: 2 folds, 1 trial, 1 seed, 4 steps per run."""
  with open(os.path.join(ROOT, "docs", "experiments.md")) as f:
    text = f.read()
  block = re.search(r"## Reality check.*?```bash\n(.*?)```", text, flags=re.S)
  command, = [line.strip() for line in block.group(1).splitlines() if line.strip()]
  assert command.startswith("python -m experiments.reality_check ")
  for pattern, value in ((r"--folds=\d+", "--folds=2"), (r"--trials=\d+", "--trials=1"),
                         (r"--seeds=[\d,]+", "--seeds=0"),
                         (r"--workdir=\S+", f"--workdir={tmp_path / 'rc'}")):
    command = re.sub(pattern, value, command)
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", *command.split()[2:], "--config.num_steps=4"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
  for name in ("results.md", "results.json", "results.png"):
    assert (tmp_path / "rc" / name).exists(), name
