import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext

RNG = np.random.default_rng(0)


def test_gamma_zero_is_the_plain_sum_and_fisher_closed_form():
    j = RNG.normal(size=(3, 6)).astype(np.float32)
    for gamma, eta in ((0.0, 1.0), (0.3, 0.5)):
        balancer = balancers.get("cograd", gamma=gamma, eta=eta)
        balancer.build(3)
        out = balancer.balance(tf.constant(j), tf.zeros([3]), BalanceContext.default()).combined
        s = j.sum(0)
        expected = s - 2 * gamma * eta * sum(j[i] ** 2 * (s - j[i]) for i in range(3))
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_cograd_exact_takes_the_hessian_term_from_the_task_gradients_only():
    from keras_mtl.gradients import TaskGradients

    j = RNG.normal(size=(3, 6)).astype(np.float32)
    term = RNG.normal(size=6).astype(np.float32)
    balancer = balancers.get("cograd", gamma=0.3, eta=0.5, hessian="exact")
    balancer.build(3)
    gradients = TaskGradients("parameters", tf.zeros([3]), matrix=tf.constant(j),
                              hessian_term=tf.constant(term))
    out = balancer.reduce(gradients, BalanceContext.default()).combined
    np.testing.assert_allclose(out, j.sum(0) - 2 * 0.3 * 0.5 * term, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Hessian"):
        balancer.balance(tf.constant(j), tf.zeros([3]), BalanceContext.default())
    with pytest.raises(ValueError, match="Hessian"):
        balancer.reduce(gradients._replace(hessian_term=None), BalanceContext.default())
