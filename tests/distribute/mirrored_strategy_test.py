"""MirroredStrategy on two logical CPUs: balancers see global statistics, so N replicas train
exactly like one device on the same global batch."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import BACKBONES, xla_data, xla_spec

GLOBAL_BATCH = 64
STEPS = 3


@functools.cache
def _strategy():
    # One strategy for the whole module: each new one restarts its collective instance keys,
    # which the runtime has already bound to the previous strategy's reductions.
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (set up in conftest.py)")
    return tf.distribute.MirroredStrategy(devices[:2])


def _data():
    x, y = xla_data(GLOBAL_BATCH * STEPS, seed=3)
    # Missing labels spread unevenly over the replicas' halves of each batch: a task's global
    # mean then differs from the mean of the replicas' means, which global counts must handle.
    missing = np.zeros(len(y["watch_time"]), bool)
    missing[::GLOBAL_BATCH] = True
    missing[np.arange(len(missing)) % GLOBAL_BATCH < 12] = True
    y["watch_time"] = np.where(missing, np.nan, y["watch_time"]).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def _model(balancer: str):
    name, _, level = balancer.partition("@")
    model = km.MultiTaskModel(
        features=xla_spec(),
        tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[8],
        balancer=km.balancers.get(name, **({"level": level} if level else {})))
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    return model


def _train(balancer: str, strategy=None):
    keras.utils.set_random_seed(7)
    initial = _model(balancer).get_weights()
    if strategy is None:
        model = _model(balancer)
    else:
        with strategy.scope():
            model = _model(balancer)
    model.set_weights(initial)
    history = model.fit(_data(), epochs=1, verbose=0, shuffle=False)
    return model, history.history


# One balancer per family: loss-level, magnitude (representation level, gathered rows), direction
# at the parameter level (all-reduced task gradients), a Gramian method at the representation
# level, and FAMO's post-step losses.
BALANCERS = ("uw", "gradnorm", "mgda", "upgrad@representation", "famo")


@functools.cache
def single_device_run(balancer: str) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """`[(path, value)]` of every weight after training on one device, and the logs (shared with
    the multi-worker test)."""
    model, logs = _train(balancer)
    return [(v.path, np.asarray(v)) for v in model.weights], logs


@pytest.mark.parametrize("balancer", BALANCERS)
def test_two_replicas_match_one_device_on_the_same_global_batch(balancer):
    single, single_logs = single_device_run(balancer)
    mirrored, mirrored_logs = _train(balancer, _strategy())
    for (path, expected), v in zip(single, mirrored.weights, strict=True):
        np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{balancer}: {path}")
    for key in ("click_weight", "watch_time_weight", "click_loss", "watch_time_loss"):
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-4,
                                   err_msg=f"{balancer}: {key}")
    assert mirrored_logs["skipped_steps"] == [0.0]


def test_a_non_finite_batch_on_one_replica_skips_the_step_on_all():
    strategy = _strategy()
    with strategy.scope():
        model = _model("mgda")
    x, y = xla_data(GLOBAL_BATCH, seed=1)
    y["watch_time"][-1] = np.inf  # only in the second replica's half
    before = [np.asarray(v) for v in model.weights]
    # The only step is skipped, so the epoch trained nothing: fit says so.
    with pytest.raises(RuntimeError, match="all 1 training steps were skipped"):
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0, shuffle=False)
    assert model.history.history["skipped_steps"] == [1.0]
    for value, v in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), value, err_msg=v.path)


@pytest.mark.parametrize(("balancer", "match"), [
    (km.balancers.get("mgda", every=2), "every 2 steps"),
    (km.balancers.get("cograd", hessian="exact"), "Hessian term"),
])
def test_what_cannot_run_on_replicas_yet_says_so(balancer, match):
    with _strategy().scope():
        model = _model("ew")
    model.set_balancer(balancer)
    x, y = xla_data(GLOBAL_BATCH)
    with pytest.raises(NotImplementedError, match=match):
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
