"""Tests of metric_learning.data.pipeline on a small folder of real JPEGs."""

import dataclasses
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

from cases import write_noise_images
from PIL import Image

from metric_learning.data import pipeline
from metric_learning.data.files import ImageFiles
from metric_learning.data.sampler import PKSampler
from metric_learning.data.transforms import Transform
from metric_learning.data.transforms import decode

TRAIN = Transform(size=(16, 12), resize=(20, 14), random_resized_crop=(0.3, 1.0), flip=True,
                  erasing=0.5, color_jitter=0.2)
EVAL = Transform(size=(16, 12), resize=(20, 14), tta="five_crop_flip")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """18 JPEGs of 6 classes, of different sizes (each a noise image)."""
  paths = write_noise_images(tmp_path_factory.mktemp("jpegs"),
                             [(18 + 3 * i, 24 + i) for i in range(18)], suffix="jpg", seed=0)
  return ImageFiles(np.array(paths), np.arange(18) % 6, name="jpegs")


def sampler_of(files, seed=1):
  return PKSampler(files.labels, p=3, k=2, seed=seed)


def train(files, **kwargs):
  args = dict(seed=7, start_step=0, num_steps=5)
  args.update(kwargs)
  return list(pipeline.train_batches(files, sampler_of(files), TRAIN, **args))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], strict=True)


def test_train_batches_reference(files):
  """Every batch equals the brute-force reference: sampler indices, decode, train(rng)."""
  exact = dataclasses.replace(TRAIN, draft=False)
  batches = list(pipeline.train_batches(files, sampler_of(files), exact, seed=7, start_step=2,
                                        num_steps=5))
  drafted = train(files, start_step=2, num_steps=5)
  sampler = sampler_of(files)
  assert len(batches) == 3
  for step, batch in zip(range(2, 5), batches):
    index = sampler.batch(step)
    assert batch["inputs"].dtype == np.uint8 and batch["inputs"].shape == (6, 16, 12, 3)
    assert batch["labels"].dtype == np.int32 and batch["where"].dtype == bool
    np.testing.assert_array_equal(batch["labels"], files.labels[index], strict=True)
    assert batch["where"].all()
    expected = np.stack([TRAIN.train(decode(files.paths[i]), np.random.default_rng([7, step, r]))
                         for r, i in enumerate(index)])
    np.testing.assert_array_equal(batch["inputs"], expected, strict=True)
  # With draft (the default) each row is train_file of its path and rng.
  for step, batch in zip(range(2, 5), drafted):
    expected = np.stack([TRAIN.train_file(files.paths[i], np.random.default_rng([7, step, r]))
                         for r, i in enumerate(sampler.batch(step))])
    np.testing.assert_array_equal(batch["inputs"], expected, strict=True)
  assert any(a["inputs"].tobytes() != b["inputs"].tobytes() for a, b in zip(batches, drafted))


def test_deterministic_and_resumable(files):
  full = train(files, threads=2)
  assert_batches_equal(full, train(files, threads=0))              # fresh, single-threaded
  assert_batches_equal(full[3:], train(files, start_step=3))       # resume at step 3
  other_seed = train(files, seed=8, num_steps=1)
  assert other_seed[0]["inputs"].tobytes() != full[0]["inputs"].tobytes()


def test_process_shares_concatenate_to_the_global_batch(files):
  full = train(files)
  shares = [train(files, process_index=i, process_count=2) for i in range(2)]
  for s, batch in enumerate(full):
    assert shares[0][s]["inputs"].shape == (3, 16, 12, 3)
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([shares[0][s][key], shares[1][s][key]]), batch[key], strict=True)
  with pytest.raises(ValueError, match="process_count=4"):
    train(files, process_count=4)


@pytest.mark.slow
def test_workers_match_in_process(files):
  """Two grain worker processes give the batches of in-process decoding (train and eval)."""
  assert_batches_equal(train(files, workers=2), train(files))
  a = list(pipeline.eval_batches(files, EVAL, 4, workers=2))
  b = list(pipeline.eval_batches(files, EVAL, 4))
  assert len(a) == len(b) == 5
  for (xa, wa), (xb, wb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb, strict=True)
    np.testing.assert_array_equal(wa, wb, strict=True)


def test_eval_batches_cover_every_sample_once(files):
  batches = list(pipeline.eval_batches(files, EVAL, 4))
  assert len(batches) == 5                                        # ceil(18 / 4)
  views = np.concatenate([v for v, _ in batches])
  where = np.concatenate([w for _, w in batches])
  assert views.shape == (20, 10, 16, 12, 3) and views.dtype == np.uint8
  np.testing.assert_array_equal(where, np.arange(20) < 18, strict=True)
  assert not views[18:].any()                                     # zero padding at the end
  for i in (0, 7, 17):
    np.testing.assert_array_equal(views[i], EVAL.eval_views(decode(files.paths[i])),
                                  strict=True)


def test_embed_files_matches_a_direct_loop(files):
  mean_pixel = lambda x: x.reshape(len(x), -1, 3).mean(axis=1)   # [N, 3]
  for transform in (EVAL, Transform(size=(16, 12), tta="none")):
    embeddings = pipeline.embed_files(mean_pixel, files, transform, 4)
    expected = np.stack([mean_pixel(transform.eval_views(decode(p))).mean(axis=0)
                         for p in files.paths])
    assert embeddings.shape == (18, 3)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-12, strict=True)


def test_embed_files_averages_views_and_compiles_once(files):
  calls = []

  def first_pixel(x):
    calls.append(x.shape)
    return x[:, 0, 0, :1].astype(np.float64)                       # [N, 1]

  flip = Transform(size=(16, 12), tta="flip")
  embeddings = pipeline.embed_files(first_pixel, files, flip, 5)
  assert set(calls) == {(10, 16, 12, 3)}                          # one input shape
  for i in (0, 17):
    view = flip.eval_views(decode(files.paths[i]))
    assert embeddings[i, 0] == (float(view[0, 0, 0, 0]) + float(view[0, 0, -1, 0])) / 2


def test_missing_and_unreadable_files_name_the_path(files, tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not a jpeg")
  broken = ImageFiles(np.concatenate([files.paths[:5], [str(bad)]]), np.arange(6) % 3)
  with pytest.raises(OSError, match="broken.jpg"):
    list(pipeline.train_batches(broken, PKSampler(broken.labels, p=3, k=2, seed=0), TRAIN,
                                seed=0, start_step=0, num_steps=3))
  missing = ImageFiles(np.array([files.paths[0], str(tmp_path / "gone.jpg")]), [0, 1])
  with pytest.raises(FileNotFoundError, match="gone.jpg"):
    pipeline.embed_files(lambda x: x[:, 0, 0], missing, EVAL, 2)


def _truncated_png(path):
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), np.uint8)).save(path)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def _over_pillow_limit_png(path):
  """A PNG header (no pixels) over Pillow's decompression-bomb limit, under twice it:
  Pillow opens it with a DecompressionBombWarning, an error where warnings are."""
  side = int(np.ceil(np.sqrt(1.5 * Image.MAX_IMAGE_PIXELS)))
  chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body
                              + struct.pack(">I", zlib.crc32(kind + body)))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2,
                                                                   0, 0, 0)) + chunk(b"IEND", b""))
  return path


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_file_failing_mid_run_names_itself(files, tmp_path, workers):
  """Whatever Pillow raises while decoding becomes an OSError naming the file, in
  this process or from a grain worker process."""
  bad = _truncated_png(str(tmp_path / "cut.png"))
  broken = ImageFiles(np.concatenate([files.paths[:5], [bad]]), np.arange(6) % 3)
  with pytest.raises(OSError, match=r"cannot decode image '.*cut\.png': image file is trunc"):
    list(pipeline.train_batches(broken, PKSampler(broken.labels, p=3, k=2, seed=0), TRAIN,
                                seed=0, start_step=0, num_steps=3, workers=workers))
  with pytest.raises(OSError, match=r"cannot decode image '.*cut\.png'"):
    pipeline.embed_files(lambda x: x[:, 0, 0], broken, EVAL, 4, workers=workers)
  if workers == 0:   # a warnings filter reaches decoding threads, not worker processes
    bomb = _over_pillow_limit_png(str(tmp_path / "bomb.png"))
    broken = ImageFiles(np.concatenate([files.paths[:5], [bomb]]), np.arange(6) % 3)
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with pytest.raises(OSError, match=r"'.*bomb\.png': DecompressionBombWarning: Image size"):
        pipeline.embed_files(lambda x: x[:, 0, 0], broken, EVAL, 4)
      with pytest.raises(OSError, match=r"'.*bomb\.png': DecompressionBombWarning"):
        list(pipeline.train_batches(broken, PKSampler(broken.labels, p=3, k=2, seed=0), TRAIN,
                                    seed=0, start_step=0, num_steps=3))


def test_bad_arguments(files):
  with pytest.raises(ValueError, match="workers"):
    train(files, workers=-1)
  with pytest.raises(ValueError, match="start_step"):
    train(files, start_step=6)
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.eval_batches(files, EVAL, 0)


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
  out = tmp_path / "bench.json"
  cmd = [sys.executable, "-m", "experiments.benchmarks.pipeline_benchmark", "--images=48",
         "--rss_sizes=24,48", "--classes=6", "--steps=3", "--throughput_steps=2",
         "--p=3", "--k=2", "--workers=0", "--train_workers=0", "--block=1",
         "--skip=0", "--repeats=1",
         f"--data_dir={tmp_path / 'data'}", f"--out={out}"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(cmd, check=True, cwd=root, timeout=600)
  result = json.loads(out.read_text())
  assert set(result) >= {"throughput", "peak_rss", "step_time"}
  assert all(r["images_per_s"] > 0 for r in result["throughput"])
  assert len(result["peak_rss"]) == 4                            # 2 sizes, draft off and on
  assert {(r["images"], r["draft"]) for r in result["step_time"]} == {
      (24, False), (24, True), (48, False), (48, True)}
