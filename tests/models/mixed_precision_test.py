"""mixed_float16 (loss scaling) and mixed_bfloat16 with balancers at every level."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import BACKBONES, xla_data, xla_spec


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _model(balancer, **kwargs):
    name, _, every = balancer.partition("*")
    name, _, level = name.partition("@")
    kwargs = {**({"level": level} if level else {}), **({"every": int(every)} if every else {}),
              **kwargs}
    return km.MultiTaskModel(
        features=xla_spec(), tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[8],
        balancer=km.balancers.get(name, **kwargs))


# Every code path of the step: losses level, FAMO's post-step pass, representation level (norms,
# Gramians, per-entry), parameter level (Gramian, projections, state shaped like a gradient) and
# the every-k wrapper.
PATHS = ["uw", "famo", "gradnorm", "mgda@representation", "graddrop", "mgda", "pcgrad", "db_mtl",
         "nash_mtl*2"]


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("balancer", PATHS)
def test_balancers_train_under_loss_scaling(policy, balancer):
    model = _model(balancer)
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = xla_data(256)
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert int(model.optimizer.inner_optimizer.iterations.numpy()) >= 6
    for v in model.balancer.weights:  # balancer state stays in full precision
        assert v.dtype in ("float32", "int64", "int32", "float64"), v.path
        assert np.all(np.isfinite(np.asarray(v))), v.path
    outputs = model(dict((k, v[:4]) for k, v in x.items()))
    assert all(o.dtype == "float32" for o in outputs.values())


@pytest.mark.parametrize("balancer", ["multibalance", "gradnorm", "mgda"])
def test_the_balancer_sees_unscaled_gradients(balancer):
    x, y = xla_data(64)

    def one_step(policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(3)
            model = _model(balancer)
            model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
            _, _, _, result, *_ = model.compute_gradients(x, y)
            return np.asarray(result.shared_weights), [np.asarray(u) for _, u in result.updates]
        finally:
            keras.mixed_precision.set_global_policy("float32")

    weights16, updates16 = one_step("mixed_float16")
    weights32, updates32 = one_step("float32")
    # float16 activations: a few per cent apart, not the loss scale (2^15) apart.
    np.testing.assert_allclose(weights16, weights32, rtol=0.05, atol=1e-3)
    for a, b in zip(updates16, updates32, strict=True):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_an_overflow_halves_the_scale_and_leaves_weights_and_balancer_alone(policy):
    model = _model("multibalance")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01),
                                                    initial_scale=2.0 ** 60)
    model.compile(optimizer=optimizer, jit_compile=False)
    x, y = xla_data(64)
    before = [np.asarray(v) for v in model.weights]
    # The epoch's only step overflowed: nothing was trained, and fit says so.
    with pytest.raises(RuntimeError, match=r"skipped \(1 non-finite gradient\)"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    history = model.history.history
    assert history["skipped_steps"] == [1.0]
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0 ** 59
    for value, v in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), value, err_msg=v.path)


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("balancer", ["uw", "mgda@representation", "pcgrad"])
def test_balancers_train_under_bfloat16(policy, balancer):
    model = _model(balancer)
    model.compile(optimizer="adam", jit_compile=False)
    history = model.fit(*xla_data(128), batch_size=64, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["skipped_steps"] == [0.0]
