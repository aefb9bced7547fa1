import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.gradients.layout import GradientLayout

RNG = np.random.default_rng(0)
SIZES = (3, 5, 2)
J = RNG.normal(size=(3, 10)).astype(np.float32) * np.array([[1.0], [10.0], [0.1]], np.float32)


def run(balancer, matrix, steps=1):
    balancer.build(matrix.shape[0], num_segments=len(SIZES))
    context = BalanceContext.default()._replace(layout=GradientLayout(segment_sizes=SIZES))
    for _ in range(steps):
        result = balancer.balance(tf.constant(matrix), tf.zeros([matrix.shape[0]]), context)
        for variable, value in result.updates:
            variable.assign(value)
    return np.asarray(result.combined)


def blocks(vector):
    return np.split(vector, np.cumsum(SIZES)[:-1])


def test_relax_zero_is_the_plain_sum():
    out = run(balancers.get("metabalance", relax_factor=0.0), J)
    np.testing.assert_allclose(out, J.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 5])
def test_relax_one_gives_auxiliary_tensors_the_target_magnitude(steps):
    # Two tasks so the auxiliary's balanced gradient is `combined - g_target`.
    matrix = J[:2]
    out = run(balancers.get("metabalance", relax_factor=1.0, beta=0.9), matrix, steps)
    auxiliary = out - matrix[0]
    for aux_block, target_block in zip(blocks(auxiliary), blocks(matrix[0]), strict=True):
        np.testing.assert_allclose(np.linalg.norm(aux_block), np.linalg.norm(target_block),
                                   rtol=1e-5)


def test_moving_average_closed_form_and_target_by_name():
    balancer = balancers.get("metabalance", beta=0.5, target_task="b")
    balancer.build(3, task_names=["a", "b", "c"], num_segments=len(SIZES))
    assert balancer.target_index == 1
    context = BalanceContext.default()._replace(layout=GradientLayout(segment_sizes=SIZES))
    for _ in range(3):
        result = balancer.balance(tf.constant(J), tf.zeros([3]), context)
        for variable, value in result.updates:
            variable.assign(value)
    norms = np.array([[np.linalg.norm(b) for b in blocks(row)] for row in J])
    np.testing.assert_allclose(balancer.magnitudes, (1 - 0.5**3) * norms, rtol=1e-5)


def test_a_task_absent_from_a_tensor_gives_no_nan():
    matrix = J.copy()
    matrix[1, :3] = 0.0  # task 1 does not reach tensor 0
    out = run(balancers.get("metabalance", relax_factor=1.0), matrix)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(blocks(out)[0], matrix[0, :3] + matrix[2, :3] * (
        np.linalg.norm(matrix[0, :3]) / np.linalg.norm(matrix[2, :3])), rtol=1e-5)
