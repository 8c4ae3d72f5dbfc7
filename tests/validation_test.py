"""Bad input raises ValueError / TypeError at trace time, naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metric_learning as ml

X = jnp.zeros((4, 3))
Y = jnp.array([0, 0, 1, 1])

IN_BATCH = [ml.batch_hard_triplet_loss, ml.batch_all_triplet_loss, ml.semi_hard_triplet_loss,
            ml.quadruplet_loss, ml.contrastive_loss, ml.lifted_structure_loss,
            ml.multi_similarity_loss, ml.margin_loss, ml.npair_loss]


@pytest.mark.parametrize("loss", IN_BATCH)
def test_shape_and_dtype_errors_name_the_argument(loss):
  cases = [
      ((jnp.zeros(4), Y), ValueError, "embeddings"),
      ((jnp.zeros((4, 3, 1)), Y), ValueError, "embeddings"),
      ((jnp.zeros((4, 3), jnp.int32), Y), TypeError, "embeddings"),
      ((X, jnp.array([0, 1, 1])), ValueError, "labels"),
      ((X, jnp.zeros((4, 1), jnp.int32)), ValueError, "labels"),
      ((X, jnp.array([0.0, 0.0, 1.0, 1.0])), TypeError, "labels"),
  ]
  for args, error, name in cases:
    with pytest.raises(error, match=name):
      jax.jit(loss)(*args)
  with pytest.raises(ValueError, match="where"):
    loss(X, Y, where=jnp.ones(3, bool))
  with pytest.raises(TypeError, match="where"):
    loss(X, Y, where=jnp.ones(4))
  with pytest.raises(ValueError, match="reduction.*'median'"):
    loss(X, Y, reduction="median")


@pytest.mark.parametrize("loss", [ml.batch_hard_triplet_loss, ml.batch_all_triplet_loss,
                                  ml.semi_hard_triplet_loss, ml.contrastive_loss,
                                  ml.lifted_structure_loss, ml.margin_loss,
                                  ml.quadruplet_loss])
def test_metric_and_margin_errors(loss):
  with pytest.raises(ValueError, match="metric.*'manhattan'"):
    loss(X, Y, metric="manhattan")
  with pytest.raises(ValueError, match="margin must be non-negative.*-0.1"):
    loss(X, Y, margin=-0.1)


def test_other_option_errors():
  with pytest.raises(ValueError, match="definition.*'hard'"):
    ml.semi_hard_triplet_loss(X, Y, definition="hard")
  for bad in (0, -3):
    with pytest.raises(ValueError, match="block_size.*positive"):
      ml.batch_hard_triplet_loss(X, Y, block_size=bad)
  with pytest.raises(TypeError, match="block_size"):
    ml.batch_hard_triplet_loss(X, Y, block_size=2.5)
  with pytest.raises(ValueError, match="margin2"):
    ml.quadruplet_loss(X, Y, margin2=-1.0)
  with pytest.raises(ValueError, match="alpha"):
    ml.multi_similarity_loss(X, Y, alpha=0.0)
  with pytest.raises(ValueError, match="beta must be a scalar or have shape"):
    ml.margin_loss(X, Y, beta=jnp.ones(3))
  with pytest.raises(ValueError, match="name must be one of.*'hermans'.*got 'nope'"):
    ml.presets.get("nope")


def test_wave_two_option_errors():
  with pytest.raises(ValueError, match="definition.*'sohn'.*got 'paper'"):
    ml.npair_loss(X, Y, definition="paper")
  with pytest.raises(ValueError, match="weighting.*'pairs'.*got 'anchors'"):
    ml.margin_loss(X, Y, weighting="anchors")
  with pytest.raises(ValueError, match="pos_margin must be non-negative"):
    ml.contrastive_loss(X, Y, pos_margin=-0.5)
  with pytest.raises(ValueError, match="key.*axis_name or ref_embeddings"):
    ml.margin_loss(X, Y, key=jax.random.key(0), ref_embeddings=X, ref_labels=Y)
  with pytest.raises(TypeError, match="selection must be a mining.TripletSelection"):
    ml.selected_triplet_loss(X, (Y, Y))
  sel = ml.mining.rank_range(jnp.zeros((4, 4)), Y, negative_ranks=(0, 2))
  with pytest.raises(ValueError, match="selection.positive_valid must have shape"):
    ml.selected_triplet_loss(jnp.zeros((5, 3)), sel)
  pair = ml.mining.semi_hard(jnp.zeros((4, 4)), Y, definition="tfa")
  with pytest.raises(ValueError, match=r"selection.valid must have shape \(3, 3\)"):
    ml.selected_triplet_loss(jnp.zeros((3, 3)), pair)
  for loss in (ml.quadruplet_loss, ml.lifted_structure_loss, ml.npair_loss, ml.margin_loss):
    with pytest.raises(ValueError, match="ref_embeddings and ref_labels must be given together"):
      loss(X, Y, ref_embeddings=X)


def test_reference_and_distance_errors():
  with pytest.raises(ValueError, match="ref_embeddings and ref_labels must be given together"):
    ml.batch_hard_triplet_loss(X, Y, ref_embeddings=X)
  with pytest.raises(ValueError, match="same embedding dimension"):
    ml.batch_hard_triplet_loss(X, Y, ref_embeddings=jnp.zeros((2, 5)),
                               ref_labels=jnp.array([0, 1]))
  with pytest.raises(ValueError, match="ref_labels"):
    ml.batch_hard_triplet_loss(X, Y, ref_embeddings=X, ref_labels=jnp.array([0, 1]))
  with pytest.raises(ValueError, match="x and y must have the same embedding dimension"):
    ml.pairwise_distances(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="metric"):
    ml.pairwise_distances(X, metric="l1")
  with pytest.raises(ValueError, match="x and y must have the same shape"):
    ml.paired_distances(jnp.zeros((2, 3)), jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="anchors, positives and negatives"):
    ml.triplet_margin_loss(X, X, jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="distances must be a square"):
    ml.mining.batch_hard(jnp.zeros((4, 3)), Y)
  with pytest.raises(ValueError, match="labels must have shape \\[4\\]"):
    ml.mining.batch_hard(jnp.zeros((4, 4)), jnp.array([0, 1]))
  with pytest.raises(ValueError, match="negative_ranks"):
    ml.mining.rank_range(jnp.zeros((4, 4)), Y, negative_ranks=(3, 1))
  with pytest.raises(TypeError, match="labels"):
    ml.positive_mask(np.array([0.5, 1.0]))


def test_traced_margins_are_accepted():
  f = jax.jit(lambda m: ml.batch_hard_triplet_loss(X, Y, margin=m))
  assert float(f(0.3)) == pytest.approx(0.3)
