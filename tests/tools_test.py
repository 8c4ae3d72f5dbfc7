"""The tools around a finished workdir: load_embedder, embed, enroll, query; notebook 02."""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import cases
import numpy as np
import pytest
from PIL import Image

from experiments.tools import embed as embed_tool
from experiments.tools import enroll as enroll_tool
from experiments.tools import query as query_tool
from experiments import train
from experiments.configs import test as test_config
from metric_learning import index as index_lib
from metric_learning.data import registry
from metric_learning.training import load_embedder
from metric_learning.training import model_identity
from metric_learning.training import same_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = {5: "five", 6: "six", 7: "seven"}
CURVES_MARKER = "# [curves]"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return cases.tiny_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def other_runs(workdir, tmp_path_factory):
  """Two other encoders, made from the run without training: ``"config"``, its
  weights under another config.json (another run, to the tools), and
  ``"step"``, its config at its earlier checkpoint (step 3)."""
  root = tmp_path_factory.mktemp("others")
  out = {name: str(root / name) for name in ("config", "step")}
  for path in out.values():
    shutil.copytree(workdir, path)
  with open(os.path.join(out["config"], "config.json")) as f:
    config = json.load(f)
  config["seed"] += 1
  with open(os.path.join(out["config"], "config.json"), "w") as f:
    json.dump(config, f)
  shutil.rmtree(os.path.join(out["step"], "checkpoints", "6"))
  return out


@pytest.fixture(scope="module")
def unseen():
  return registry.create("digits")["unseen"]


def _write_png(path, image):
  """An 8×8×1 image in [0, 1] as an 8-bit grayscale PNG."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), mode="L").save(path)


def _read_png(path):
  with Image.open(path) as im:
    return (np.asarray(im.convert("L"), np.float32) / 255.0)[..., None]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, unseen):
  """gallery/ and queries/: 12 and 8 disjoint samples of "five" and "six" each as PNGs,
  plus a hidden .ipynb_checkpoints/ folder with an image that is no class."""
  root = tmp_path_factory.mktemp("folders")
  for label in (5, 6):
    rows = np.flatnonzero(unseen.labels == label)
    for i in rows[:12]:
      _write_png(str(root / "gallery" / WORDS[label] / f"{i:04d}.png"), unseen.inputs[i])
    for i in rows[12:20]:
      _write_png(str(root / "queries" / WORDS[label] / f"{i:04d}.png"), unseen.inputs[i])
  _write_png(str(root / "gallery" / ".ipynb_checkpoints" / "0000-checkpoint.png"),
             unseen.inputs[0])
  return str(root / "gallery"), str(root / "queries")


def _cli(tool, *args):
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", f"experiments.tools.{tool}", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------ embedder ---- #

def test_load_embedder_reproduces_the_runs_evaluation_embeddings(workdir):
  splits = registry.create("digits")
  inputs = np.concatenate([splits["seen"].inputs, splits["unseen"].inputs])
  labels = np.concatenate([splits["seen"].labels, splits["unseen"].labels])
  index = index_lib.EmbeddingIndex.load(os.path.join(workdir, "index.npz"))
  embed = load_embedder(workdir)
  assert embed.input_shape == (8, 8, 1)
  assert embed.step == 6
  assert same_model(index.model, embed.identity)     # the run's index records its model
  np.testing.assert_array_equal(index.labels, labels)
  np.testing.assert_allclose(embed(inputs), index.embeddings, atol=1e-5, rtol=0, strict=True)


def test_model_identity_is_the_config_hash_and_the_embedders_step(workdir, other_runs,
                                                                  tmp_path):
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
  identity = model_identity(workdir)
  assert identity == {"config_sha256": digest, "step": 6,
                      "workdir": os.path.abspath(workdir)}
  assert load_embedder(workdir).identity == identity
  # Another checkpoint, another config: another model. The step load_embedder
  # restores is the one it reports.
  assert model_identity(workdir, 3)["step"] == 3
  assert not same_model(identity, model_identity(workdir, 3))
  assert load_embedder(other_runs["step"]).identity == {**model_identity(workdir, 3),
                                                        "workdir": other_runs["step"]}
  assert not same_model(identity, model_identity(other_runs["config"]))
  # The file's formatting and the workdir's place do not count.
  moved = tmp_path / "moved"
  moved.mkdir()
  with open(moved / "config.json", "w") as f:
    json.dump(dict(reversed(list(config.items()))), f, indent=4)
  assert same_model(model_identity(str(moved), 6), identity)
  assert not same_model(None, identity) and not same_model(identity, None)
  with pytest.raises(FileNotFoundError, match=r"config.json.*not a workdir"):
    model_identity(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint in"):
    model_identity(str(moved))


# --------------------------------------------------------------- embed ---- #

def test_embed_npz_without_channel_axis_names_labels_from_the_run(workdir, unseen, tmp_path,
                                                                   capsys):
  pick = np.flatnonzero(np.isin(unseen.labels, (5, 6)))[:10]
  path, out = str(tmp_path / "in.npz"), str(tmp_path / "sub" / "out.npz")
  np.savez(path, inputs=unseen.inputs[pick, ..., 0], labels=unseen.labels[pick])
  result = embed_tool.run(workdir, path, out)
  assert capsys.readouterr().out.strip() == (
      f"embedded 10 rows, dim 8, checkpoint step 6 -> {out}")
  with np.load(out) as f:
    assert sorted(f.files) == ["embeddings", "labels", "names", "rows"]
    assert f["embeddings"].shape == (10, 8)
    np.testing.assert_allclose(f["embeddings"], load_embedder(workdir)(unseen.inputs[pick]),
                               atol=1e-6, strict=True)
    np.testing.assert_array_equal(f["labels"], unseen.labels[pick])
    assert json.loads(str(f["names"])) == {"5": "5", "6": "6"}   # the run's labels.json
    assert f["rows"].tolist() == [f"row {i}" for i in range(10)]
  assert result["step"] == 6
  assert not [f for f in os.listdir(tmp_path / "sub") if "tmp" in f]


def test_embed_image_folder_skips_hidden_folders_and_names_classes(workdir, folders, tmp_path):
  gallery, _ = folders
  out = str(tmp_path / "out.npz")
  embed_tool.run(workdir, gallery, out)
  with np.load(out) as f:
    assert f["embeddings"].shape == (24, 8)
    np.testing.assert_array_equal(f["labels"], [0] * 12 + [1] * 12)
    assert json.loads(str(f["names"])) == {"0": "five", "1": "six"}
    rows = f["rows"].tolist()
  assert all(r.startswith(("five/", "six/")) for r in rows)
  direct = load_embedder(workdir)(np.stack([_read_png(os.path.join(gallery, r)) for r in rows]))
  with np.load(out) as f:
    np.testing.assert_allclose(f["embeddings"], direct, atol=1e-5, strict=True)


def test_colour_and_larger_images_become_the_models_gray_8x8(workdir, unseen, tmp_path):
  image = np.round(unseen.inputs[0, ..., 0] * 255).astype(np.uint8)
  gray, colour = tmp_path / "gray", tmp_path / "colour"
  gray.mkdir()
  colour.mkdir()
  Image.fromarray(image, mode="L").save(gray / "a.png")
  Image.fromarray(np.repeat(image[..., None], 3, axis=2), mode="RGB").save(colour / "a.png")
  Image.fromarray(image, mode="L").resize((16, 16), Image.NEAREST).save(colour / "b.png")
  embed = load_embedder(workdir)
  want = embed_tool.read_inputs(str(gray), embed.input_shape)
  got = embed_tool.read_inputs(str(colour), embed.input_shape)
  assert got.labels is None and got.rows == ["a.png", "b.png"]
  assert got.inputs.shape == (2, 8, 8, 1)
  np.testing.assert_allclose(got.inputs[0], want.inputs[0], atol=1 / 255, strict=True)
  # 16×16 back to 8×8 (bilinear, antialiased: a little blurred): the same digit.
  assert np.corrcoef(got.inputs[1].ravel(), want.inputs[0].ravel())[0, 1] > 0.9


def test_mistakes_name_the_flag(workdir, folders, tmp_path):
  gallery, _ = folders
  bad = {"missing": str(tmp_path / "nope.npz"), "no_inputs": str(tmp_path / "x.npz"),
         "shape": str(tmp_path / "s.npz"), "names": str(tmp_path / "n.npz")}
  np.savez(bad["no_inputs"], images=np.zeros((2, 8, 8, 1), np.float32))
  np.savez(bad["shape"], inputs=np.zeros((2, 7, 8, 1), np.float32))
  np.savez(bad["names"], inputs=np.zeros((2, 8, 8, 1), np.float32), labels=np.array([0, 3]),
           names=np.array(["a", "b"]))
  out = str(tmp_path / "out.npz")
  with pytest.raises(embed_tool.ToolError, match=r"^--inputs: no such file or folder"):
    embed_tool.run(workdir, bad["missing"], out)
  with pytest.raises(embed_tool.ToolError, match=r"^--inputs: .* has no array 'inputs'"):
    embed_tool.run(workdir, bad["no_inputs"], out)
  with pytest.raises(embed_tool.ToolError, match=r"\[2, 7, 8, 1\] but the model takes "
                                                 r"\[n, 8, 8, 1\]"):
    embed_tool.run(workdir, bad["shape"], out)
  with pytest.raises(embed_tool.ToolError, match=r"'names' does not name every label"):
    embed_tool.run(workdir, bad["names"], out)
  with pytest.raises(embed_tool.ToolError, match=r"^--workdir: .*model.json"):
    embed_tool.run(str(tmp_path), gallery, out)
  with pytest.raises(embed_tool.ToolError, match=r"^--index: no such index .* leave out "
                                                 r"--append"):
    enroll_tool.run(workdir, gallery, str(tmp_path / "i.npz"), append=True)
  np.savez(bad["no_inputs"], inputs=np.zeros((2, 8, 8, 1), np.float32))
  with pytest.raises(embed_tool.ToolError, match=r"^--gallery: .* has no labels"):
    enroll_tool.run(workdir, bad["no_inputs"], str(tmp_path / "i.npz"))
  enroll_tool.run(workdir, gallery, str(tmp_path / "i.npz"))
  with pytest.raises(embed_tool.ToolError, match=r"^--k must be in \[1, 24\]"):
    query_tool.run(workdir, str(tmp_path / "i.npz"), gallery, k=25)
  assert not os.path.exists(out)


# ------------------------------------------------------ enroll / query ---- #

def test_enroll_by_name_then_query_held_out_samples(workdir, folders, tmp_path, capsys):
  gallery, queries = folders
  path = str(tmp_path / "index.npz")
  index = enroll_tool.run(workdir, gallery, path)
  assert capsys.readouterr().out.startswith(
      f"enrolled 24 samples of 2 classes (2 new) -> {path}")
  assert index.names == {0: "five", 1: "six"} and len(index) == 24
  assert index.model == load_embedder(workdir).identity
  assert index_lib.EmbeddingIndex.load(path).model == index.model
  result = query_tool.run(workdir, path, queries, k=3)
  captured = capsys.readouterr()
  lines = captured.out.strip().splitlines()
  assert captured.err == ""                     # the index's model is the workdir's: no warning

  # The same by hand: embed the decoded PNGs, enroll them, predict names.
  embed = load_embedder(workdir)

  def folder(root):
    files = [(name, f) for name in ("five", "six")
             for f in sorted(os.listdir(os.path.join(root, name)))]
    return (np.stack([_read_png(os.path.join(root, n, f)) for n, f in files]),
            [n for n, _ in files], [f"{n}/{f}" for n, f in files])

  g_inputs, g_names, _ = folder(gallery)
  q_inputs, q_names, q_rows = folder(queries)
  direct = index_lib.EmbeddingIndex.create(
      embed(g_inputs), [("five", "six").index(n) for n in g_names], names={0: "five", 1: "six"})
  predicted = direct.predict_names(embed(q_inputs), k=3)
  accuracy = np.mean([p == t for p, t in zip(predicted, q_names)])
  assert result["predicted"] == predicted
  assert result["true"] == q_names and result["rows"] == q_rows
  assert result["accuracy"] == pytest.approx(accuracy)
  assert len(lines) == 17
  assert [line.split(" -> ")[0] for line in lines[:16]] == q_rows
  assert lines[0].split(" -> ")[1].startswith(predicted[0] + " (")
  correct = sum(p == t for p, t in zip(predicted, q_names))
  assert lines[-1] == f"top-1 accuracy by class name: {accuracy:.4f} ({correct}/16)"
  assert accuracy > 0.5


def test_append_matches_names_and_gives_new_names_fresh_labels(workdir, folders, unseen,
                                                               tmp_path, capsys):
  gallery, _ = folders
  path = str(tmp_path / "index.npz")
  enroll_tool.run(workdir, gallery, path)           # five -> 0, six -> 1
  rows = np.concatenate([np.flatnonzero(unseen.labels == 7)[:5],
                         np.flatnonzero(unseen.labels == 5)[20:23]])
  npz = str(tmp_path / "more.npz")
  # Its own label 0 is "seven": a label the index gives to "five".
  np.savez(npz, inputs=unseen.inputs[rows], labels=np.array([0] * 5 + [1] * 3),
           names=np.array(["seven", "five"]))
  capsys.readouterr()
  index = enroll_tool.run(workdir, npz, path, append=True)
  assert capsys.readouterr().out.startswith(
      f"enrolled 8 samples of 2 classes (1 new) -> {path}: 32 samples of 3 classes")
  assert index.names == {0: "five", 1: "six", 2: "seven"}
  np.testing.assert_array_equal(index.labels[24:], [2] * 5 + [0] * 3)
  assert index_lib.EmbeddingIndex.load(path).names == index.names
  assert index_lib.EmbeddingIndex.load(path).model == load_embedder(workdir).identity
  # The run's own index names its labels 0-9 "0", ..., "9": "five" and "seven" are
  # new names there, and get labels above 9 in sorted name order.
  run_index = str(tmp_path / "run_index.npz")
  with open(os.path.join(workdir, "index.npz"), "rb") as src, open(run_index, "wb") as dst:
    dst.write(src.read())
  index = enroll_tool.run(workdir, npz, run_index, append=True)
  assert (index.name_of(10), index.name_of(11), index.name_of(5)) == ("five", "seven", "5")
  np.testing.assert_array_equal(index.labels[-8:], [11] * 5 + [10] * 3)


# ------------------------------------------- one model per index ---- #

def _one_line_refusal(proc, *words):
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert all(w in proc.stderr for w in words), proc.stderr
  assert proc.stdout == ""


@pytest.mark.slow   # launches the command line
def test_query_and_append_refuse_an_index_of_another_model(workdir, other_runs, folders,
                                                           tmp_path):
  gallery, queries = folders
  path = str(tmp_path / "index.npz")
  enroll_tool.run(workdir, gallery, path)
  with open(path, "rb") as f:
    before = f.read()
  made_by = f"{os.path.abspath(workdir)} at checkpoint step 6"
  other = f"{os.path.abspath(other_runs['config'])} at checkpoint step 6"
  _one_line_refusal(_cli("query", f"--workdir={other_runs['config']}", f"--index={path}",
                         f"--inputs={queries}"), "--index", made_by, other, "not comparable")
  _one_line_refusal(_cli("enroll", f"--workdir={other_runs['config']}", f"--gallery={gallery}",
                         f"--index={path}", "--append"), "--index", made_by, other)
  # Another checkpoint of the same run is another model too.
  step3 = re.escape(f"{os.path.abspath(other_runs['step'])} at checkpoint step 3")
  with pytest.raises(embed_tool.ToolError, match=rf"^--index: .*{re.escape(made_by)}.*{step3}"):
    query_tool.run(other_runs["step"], path, queries)
  with pytest.raises(embed_tool.ToolError, match=rf"^--index: .*{re.escape(made_by)}.*{step3}"):
    enroll_tool.run(other_runs["step"], gallery, path, append=True)
  with open(path, "rb") as f:
    assert f.read() == before
  assert sorted(os.listdir(tmp_path)) == ["index.npz"]


@pytest.mark.slow   # launches the command line
def test_enroll_replaces_an_existing_index_only_when_asked(workdir, other_runs, folders,
                                                           tmp_path):
  gallery, _ = folders
  path = str(tmp_path / "index.npz")
  enroll_tool.run(workdir, gallery, path)
  with open(path, "rb") as f:
    before = f.read()
  _one_line_refusal(_cli("enroll", f"--workdir={workdir}", f"--gallery={gallery}",
                         f"--index={path}"), "--index", "already exists", "--append",
                    "--overwrite")
  with pytest.raises(embed_tool.ToolError, match=r"^--append and --overwrite contradict"):
    enroll_tool.run(workdir, gallery, path, append=True, overwrite=True)
  with open(path, "rb") as f:
    assert f.read() == before
  index = enroll_tool.run(other_runs["config"], gallery, path, overwrite=True)
  assert len(index) == 24
  assert same_model(index_lib.EmbeddingIndex.load(path).model,
                    model_identity(other_runs["config"]))
  assert sorted(os.listdir(tmp_path)) == ["index.npz"]


def test_an_index_without_a_model_is_queried_with_a_warning_but_not_appended_to(
    workdir, folders, tmp_path, capsys):
  """An index written by library code (or before indexes recorded their model)."""
  gallery, queries = folders
  path = str(tmp_path / "index.npz")
  index = enroll_tool.run(workdir, gallery, path)
  dataclasses.replace(index, model=None).save(path)
  with open(path, "rb") as f:
    before = f.read()
  capsys.readouterr()
  result = query_tool.run(workdir, path, queries)
  captured = capsys.readouterr()
  assert captured.err.startswith(f"WARNING --index: {path!r} does not record which model")
  assert len(captured.err.strip().splitlines()) == 1
  assert result["accuracy"] > 0.5
  with pytest.raises(embed_tool.ToolError, match=r"^--index: .* does not record which model "
                                                 r"embedded it.*--overwrite"):
    enroll_tool.run(workdir, gallery, path, append=True)
  with open(path, "rb") as f:
    assert f.read() == before
  assert enroll_tool.run(workdir, gallery, path, overwrite=True).model is not None


# ---------------------------------------------------------- command line ---- #

@pytest.mark.slow   # launches the command line
def test_command_lines_print_predictions_and_fail_in_one_line(workdir, folders, tmp_path):
  gallery, queries = folders
  path = str(tmp_path / "index.npz")
  enroll_tool.run(workdir, gallery, path)
  ok = _cli("query", f"--workdir={workdir}", f"--index={path}", f"--inputs={queries}")
  assert ok.returncode == 0, ok.stderr
  lines = ok.stdout.strip().splitlines()
  assert len(lines) == 17 and lines[0].startswith("five/")
  assert lines[-1].startswith("top-1 accuracy by class name: ")
  assert "Traceback" not in ok.stderr

  rgb = str(tmp_path / "rgb.npz")
  np.savez(rgb, inputs=np.zeros((3, 8, 8, 3), np.float32))
  for proc, words in [
      (_cli("embed", f"--workdir={tmp_path / 'missing'}", f"--inputs={queries}",
            f"--output={tmp_path / 'o.npz'}"), ["--workdir", "missing"]),
      (_cli("embed", f"--workdir={workdir}", f"--inputs={rgb}",
            f"--output={tmp_path / 'o.npz'}"), ["--inputs", "[3, 8, 8, 3]", "[n, 8, 8, 1]"]),
      (_cli("enroll", f"--workdir={workdir}", f"--index={path}"), ["--gallery"])]:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert proc.stdout == ""
  assert not os.path.exists(tmp_path / "o.npz")


def test_a_run_on_image_files_embeds_folders_with_its_evaluation_views(tmp_path):
  """A streamed run's tools read images as its evaluation did: the transform's
  views (here resize, centre crop and a flip), their embeddings averaged."""
  import protocol_fixtures

  from metric_learning.data import pipeline
  from metric_learning.data import protocols
  root = protocol_fixtures.make_image_folder(str(tmp_path / "imgs"), classes=4, per_class=4)
  cfg = test_config.get_config()
  cfg.data = dict(name="image_folder", path=str(root), seen_classes=(0, 1))
  cfg.model = dict(name="cnn", widths=(4,), embedding_dim=4)
  cfg.augment = dict(size=(12, 10), eval_resize=(16, 14), flip=True, tta="flip")
  cfg.sampler.p, cfg.sampler.k = 2, 2
  cfg.evals = {"unseen": dict(name="retrieval", split="unseen")}
  cfg.num_steps, cfg.plots, cfg.raw_baseline = 2, False, False
  run = str(tmp_path / "run")
  train.train_and_evaluate(cfg, run)
  got = embed_tool.run(run, str(root), str(tmp_path / "out.npz"))
  files = protocols.image_folder(str(root))["all"]
  transform, in_memory = embed_tool.workdir_transform(run)
  assert transform.num_views == 2 and transform.input_shape == (12, 10, 3) and not in_memory
  want = pipeline.embed_files(load_embedder(run), files, transform, 5)
  np.testing.assert_allclose(got["embeddings"], want, rtol=1e-5, atol=1e-6)
  # ... and as the model itself embeds the uint8 views it evaluates on (it scales
  # them to [0, 1]; load_embedder once fed them unscaled).
  from metric_learning.training import embedder
  model, _ = embedder.load_model(run, None)
  model.eval()
  direct = pipeline.embed_files(lambda x: np.asarray(model(x)), files, transform, 5)
  np.testing.assert_allclose(got["embeddings"], direct, rtol=1e-5, atol=1e-5)
  assert got["labels"].tolist() == files.labels.tolist()


def test_a_run_on_arrays_embeds_rows_with_its_evaluation_views(workdir, unseen, tmp_path):
  """A run on arrays whose augment resizes and flips embeds an .npz's rows (at the
  data's own 8×8) as its evaluation embedded that split: the mean over the views."""
  from metric_learning.data import sources
  cfg = test_config.get_config()
  cfg.augment = dict(size=(10, 10), max_shift=1, flip=True, tta="flip")
  cfg.num_steps, cfg.plots, cfg.raw_baseline = 2, False, False
  run = str(tmp_path / "run")
  train.train_and_evaluate(cfg, run)
  assert embed_tool.workdir_transform(run)[1] is True
  rows = str(tmp_path / "rows.npz")
  np.savez(rows, inputs=unseen.inputs[:7], labels=unseen.labels[:7])
  got = embed_tool.run(run, rows, str(tmp_path / "out.npz"))
  plain = load_embedder(run)
  assert plain.input_shape == (10, 10, 1)
  want = sources.source(unseen.subset(np.arange(7)), cfg.augment).embed(plain, 4)
  np.testing.assert_allclose(got["embeddings"], want, rtol=1e-5, atol=1e-6)
  # Without resizing or views the run takes rows as they are (the tools' old path).
  assert embed_tool.workdir_transform(workdir)[0] is None


# ------------------------------------------------------------ evaluate ---- #

def _tree(path):
  """Every file under ``path`` with its bytes: what "untouched" means."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), path)] = f.read()
  return out


@pytest.mark.slow   # launches the command line
def test_evaluate_reruns_other_evaluators_without_touching_the_run(workdir, tmp_path):
  import shutil
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  before = _tree(run)
  with open(os.path.join(run, "summary.json")) as f:
    trained = json.load(f)
  proc = _cli("evaluate", f"--workdir={run}", "--config.evals.unseen_fewshot.ways=3",
              "--config.raw_baseline=False")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(run, "evals", "step_6.json")) as f:
    out = json.load(f)
  assert out["step"] == 6 and out["evals"]["unseen_fewshot"]["ways"] == 3
  assert "unseen_fewshot/3way_1shot_accuracy" in out["results"]
  # The newest checkpoint's figures are the run's own final evaluation.
  assert out["results"]["seen/map_at_r"] == pytest.approx(trained["seen/map_at_r"], abs=1e-6)
  assert "checkpoint step 6" in proc.stdout
  after = _tree(run)
  assert {k: v for k, v in after.items() if not k.startswith("evals")} == before
  # An earlier checkpoint on request; a missing one or a training field is refused.
  assert _cli("evaluate", f"--workdir={run}", "--step=3").returncode == 0
  assert os.path.exists(os.path.join(run, "evals", "step_3.json"))
  _one_line_refusal(_cli("evaluate", f"--workdir={run}", "--step=4"), "--step",
                    "its steps are [3, 6]")
  _one_line_refusal(_cli("evaluate", f"--workdir={run}", "--config.num_steps=9"),
                    "only the evaluation may change", "num_steps: 6 → 9")
  _one_line_refusal(_cli("evaluate", f"--workdir={tmp_path / 'nothing'}"), "--workdir")
