"""ew / static / ple_schedule: closed forms, levels, configs."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)  # TorchJD's test matrix
RANDOM = np.random.default_rng(0).normal(size=(4, 9)).astype(np.float32)


def context(step=0, epoch=0):
    return BalanceContext(tf.constant(step, tf.int64), tf.constant(epoch, tf.int64))


def test_ew_is_the_column_sum():
    np.testing.assert_allclose(balancers.get("ew").aggregate(J), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(balancers.get("ew").aggregate(RANDOM), RANDOM.sum(0), rtol=1e-5, atol=1e-6)


def test_static_is_weights_times_matrix():
    weights = [0.5, 2.0, 0.0, 1.5]
    out = balancers.get("static", weights=weights).aggregate(RANDOM)
    np.testing.assert_allclose(out, np.asarray(weights) @ RANDOM, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unit, step, epoch, t", [("step", 7, 2, 7), ("epoch", 7, 2, 2)])
def test_ple_schedule_is_equation_10(unit, step, epoch, t):
    balancer = balancers.get("ple_schedule", initial_weights=[1.0, 3.0], decay=[0.9, 1.1],
                             unit=unit)
    balancer.build(2)
    weights, updates = balancer.task_weights(tf.zeros([2]), context(step, epoch))
    np.testing.assert_allclose(weights, [1.0 * 0.9**t, 3.0 * 1.1**t], rtol=1e-6)
    assert updates == ()
    np.testing.assert_allclose(balancer.aggregate(J, context=context(step, epoch)),
                               np.asarray(weights) @ J, rtol=1e-6)


def test_ple_schedule_scalar_decay_applies_to_every_task():
    balancer = balancers.get("ple_schedule", decay=0.5, unit="step")
    balancer.build(3)
    weights, _ = balancer.task_weights(tf.zeros([3]), context(step=3))
    np.testing.assert_allclose(weights, [0.125] * 3)


def test_static_and_ple_schedule_weight_counts_must_match_tasks():
    with pytest.raises(ValueError, match="2 weights .* 3 tasks"):
        balancers.get("static", weights=[1, 2]).build(3)
    with pytest.raises(ValueError, match="decay has 2 entries but the model has 3"):
        balancers.get("ple_schedule", decay=[0.9, 0.9]).build(3)


@pytest.mark.parametrize(
    "name, hparams",
    [("ew", {}), ("static", {"weights": [1.0, 2.0]}),
     ("ple_schedule", {"decay": [0.9, 0.8], "unit": "step", "level": "representation"})],
)
def test_ew_static_and_ple_schedule_config_round_trip(name, hparams):
    balancer = balancers.get(name, **hparams)
    clone = type(balancer).from_config(balancer.get_config())
    assert clone.get_config() == balancer.get_config()
    assert clone.level == balancer.level
    restored = balancers.get(__import__("keras").saving.serialize_keras_object(balancer))
    assert type(restored) is type(balancer)


def test_ew_static_and_ple_schedule_are_registered():
    assert {"ew", "static", "ple_schedule"} <= set(balancers.available())
