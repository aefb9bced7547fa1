import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext


def combine(balancer, matrix):
    balancer.build(matrix.shape[0])
    return np.asarray(balancer.balance(tf.constant(matrix, tf.float32), tf.zeros([len(matrix)]),
                                       BalanceContext.default()).combined)


def pcgrad_two_task_sum(g1, g2):
    dot = g1 @ g2
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / (g2 @ g2) * g2) + (g2 - dot / (g1 @ g1) * g1)


def test_two_tasks_without_magnitude_step_is_pcgrad():
    g = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    out = combine(balancers.get("gradcraft", tau=0.0, epsilon=0.0, reduction="sum"), g)
    np.testing.assert_allclose(out, pcgrad_two_task_sum(*g), rtol=1e-5)
    mean = combine(balancers.get("gradcraft", tau=0.0), g)
    np.testing.assert_allclose(mean, out / 2, rtol=1e-5)


@pytest.mark.parametrize("epsilon", [0.0, 0.05])
def test_deconflicted_gradients_meet_every_conflicting_task_at_epsilon(epsilon):
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(5, 8)) * rng.uniform(0.1, 10.0, size=(5, 1))
    balancer = balancers.get("gradcraft", tau=1.0, epsilon=epsilon)
    balancer.build(5)
    matrix = tf.constant(matrix, tf.float64)
    deconflicted = np.asarray(balancer.deconflicted(matrix))
    norms = np.linalg.norm(matrix, axis=1)
    scaled = np.asarray(matrix) * (norms.max() / norms)[:, None]  # τ = 1
    hat_norms = np.linalg.norm(scaled, axis=1)
    np.testing.assert_allclose(hat_norms, norms.max())
    conflicts = 0
    for i in range(5):
        for k in range(5):
            if scaled[i] @ scaled[k] < 0:
                conflicts += 1
                np.testing.assert_allclose(deconflicted[i] @ scaled[k],
                                           epsilon * hat_norms[i] * hat_norms[k],
                                           atol=1e-8 * hat_norms.max() ** 2)
        if all(scaled[i] @ scaled[k] >= 0 for k in range(5)):
            np.testing.assert_allclose(deconflicted[i], scaled[i])
    assert conflicts > 0


def test_tau_zero_leaves_magnitudes_alone():
    matrix = np.array([[1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 1.0, 0.0]])  # no conflicts
    out = combine(balancers.get("gradcraft", tau=0.0, reduction="sum"), matrix)
    np.testing.assert_allclose(out, matrix.sum(0), rtol=1e-6)


def test_linearly_dependent_conflicts_and_zero_rows_stay_finite_and_exact():
    g = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    balancer = balancers.get("gradcraft", tau=0.0)
    balancer.build(4)
    deconflicted = np.asarray(balancer.deconflicted(tf.constant(g, tf.float64)))
    assert np.all(np.isfinite(deconflicted))
    # Task 0 conflicts with two identical gradients: one projection removes both conflicts.
    np.testing.assert_allclose(deconflicted[0] @ g[1], 0.0, atol=1e-9)
    np.testing.assert_allclose(deconflicted[0], [0.5, 0.5, 0.0], atol=1e-9)
    assert np.all(np.isfinite(combine(balancers.get("gradcraft"), g)))
