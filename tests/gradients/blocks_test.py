"""Structured cut-gradient blocks: every reduction equals the one on the materialised matrix."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.gradients.blocks import (
    OuterProductBlock,
    block_gramian,
    block_row_norms,
    block_weighted_sum,
    dense_blocks,
)

B, E, D, X = 5, 3, 4, 6
CUT = [tf.zeros([B, E, D]), tf.zeros([B, X]), tf.zeros([B, D])]


def structured_blocks(seed=0):
    """Three tasks over three cut tensors: outer products (one with a dense part added, as a
    backbone that also read the experts directly would give), dense blocks and exact zeros."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return tf.constant(rng.normal(size=shape), tf.float32)

    def outer():
        return OuterProductBlock(tf.nn.softmax(normal(B, E)), normal(B, D))

    return [
        [outer(), normal(B, X), normal(B, D)],
        [outer(), normal(B, X), None],
        [normal(B, E, D), None, None],
    ]


def as_matrix(blocks):
    dense = dense_blocks(blocks, CUT)
    return np.stack([np.concatenate([np.reshape(b, -1) for b in row]) for row in dense])


def test_outer_product_block_is_the_row_wise_outer_product():
    block = structured_blocks()[0][0]
    expected = np.einsum("be,bd->bed", block.weights.numpy(), block.grads.numpy())
    np.testing.assert_allclose(block.dense(), expected, rtol=1e-6)


def test_gramian_norms_and_combination_match_the_materialised_matrix():
    blocks = structured_blocks()
    matrix = as_matrix(blocks)
    np.testing.assert_allclose(block_gramian(blocks), matrix @ matrix.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(block_row_norms(blocks), np.linalg.norm(matrix, axis=1),
                               rtol=1e-5)
    weights = np.array([0.5, -1.5, 2.0], np.float32)
    combined = block_weighted_sum(blocks, tf.constant(weights))
    flat = np.concatenate([np.reshape(c, -1) for c in combined])
    np.testing.assert_allclose(flat, weights @ matrix, rtol=1e-5, atol=1e-6)


def test_vectorised_gramian_of_many_tasks_matches_the_materialised_matrix():
    # Beyond PAIRWISE_MAX_TASKS the Gramian is formed per cut tensor from stacked blocks; the
    # mix of outer-product, dense and absent blocks (and an outer-vs-dense pair) is kept.
    blocks = structured_blocks(1) + structured_blocks(2) + structured_blocks(3)  # K = 9
    matrix = as_matrix(blocks)
    np.testing.assert_allclose(block_gramian(blocks), matrix @ matrix.T, rtol=1e-5, atol=1e-4)


def test_a_tensor_no_task_reaches_is_an_error_not_a_silent_zero():
    with pytest.raises(ValueError, match="cut tensor 0"):
        block_weighted_sum([[None], [None]], tf.constant([1.0, 1.0]))
