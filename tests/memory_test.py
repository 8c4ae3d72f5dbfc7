"""Cross-batch memory: ring-buffer semantics and losses against batch + bank."""

import cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metric_learning as ml


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


def test_conftest_provides_eight_cpu_devices():
  assert jax.device_count() == 8
