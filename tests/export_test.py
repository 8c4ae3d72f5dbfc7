"""Serving a trained run: ``experiments.tools.export`` and ``metric_learning.serving``.

The artifact is run in a subprocess that cannot import Flax, Optax or the
experiments (as on a serving machine with JAX alone) and must give the
embeddings ``load_embedder`` gives.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import cases
import jax
import numpy as np
import pytest

from experiments.tools import embed as embed_tool
from experiments.tools import export as export_tool
from metric_learning import serving
from metric_learning.data import registry
from metric_learning.training import load_embedder
from metric_learning.training import model_identity
from metric_learning.training import same_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a serving machine lacks: the experiments extra and this project's experiments.
BLOCKED = ("flax", "optax", "orbax", "experiments", "ml_collections", "absl", "grain",
           "sklearn")
SERVE = textwrap.dedent("""
    import importlib.abc, sys

    class Blocker(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
          raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None

    sys.meta_path.insert(0, Blocker())

    import jax
    import numpy as np
    from metric_learning import serving

    artifact, inputs, out = sys.argv[1:]
    x = np.load(inputs)["inputs"]
    with open(artifact, "rb") as f:
      exported = jax.export.deserialize(f.read())
    embed = serving.load(artifact)
    arrays = {{"raw_3": np.asarray(exported.call(x[:3])),
               "raw_all": np.asarray(exported.call(x)),
               "served_5": embed(x[:5]), "served_all": embed(x),
               "served_none": embed(x[:0])}}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})
    np.savez(out, loaded=np.asarray(loaded, str), **arrays)
    """).format(blocked=BLOCKED)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return cases.tiny_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def inputs():
  """Raw inputs of held-out classes, as the run's evaluation embeds them."""
  return registry.create("digits")["unseen"].inputs[:37]


@pytest.fixture(scope="module")
def artifact(workdir, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("export") / "embedder.jax")
  export_tool.run(workdir, path)
  return path


def _serve(artifact, inputs, tmp_path) -> dict:
  """Runs the artifact in a Python that cannot import flax, optax or experiments."""
  np.savez(tmp_path / "inputs.npz", inputs=inputs)
  out = tmp_path / "served.npz"
  env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", SERVE, artifact, str(tmp_path / "inputs.npz"),
                         str(out)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with np.load(out) as f:
    return {k: f[k] for k in f.files}


def test_the_artifact_serves_load_embedders_embeddings_with_jax_alone(workdir, artifact,
                                                                    inputs, tmp_path):
  want = load_embedder(workdir)(inputs)
  got = _serve(artifact, inputs, tmp_path)
  assert got["loaded"].tolist() == []       # nothing of flax, optax or experiments
  # One artifact, several batch sizes (a symbolic batch dimension).
  for key, rows in [("raw_3", 3), ("raw_all", 37), ("served_5", 5), ("served_all", 37)]:
    assert got[key].dtype == np.float32, key
    np.testing.assert_allclose(got[key], want[:rows], atol=1e-6, rtol=0, strict=True)
  assert got["served_none"].shape == (0, 8)


def test_the_artifact_has_a_symbolic_batch_and_the_weights_inside(workdir, artifact):
  with open(artifact, "rb") as f:
    exported = jax.export.deserialize(f.read())
  (x,), (y,) = exported.in_avals, exported.out_avals
  assert str(x.shape[0]) == "b" and x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
  assert str(y.shape[0]) == "b" and y.shape[1:] == (8,) and y.dtype == np.float32
  assert {"cpu", "cuda", "tpu"} <= set(exported.platforms)
  # The weights are constants: moving the run away changes nothing.
  moved = artifact + ".moved"
  shutil.copy(artifact, moved)
  x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
  np.testing.assert_array_equal(serving.load(moved)(x), serving.load(artifact)(x))


def test_the_sidecar_describes_the_artifact_and_the_run(workdir, artifact):
  meta = serving.read_metadata(artifact)
  with open(artifact + ".json") as f:
    assert json.load(f) == meta
  assert meta["format"] == serving.FORMAT == 1
  assert meta["input_shape"] == [8, 8, 1] and meta["input_dtype"] == "float32"
  assert meta["embedding_dim"] == 8 and meta["embedding_dtype"] == "float32"
  assert meta["compute_dtype"] == "float32" and meta["model"] == "mlp"
  assert meta["normalized"] is True and meta["metric"] == "euclidean"
  assert meta["input_norm"] is None
  assert meta["step"] == 6 and meta["jax_version"] == jax.__version__
  embed = serving.load(artifact)
  assert (embed.input_shape, embed.embedding_dim, embed.step) == ((8, 8, 1), 8, 6)
  assert same_model(embed.identity, model_identity(workdir))
  assert same_model(embed.identity, load_embedder(workdir).identity)
  assert "workdir" not in embed.identity      # a path of the training machine


def test_served_inputs_are_checked(artifact, workdir):
  embed = serving.load(artifact)
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
  # uint8 images are scaled to [0, 1] as the model scales its training batches,
  # by the served artifact and by load_embedder alike.
  np.testing.assert_allclose(embed(images), embed(images / 255.0), atol=1e-6)
  np.testing.assert_allclose(embed(images), load_embedder(workdir)(images),
                             atol=1e-6)
  with pytest.raises(TypeError, match=r"floating point .* got bool"):
    embed(np.zeros((2, 8, 8, 1), bool))
  with pytest.raises(ValueError, match=r"\[n, 8, 8, 1\] .* got \[2, 8, 8\]"):
    embed(np.zeros((2, 8, 8), np.float32))
  assert embed(np.zeros((2, 8, 8, 1), np.float64)).dtype == np.float32


def test_bfloat16_computes_in_bfloat16_and_returns_float32(workdir, inputs, tmp_path):
  path = str(tmp_path / "bf16.jax")
  meta = export_tool.run(workdir, path, dtype="bfloat16")
  assert meta["compute_dtype"] == "bfloat16"
  embed = serving.load(path)
  got, want = embed(inputs), load_embedder(workdir)(inputs)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=3e-2, rtol=0)
  assert not np.array_equal(got, want)      # bfloat16 arithmetic, not float32
  assert "bf16" in embed.exported.mlir_module()


def test_step_exports_that_checkpoint(workdir, inputs, tmp_path):
  path = str(tmp_path / "step3.jax")
  meta = export_tool.run(workdir, path, step=3, platforms=("cpu",))
  assert meta["step"] == 3 and meta["platforms"] == ["cpu"]
  got = serving.load(path)(inputs)
  np.testing.assert_allclose(got, load_embedder(workdir, step=3)(inputs), atol=1e-6, rtol=0)
  assert not np.allclose(got, load_embedder(workdir)(inputs), atol=1e-3)


def test_mistakes_name_the_flag_and_write_nothing(workdir, tmp_path):
  out = str(tmp_path / "out" / "e.jax")
  os.makedirs(os.path.dirname(out))
  empty = tmp_path / "empty"
  empty.mkdir()
  no_checkpoint = str(tmp_path / "no_checkpoint")
  shutil.copytree(workdir, no_checkpoint)
  shutil.rmtree(os.path.join(no_checkpoint, "checkpoints"))
  cases = [
      (dict(workdir=str(tmp_path / "missing"), output=out), r"^--workdir: no such directory"),
      (dict(workdir=str(empty), output=out), r"^--workdir: .*model\.json"),
      (dict(workdir=no_checkpoint, output=out), r"^--workdir: no restorable checkpoint"),
      (dict(workdir=workdir, output=out, step=4), r"^--step: no checkpoint at step 4 .* "
                                                   r"\[3, 6\]"),
      (dict(workdir=workdir, output=str(tmp_path / "nope" / "e.jax")),
       r"^--output: no such folder .*nope"),
      (dict(workdir=workdir, output=str(tmp_path)), r"^--output: .* is a folder"),
      (dict(workdir=workdir, output=out, dtype="float16"), r"^--dtype must be one of"),
      (dict(workdir=workdir, output=out, platforms=("cpu", "gpu")), r"^--platforms: .*'cpu,gpu'"),
  ]
  for kwargs, pattern in cases:
    with pytest.raises(embed_tool.ToolError, match=pattern):
      export_tool.run(kwargs.pop("workdir"), kwargs.pop("output"), **kwargs)
  assert os.listdir(os.path.dirname(out)) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_an_unwritable_output_folder_names_the_flag(workdir, tmp_path):
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o500)
  try:
    with pytest.raises(embed_tool.ToolError, match=r"^--output: cannot write in"):
      export_tool.run(workdir, str(folder / "e.jax"))
  finally:
    folder.chmod(0o700)


def test_a_failed_write_leaves_neither_file_nor_temporary(workdir, tmp_path, monkeypatch):
  exported = export_tool.embedder.export_embedder(workdir, platforms=("cpu",))
  monkeypatch.setattr(export_tool.embedder, "export_embedder", lambda *a, **k: exported)

  def refuse(src, dst):
    raise PermissionError(13, "Permission denied", dst)

  monkeypatch.setattr(os, "replace", refuse)
  with pytest.raises(embed_tool.ToolError, match=r"^--output: cannot write .*denied"):
    export_tool.run(workdir, str(tmp_path / "e.jax"))
  assert os.listdir(tmp_path) == []


@pytest.mark.slow   # launches the command line
def test_the_command_line_exports_and_fails_in_one_line(workdir, tmp_path):
  def cli(*args):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "experiments.tools.export", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)

  out = str(tmp_path / "e.jax")
  ok = cli(f"--workdir={workdir}", f"--output={out}", "--dtype=float32", "--step=6")
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.startswith("exported mlp (checkpoint step 6, dim 8, float32, for cpu,")
  assert serving.read_metadata(out)["step"] == 6
  for proc, words in [
      (cli(f"--workdir={tmp_path / 'missing'}", f"--output={tmp_path / 'x.jax'}"),
       ["--workdir", "missing"]),
      (cli(f"--workdir={workdir}", f"--output={tmp_path / 'no' / 'x.jax'}"), ["--output"]),
      (cli(f"--workdir={workdir}", f"--output={tmp_path / 'x.jax'}", "--dtype=float16"),
       ["--dtype", "bfloat16"]),
      (cli(f"--workdir={workdir}"), ["--output"])]:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert proc.stdout == ""
  assert not os.path.exists(tmp_path / "x.jax")
