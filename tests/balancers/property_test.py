"""Properties every registered balancer must have (one parametrised suite)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from tests.helpers import BACKBONES, xla_data, xla_spec

NAMES = [n for n in balancers.available() if not n.startswith("_")]
HPARAMS = {"static": {"weights": [1.0, 0.5, 2.0]}}
RNG = np.random.default_rng(0)
MATRICES = {
    "random": RNG.normal(size=(3, 7)),
    "low_rank": np.outer([1.0, 2.0, -1.0], RNG.normal(size=7)),
    "nearly_opposite": np.stack([np.ones(7), -np.ones(7) + 1e-3, RNG.normal(size=7)]),
    "badly_scaled": RNG.normal(size=(3, 7)) * np.array([[1e-6], [1.0], [1e6]]),
    "zero_task": np.vstack([RNG.normal(size=(2, 7)), np.zeros((1, 7))]),
}


def make(name, **extra):
    return balancers.get(name, **{**HPARAMS.get(name, {}), **extra})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", sorted(MATRICES))
def test_finite_output_of_the_right_shape(name, kind):
    balancer = make(name)
    level = balancer.level
    if level == "losses":
        balancer = make(name, level="parameters")
    balancer.build(3, num_columns=7)
    result = balancer.balance(tf.constant(MATRICES[kind], tf.float32), tf.constant([0.5, 1, 2.0]),
                              BalanceContext.default())
    assert result.combined.shape == (7,)
    assert np.all(np.isfinite(result.combined)), result.combined
    assert result.task_weights.shape == (3,)
    assert np.all(np.isfinite(result.task_weights))


@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_gradient_does_not_raise(name):
    # The model skips such a step; the balancer must only not stop training (TensorFlow's CPU
    # eigen/solve kernels raise on NaN input where XLA's return garbage).
    balancer = make(name)
    if balancer.level == "losses":
        balancer = make(name, level="parameters")
    balancer.build(3, num_columns=7)
    matrix = MATRICES["random"].copy()
    matrix[1, 2] = np.inf
    result = balancer.balance(tf.constant(matrix, tf.float32), tf.constant([0.5, 1, np.nan]),
                              BalanceContext.default())
    assert result.combined.shape == (7,)


@pytest.mark.parametrize("name", NAMES)
def test_sixty_four_tasks_with_a_zero_one(name):
    # Industrial rankers train tens of objectives: nothing is refused up to K = 64, the update is
    # finite and a task without labelled rows (a zero gradient) does not zero it.
    num_tasks, width = 64, 96
    rng = np.random.default_rng(64)
    matrix = rng.normal(size=(num_tasks, width)) * rng.uniform(0.1, 10, size=(num_tasks, 1))
    matrix[5] = 0.0
    extra = {"weights": list(np.linspace(0.5, 2.0, num_tasks))} if name == "static" else {}
    balancer = balancers.get(name, **extra)
    if balancer.level == "losses":
        balancer = balancers.get(name, level="parameters", **extra)
    balancer.build(num_tasks, num_columns=width)
    losses = tf.constant(rng.uniform(0.1, 2.0, size=num_tasks), tf.float32)
    result = balancer.balance(tf.constant(matrix, tf.float32), losses, BalanceContext.default())
    assert result.combined.shape == (width,)
    assert np.all(np.isfinite(result.combined)) and np.linalg.norm(result.combined) > 0
    assert result.task_weights.shape == (num_tasks,)
    assert np.all(np.isfinite(result.task_weights))


# Methods whose result depends on which task is which: per-task hyper-parameters or state that
# the test's fresh balancer does not have, a per-task random order, or a target task (MetaBalance);
# Krum breaks ties by task index, and with K − f − 2 = 1 neighbour the two rows nearest to each
# other always tie.
ORDER_DEPENDENT = {"static", "metabalance", "pcgrad", "gradvac", "rlw", "krum"}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ORDER_DEPENDENT])
def test_permuting_tasks_permutes_nothing_in_the_result(name):
    matrix = tf.constant(MATRICES["random"], tf.float32)
    losses = tf.constant([0.5, 1, 2.0])
    permutation = [2, 0, 1]
    outputs = []
    for m, task_losses in ((matrix, losses),
                           (tf.gather(matrix, permutation), tf.gather(losses, permutation))):
        balancer = make(name)
        if balancer.level == "losses":
            balancer = make(name, level="parameters")
        balancer.build(3, num_columns=7)
        outputs.append(balancer.balance(m, task_losses, BalanceContext.default()).combined)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def model():
    return km.MultiTaskModel(
        features=xla_spec(),
        tasks=[km.Task("click"), km.Task("watch_time", kind="regression"), km.Task("like")],
        backbone=BACKBONES["mmoe"](), tower_units=[4],
    )


def data():
    x, y = xla_data(128)
    y["like"] = (x["x2"] > 0).astype(np.float32)
    return x, y


@pytest.mark.parametrize("name", NAMES)
def test_trains_under_xla_and_round_trips_with_state(name, tmp_path):
    x, y = data()
    m = model()
    m.compile(optimizer="adam", jit_compile=True, balancer=make(name))
    history = m.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert history.history["skipped_steps"] == [0.0, 0.0]
    path = os.path.join(tmp_path, "m.keras")
    m.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.balancer) is type(m.balancer)
    assert restored.balancer.get_config() == m.balancer.get_config()
    for a, b in zip(m.balancer.weights, restored.balancer.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))
    # Called directly (not predict): the same check without compiling two more XLA functions.
    batch = {name: values[:32] for name, values in x.items()}
    np.testing.assert_allclose(restored(batch)["click"], m(batch)["click"], atol=1e-6)


def test_cograd_exact_hessian_mode_trains_in_the_model():
    x, y = data()
    m = model()
    m.compile(optimizer="adam", jit_compile=True,
              balancer=balancers.get("cograd", hessian="exact", gamma=0.5))
    history = m.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
