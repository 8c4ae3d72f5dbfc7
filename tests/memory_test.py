"""Cross-batch memory: ring-buffer semantics and losses against batch + bank."""

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metric_learning as ml

# Many small programs, checked for their values (tests/conftest.py).
pytestmark = pytest.mark.values_only


def test_ring_buffer_overwrites_oldest_and_tracks_validity():
  bank = ml.init_memory(5, 2)
  update = jax.jit(ml.update_memory)
  for step in range(4):
    x = jnp.full((2, 2), float(step))
    bank = update(bank, x, jnp.array([step, step]), where=jnp.array([True, step != 1]))
  # Writes: step0 -> 0,1; step1 -> 2,3 (3 padding); step2 -> 4,0; step3 -> 1,2.
  assert bank.labels.tolist() == [2, 3, 3, 1, 2]
  assert bank.valid.tolist() == [True, True, True, False, True]
  assert int(bank.pointer) == 3


def test_bank_is_a_pytree_without_gradient():
  bank = ml.init_memory(4, 3)
  assert len(jax.tree.leaves(bank)) == 4

  def loss(x):
    b = ml.update_memory(bank, x, jnp.array([0, 1]))
    return jnp.sum(b.embeddings)

  assert np.all(jax.grad(loss)(jnp.ones((2, 3))) == 0)


def test_empty_bank_equals_no_bank_and_full_bank_equals_concatenation():
  x, y, _ = cases.make("pk", 6, 4)
  bank = ml.init_memory(8, 4)
  np.testing.assert_allclose(ml.batch_hard_triplet_loss(x, y, **bank.refs()),
                             ml.batch_hard_triplet_loss(x, y), rtol=1e-6)
  old, old_y, _ = cases.make("pk", 6, 4, seed=1)
  bank = ml.update_memory(bank, old, old_y)
  per_anchor = ml.batch_hard_triplet_loss(x, y, reduction="none", **bank.refs())
  both = ml.batch_hard_triplet_loss(np.concatenate([x, old]), np.concatenate([y, old_y]),
                                    reduction="none")
  # The current batch's anchors see the same candidates either way.
  np.testing.assert_allclose(per_anchor, both[:6], rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda e: ml.batch_all_triplet_loss(e, y, **bank.refs()))(jnp.asarray(x))
  assert np.all(np.isfinite(g))


def test_bad_updates():
  bank = ml.init_memory(2, 3)
  with pytest.raises(ValueError, match="more than the bank"):
    ml.update_memory(bank, jnp.zeros((3, 3)), jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="dim 3"):
    ml.update_memory(bank, jnp.zeros((1, 4)), jnp.zeros(1, jnp.int32))
  with pytest.raises(ValueError, match="size must be a positive int"):
    ml.init_memory(0, 3)


@pytest.mark.parametrize("loss_name", ["batch_hard_triplet_loss", "multi_similarity_loss",
                                       "contrastive_loss"])
def test_under_pmap_the_bank_holds_the_global_batch(loss_name):
  """8 devices x 2 rows with axis_name, against one device fed the 16 rows: the
  same losses, gradients and banks, step after step (the bank wraps around)."""
  loss = getattr(ml, loss_name)
  devices, local, steps = 8, 2, 4
  batches = [cases.make("pk", devices * local, 4, seed=s)[:2] for s in range(steps)]

  def one_step(bank, x, y, axis_name=None):
    kw = {} if axis_name is None else {"axis_name": axis_name}
    value, grad = jax.value_and_grad(lambda e: loss(e, y, **bank.refs(), **kw))(x)
    return value, grad, ml.update_memory(bank, x, y, **kw)

  single = jax.jit(one_step)
  mapped = jax.pmap(lambda b, x, y: one_step(b, x, y, "d"), axis_name="d",
                    in_axes=(None, 0, 0), out_axes=(0, 0, 0))
  bank_one = bank_all = ml.init_memory(40, 4)        # 2.5 batches: wraps at step 3
  for x, y in batches:
    want_value, want_grad, bank_one = single(bank_one, x, y)
    value, grad, banks = mapped(bank_all, x.reshape(devices, local, 4),
                                y.reshape(devices, local))
    np.testing.assert_allclose(value, np.full(devices, want_value), rtol=1e-5)
    np.testing.assert_allclose(grad.reshape(-1, 4), want_grad, rtol=1e-4, atol=1e-6)
    for leaf_all, leaf_one in zip(jax.tree.leaves(banks), jax.tree.leaves(bank_one)):
      np.testing.assert_array_equal(leaf_all, np.broadcast_to(leaf_one, leaf_all.shape))
    bank_all = jax.tree.map(lambda v: v[0], banks)
  assert int(bank_one.valid.sum()) == 40 and float(want_value) > 0


def test_an_inactive_bank_is_not_mined_and_a_warmup_switches_it_on():
  x, y, _ = cases.make("pk", 6, 4)
  old, old_y, _ = cases.make("pk", 6, 4, seed=1)
  bank = ml.update_memory(ml.init_memory(8, 4), old, old_y)
  batch_only = ml.batch_hard_triplet_loss(x, y)
  with_bank = ml.batch_hard_triplet_loss(x, y, **bank.refs())
  assert float(with_bank) != pytest.approx(float(batch_only))

  @jax.jit
  def warm(step):
    return ml.batch_hard_triplet_loss(x, y, **bank.refs(active=step >= 3))

  np.testing.assert_allclose(warm(2), batch_only, rtol=1e-6)
  np.testing.assert_allclose(warm(3), with_bank, rtol=1e-6)


def test_a_global_batch_larger_than_the_bank_is_refused():
  bank = ml.init_memory(8, 4)
  with pytest.raises(ValueError, match=r"the global batch has 16 rows \(over axis 'd'\)"):
    jax.pmap(lambda x, y: ml.update_memory(bank, x, y, axis_name="d").pointer,
             axis_name="d")(jnp.zeros((8, 2, 4)), jnp.zeros((8, 2), jnp.int32))


def test_conftest_provides_eight_cpu_devices():
  assert jax.device_count() == 8
