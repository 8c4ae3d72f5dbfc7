"""Gradient caching (make_train_step(..., embed_chunk=N)): the plain step's gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metric_learning import data
from metric_learning import models
from metric_learning import training
from metric_learning.losses import registry
from metric_learning.training import parallel
from metric_learning.training import state as state_lib


def _assert_trees_close(got, want, rtol=1e-5):
  """Leaf by leaf, to ``rtol`` of the largest entry of ``want`` (a bias feeding a
  BatchNorm has a gradient that is 0 up to rounding, so no per-entry rtol)."""
  scale = max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _batch(rows=16, shape=(8, 8, 1), seed=0):
  digits = data.digits()
  sampler = data.PKSampler(digits.labels, p=rows // 4, k=4, seed=seed)
  index = sampler.batch(0)
  where = np.ones(rows, bool)
  where[[3, 12]] = False                              # padding rows
  inputs = digits.inputs[index]
  if shape != (8, 8, 1):
    inputs = np.asarray(jax.image.resize(inputs, (rows, *shape), "linear"))
  return {"inputs": inputs, "labels": digits.labels[index], "where": where}


def _loss(name, **kwargs):
  loss = registry.create(name, **kwargs)
  if registry.proxies_per_class(name, kwargs) is not None:
    return lambda e, y, w, proxies: loss(e, y, proxies, where=w)
  return lambda e, y, w: loss(e, y, where=w)


def _model(kind, classes=None):
  if kind == "mlp":
    model = models.create("mlp", (8, 8, 1), hidden=(16,), embedding_dim=8, seed=0)
  else:                                               # BatchNorm in every block and the head
    model = models.create("cnn", (12, 12, 1), widths=(4, 8), embedding_dim=8, seed=0,
                          head_batch_norm=True)
  if classes:
    model = models.EncoderWithProxies(model, classes, 8, rngs=nnx.Rngs(1))
  return model


def _steps(model, loss_fn, chunk, steps=2, shape=(8, 8, 1)):
  tx = training.make_optimizer("sgd", 0.5)
  graphdef, state = training.init_state(model, tx, 0)
  step = jax.jit(state_lib.make_train_step(graphdef, tx, loss_fn, embed_chunk=chunk))
  out = []
  for s in range(steps):
    state, metrics = step(state, _batch(shape=shape, seed=s))
    out.append((float(metrics["loss"]), float(metrics["grad_norm"])))
  return state, out


@pytest.mark.parametrize("loss_name,classes", [("batch_hard_triplet_loss", None),
                                               ("multi_similarity_loss", None),
                                               ("supcon_loss", None),
                                               ("proxy_anchor_loss", 10)])
@pytest.mark.parametrize("chunk", [4, 8])
def test_without_batch_norm_the_cached_step_is_the_plain_step(loss_name, classes, chunk):
  loss_fn = _loss(loss_name)
  plain, plain_metrics = _steps(_model("mlp", classes), loss_fn, None)
  cached, cached_metrics = _steps(_model("mlp", classes), loss_fn, chunk)
  np.testing.assert_allclose(cached_metrics, plain_metrics, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(cached.params), jax.tree.leaves(plain.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert plain_metrics[0][1] > 0                       # a gradient, not a vacuous match


def test_with_batch_norm_each_chunk_is_normalised_by_its_own_statistics():
  """The reference: autodiff through the chunks' forward passes, each in training
  mode from the state the previous chunk left (ghost batch normalisation)."""
  model = _model("cnn")
  loss_fn = _loss("batch_hard_triplet_loss", margin=0.5)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  batch = _batch(shape=(12, 12, 1))

  def reference(params):
    state, embs = model_state, []
    for c in range(2):                                # chunk c: rows c, c + 2, c + 4, ...
      emb, state = state_lib._embed_in_train_mode(graphdef, params, state,
                                                  batch["inputs"][c::2])
      embs.append(emb)
    emb = jnp.stack(embs, axis=1).reshape(16, -1)     # back in row order
    return loss_fn(emb, batch["labels"], batch["where"]), state

  (want_loss, want_state), want_grads = jax.jit(
      jax.value_and_grad(reference, has_aux=True))(params)
  cached = state_lib.cached_value_and_grad(graphdef, loss_fn, 8)
  (loss, (new_state, emb)), grads = jax.jit(cached)(params, model_state, batch)
  assert emb.shape == (16, 8)
  assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
  _assert_trees_close(grads, want_grads)
  _assert_trees_close(new_state, want_state)          # running averages, once per chunk
  # ... which is not the whole-batch normalisation of the plain step.
  plain_emb, _ = state_lib._embed_in_train_mode(graphdef, params, model_state, batch["inputs"])
  assert abs(float(loss_fn(plain_emb, batch["labels"], batch["where"])) - float(loss)) > 1e-4


def test_one_chunk_is_the_plain_step_even_with_batch_norm():
  loss_fn = _loss("batch_hard_triplet_loss")
  graphdef, params, model_state = nnx.split(_model("cnn"), nnx.Param, ...)
  batch = _batch(shape=(12, 12, 1))
  plain = jax.value_and_grad(
      lambda p: (lambda e, s: (loss_fn(e, batch["labels"], batch["where"]), s))(
          *state_lib._embed_in_train_mode(graphdef, p, model_state, batch["inputs"])),
      has_aux=True)
  (want_loss, want_state), want = jax.jit(plain)(params)
  cached = state_lib.cached_value_and_grad(graphdef, loss_fn, 16)
  (loss, (new_state, _)), grads = jax.jit(cached)(params, model_state, batch)
  assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
  _assert_trees_close(grads, want)
  _assert_trees_close(new_state, want_state)


@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_under_pmap_and_mesh_the_cached_step_mines_the_global_batch(mode):
  assert jax.device_count() == 8
  results = {}
  for run_mode, chunk in (("none", None), (mode, 1 if mode == "pmap" else 8)):
    model = _model("mlp")
    tx = training.make_optimizer("sgd", 0.5)
    graphdef, state = training.init_state(model, tx, 0)

    def make_loss(axis_name):
      loss = registry.create("batch_hard_triplet_loss", margin=0.2)
      extra = {} if axis_name is None else {"axis_name": axis_name}
      return lambda e, y, w: loss(e, y, where=w, **extra)

    runner = parallel.make_runner(run_mode, graphdef, tx, make_loss, 16, embed_chunk=chunk)
    state = runner.put_state(state)
    losses = []
    for s in range(2):
      state, metrics = runner.step(state, _batch(seed=s))
      losses.append(float(metrics["loss"]))
    results[run_mode] = (losses, parallel.host_state(runner.get_state(state).params))
  np.testing.assert_allclose(results[mode][0], results["none"][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(results[mode][1]), jax.tree.leaves(results["none"][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_chunk_that_does_not_divide_the_batch_is_refused():
  model = _model("mlp")
  tx = training.make_optimizer("sgd", 0.5)
  graphdef, state = training.init_state(model, tx, 0)
  step = state_lib.make_train_step(graphdef, tx, _loss("batch_hard_triplet_loss"),
                                   embed_chunk=5)
  with pytest.raises(ValueError, match="embed_chunk=5 must divide the batch of 16 rows"):
    step(state, _batch())
  with pytest.raises(ValueError, match="embed_chunk must be None or an int >= 1; got 0"):
    state_lib.make_train_step(graphdef, tx, _loss("batch_hard_triplet_loss"), embed_chunk=0)


@pytest.mark.xla_optimized
def test_cached_value_and_grad_keeps_one_chunk_of_activations():
  """The compiled step's temporary memory grows with the chunk, not with the batch
  (a CNN: activations, 512 x 32 x 32 x 16 floats a layer, dwarf the parameters)."""
  model = models.create("cnn", (32, 32, 1), widths=(16, 32), embedding_dim=8, seed=0)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  loss_fn = _loss("batch_hard_triplet_loss")
  rows = 512
  batch = {"inputs": np.zeros((rows, 32, 32, 1), np.float32),
           "labels": np.arange(rows) // 4, "where": np.ones(rows, bool)}

  def temp_bytes(fn):
    compiled = jax.jit(fn).lower(params, model_state, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  plain = temp_bytes(jax.value_and_grad(
      lambda p, s, b: (loss_fn(*(state_lib._embed_in_train_mode(graphdef, p, s, b["inputs"])[0],
                                 b["labels"], b["where"])), None), has_aux=True))
  cached = temp_bytes(state_lib.cached_value_and_grad(graphdef, loss_fn, 32))
  assert cached < plain / 4, (cached, plain)
  assert plain > 100 * 2**20                          # the activations were there to save

