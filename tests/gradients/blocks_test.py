"""Structured cut-gradient blocks: every reduction equals the one on the materialised matrix."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.gradients.blocks import (
    OuterProductBlock,
    block_gramian,
    block_row_norms,
    block_sum,
    block_weighted_sum,
    compiling_with_xla,
    dense_blocks,
    row_dots,
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


def test_compiling_with_xla_tells_a_jit_compiled_trace_from_the_others():
    # The reductions choose their form by it; if TensorFlow moved its XLA context this fails
    # (the reductions would silently take the slower form).
    seen = []

    def probe(x):
        seen.append(compiling_with_xla())
        return x

    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    tf.function(probe)(tf.constant(1.0))
    probe(tf.constant(1.0))
    assert seen == [True, False, False]


@pytest.mark.parametrize("num_groups", [1, 2, 3])  # K = 3 (pairs), 6 (pairs under XLA), 9
@pytest.mark.parametrize("jit_compile", [False, True])
def test_reductions_in_a_compiled_step_match_the_materialised_matrix(num_groups, jit_compile):
    # Under XLA the row reductions are products with ones, the pairwise Gramian reaches further
    # (`PAIRWISE_MAX_TASKS_XLA`) and outer products are summed as fused broadcasts (without XLA
    # as one batched matmul): every form must give the materialised matrix's answer.
    seeds = range(1, num_groups + 1)
    blocks = [row for seed in seeds for row in structured_blocks(seed)]
    matrix = as_matrix(blocks)
    weights = np.linspace(-1.0, 2.0, len(blocks)).astype(np.float32)

    @tf.function(jit_compile=jit_compile)
    def reductions():
        traced = [row for seed in seeds for row in structured_blocks(seed)]
        return (block_gramian(traced), block_row_norms(traced),
                block_weighted_sum(traced, tf.constant(weights)), block_sum(traced))

    gram, norms, combined, summed = reductions()
    np.testing.assert_allclose(gram, matrix @ matrix.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norms, np.linalg.norm(matrix, axis=1), rtol=1e-5)
    for result, w in ((combined, weights), (summed, np.ones_like(weights))):
        flat = np.concatenate([np.reshape(c, -1) for c in result])
        np.testing.assert_allclose(flat, w @ matrix, rtol=1e-5, atol=1e-5)


def test_row_dots_are_per_row_inner_products_in_every_mode():
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.normal(size=(7, 3, 5)), tf.float32) for _ in range(2))
    expected = np.einsum("bij,bij->b", a.numpy(), b.numpy())
    for jit_compile in (False, True):
        np.testing.assert_allclose(tf.function(row_dots, jit_compile=jit_compile)(a, b),
                                   expected, rtol=1e-5, atol=1e-6)


def test_a_tensor_no_task_reaches_is_an_error_not_a_silent_zero():
    with pytest.raises(ValueError, match="cut tensor 0"):
        block_weighted_sum([[None], [None]], tf.constant([1.0, 1.0]))
