import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.gradients.layout import GradientLayout
from tests.helpers import small_batch, small_model
from tests.models.multi_task_model_test import assert_gradients_close, plain_autodiff_gradients

J = (np.random.default_rng(1).normal(size=(3, 12)) * [[1.0], [4.0], [0.5]]).astype(np.float32)


def first_step(balancer, matrix=J, context=None):
    balancer.build(matrix.shape[0], task_names=["a", "b", "c"])
    return balancer.balance(tf.constant(matrix), tf.zeros([matrix.shape[0]]),
                            context or BalanceContext.default())


def test_relax_zero_is_the_plain_sum():
    result = first_step(balancers.get("multibalance", relax_factor=0.0))
    np.testing.assert_allclose(result.combined, J.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reference", ["max", "mean", "c"])
def test_weights_follow_the_reference_magnitude(reference):
    r = 0.6
    result = first_step(balancers.get("multibalance", relax_factor=r, reference=reference))
    norms = np.linalg.norm(J, axis=1)  # (1 - β) cancels in the ratio
    ref = {"max": norms.max(), "mean": norms.mean(), "c": norms[2]}[reference]
    expected = r * ref / norms + (1 - r)
    np.testing.assert_allclose(result.shared_weights, expected, rtol=1e-5)
    np.testing.assert_allclose(result.combined, expected @ J, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.task_weights, [1.0, 1.0, 1.0])


def test_example_norms_average_nonzero_rows():
    batch, width = 4, 3
    matrix = np.random.default_rng(2).normal(size=(2, batch * width)).astype(np.float32)
    matrix[1, :width] = 0.0  # row 0 outside task 1's sample space
    context = BalanceContext.default()._replace(layout=GradientLayout(
        segment_sizes=(batch * width,), batch_size=tf.constant(batch)))
    balancer = balancers.get("multibalance", relax_factor=1.0, beta=0.0, norm="example")
    result = first_step(balancer, matrix, context)
    rows = np.linalg.norm(matrix.reshape(2, batch, width), axis=2)
    means = np.array([rows[0].mean(), rows[1, 1:].mean()])
    np.testing.assert_allclose(result.shared_weights, means.max() / means, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["mmoe", "ple"])
def test_chained_trunk_gradient_is_the_autodiff_gradient_of_the_same_combination(backbone):
    model = small_model(backbone, balancer=km.balancers.get("multibalance", relax_factor=0.8))
    x, y = small_batch(seed=4)
    grads, variables, _, result, *_ = model.compute_gradients(x, y)
    weights = np.asarray(result.shared_weights)
    assert not np.allclose(weights, 1.0)
    shared = {id(v) for v in model.shared_variables}
    reference = plain_autodiff_gradients(model, x, y, weights=tuple(weights))
    pick = [i for i, v in enumerate(variables) if id(v) in shared]
    assert_gradients_close([grads[i] for i in pick], [reference[i] for i in pick],
                           [variables[i] for i in pick])
    # Heads keep their own task's gradient.
    plain = plain_autodiff_gradients(model, x, y)
    heads = [i for i, v in enumerate(variables) if id(v) not in shared]
    assert_gradients_close([grads[i] for i in heads], [plain[i] for i in heads],
                           [variables[i] for i in heads])


def test_block_path_equals_the_matrix_path():
    rng = np.random.default_rng(5)
    blocks = [[tf.constant(rng.normal(size=(4, 3, 2)), tf.float32),
               tf.constant(rng.normal(size=(4, 5)), tf.float32)] for _ in range(3)]
    matrix = tf.stack([tf.concat([tf.reshape(b, [-1]) for b in row], 0) for row in blocks])
    a, b = balancers.get("multibalance"), balancers.get("multibalance")
    a.build(3)
    b.build(3)
    flat = a.balance(matrix, tf.zeros([3]), BalanceContext.default())
    blockwise = b.balance_blocks(blocks, tf.zeros([3]), BalanceContext.default())
    np.testing.assert_allclose(
        tf.concat([tf.reshape(t, [-1]) for t in blockwise.combined], 0), flat.combined,
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blockwise.shared_weights, flat.shared_weights, rtol=1e-5)
