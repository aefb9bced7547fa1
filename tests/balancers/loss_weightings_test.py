"""SLAW, DTP and inverse-EMA weighting: hand-computed weights over a few steps of fixed losses."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext

LOSSES = [[1.0, 4.0], [3.0, 4.5], [2.0, 3.5], [2.5, 4.0]]


def weights_over_steps(balancer, losses=LOSSES):
    balancer.build(len(losses[0]))
    seen = []
    for step_losses in losses:
        weights, updates = balancer.task_weights(tf.constant(step_losses), BalanceContext.default())
        seen.append(np.asarray(weights))
        for variable, value in updates:
            variable.assign(value)
    return seen


def test_slaw_by_hand():
    beta = 0.5
    seen = weights_over_steps(balancers.get("slaw", beta=beta))
    np.testing.assert_allclose(seen[0], [1, 1])
    np.testing.assert_allclose(seen[1], [1, 1])  # one loss seen: no spread yet
    a = np.array(LOSSES[0])
    b = a ** 2
    for t in (1, 2):
        x = np.array(LOSSES[t])
        a, b = beta * a + (1 - beta) * x, beta * b + (1 - beta) * x ** 2
    sigma = np.sqrt(b - a ** 2)
    expected = 2 * (1 / sigma) / np.sum(1 / sigma)
    np.testing.assert_allclose(seen[3], expected, rtol=1e-5)
    assert seen[3][0] < seen[3][1]  # task 0's loss varies more, so it is down-weighted
    np.testing.assert_allclose(seen[3].sum(), 2.0, rtol=1e-6)


def test_dtp_by_hand():
    gamma, beta = 2.0, 0.5
    seen = weights_over_steps(balancers.get("dtp", gamma=gamma, beta=beta), LOSSES[:2])
    kpi = np.exp(-np.array(LOSSES[0]))
    np.testing.assert_allclose(seen[0], -((1 - kpi) ** gamma) * np.log(kpi), rtol=1e-5)
    kpi = beta * kpi + (1 - beta) * np.exp(-np.array(LOSSES[1]))
    np.testing.assert_allclose(seen[1], -((1 - kpi) ** gamma) * np.log(kpi), rtol=1e-5)
    assert seen[1][1] > seen[1][0]  # the harder task (higher loss) gets more weight


def test_ema_loss_by_hand():
    seen = weights_over_steps(balancers.get("ema_loss", beta=0.5), LOSSES[:3])
    average = np.array(LOSSES[0])
    np.testing.assert_allclose(seen[0], 1 / average, rtol=1e-6)
    for t in (1, 2):
        average = 0.5 * average + 0.5 * np.array(LOSSES[t])
        np.testing.assert_allclose(seen[t], 1 / average, rtol=1e-6)


@pytest.mark.parametrize("name", ["slaw", "dtp", "ema_loss"])
def test_slaw_dtp_and_ema_loss_default_to_the_loss_level_and_stop_gradients(name):
    balancer = balancers.get(name)
    assert balancer.level == "losses"
    balancer.build(2)
    losses = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        weights, _ = balancer.task_weights(losses * 1.0, BalanceContext.default())
    gradient = tape.gradient(weights, losses)
    assert gradient is None or not np.any(gradient)
