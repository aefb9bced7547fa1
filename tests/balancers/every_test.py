"""`every=k`: weights recomputed every k steps, reused (and the per-task passes skipped) between."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.balancers.every import EveryK
from tests.helpers import small_batch, small_model, xla_data, xla_spec

RNG = np.random.default_rng(0)


def at(step):
    return BalanceContext.default()._replace(step=tf.constant(step, tf.int64))


def test_weights_are_recomputed_every_k_steps_and_reused_between():
    wrapped = balancers.get("gradvac", every=3, beta=0.5)
    plain = balancers.get("gradvac", beta=0.5)
    wrapped.build(3)
    plain.build(3)
    stored = None
    for step in range(7):
        matrix = tf.constant(RNG.normal(size=(3, 5)), tf.float32)
        result = wrapped.balance(matrix, tf.zeros([3]), at(step))
        if step % 3 == 0:
            expected = plain.balance(matrix, tf.zeros([3]), at(step))
            for variable, value in expected.updates:  # the inner state moves on these steps only
                variable.assign(value)
            stored = np.asarray(expected.shared_weights)
            np.testing.assert_allclose(result.combined, expected.combined, rtol=1e-5)
        else:
            np.testing.assert_allclose(result.combined, stored @ matrix.numpy(), rtol=1e-5)
        for variable, value in result.updates:
            variable.assign(value)
        np.testing.assert_allclose(wrapped.inner.targets, plain.targets, rtol=1e-6)


def test_a_fresh_or_restored_wrapper_computes_on_its_first_step_whatever_the_step():
    wrapped = balancers.get("mgda", every=10)
    wrapped.build(2)
    matrix = tf.constant([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    np.testing.assert_allclose(wrapped.balance(matrix, tf.zeros([2]), at(7)).combined, [0, 1, 1],
                               atol=1e-6)


def test_only_weightings_can_be_wrapped():
    assert not isinstance(balancers.get("nash_mtl", every=1), EveryK)
    with pytest.raises(ValueError, match="not a weighting"):
        balancers.get("graddrop", every=5)
    with pytest.raises(ValueError, match="extra passes"):
        balancers.get("famo", every=5)
    with pytest.raises(ValueError, match="positive"):
        balancers.get("mgda", every=0)


def model_weights(model):
    own = {id(v) for v in model.balancer.weights}
    return [v for v in model.weights if id(v) not in own]


def dense(g):
    return None if g is None else np.asarray(tf.convert_to_tensor(g))


@pytest.mark.parametrize("level", ["parameters", "representation"])
def test_model_recomputes_exactly_then_back_propagates_the_stored_weighting(level):
    x, y = small_batch(32)
    model = small_model(balancer=balancers.get("nash_mtl", every=2, level=level))
    model.compile(optimizer="sgd")
    reference = small_model(balancer=balancers.get("nash_mtl", level=level))
    reference.compile(optimizer="sgd")
    for source, target in zip(model_weights(model), model_weights(reference), strict=True):
        target.assign(source)
    grads, variables, _, result, *_ = model.compute_gradients(x, y)
    expected, _, _, expected_result, *_ = reference.compute_gradients(x, y)
    for g, e, v in zip(grads, expected, variables, strict=True):
        if e is None:
            assert g is None, v.path
        else:
            np.testing.assert_allclose(dense(g), dense(e), rtol=1e-5, atol=1e-7, err_msg=v.path)
    for variable, value in result.updates:
        variable.assign(value)
    np.testing.assert_allclose(model.balancer.stored_shared_weights,
                               expected_result.shared_weights, rtol=1e-6)
    # Step 1: reuse. The gradient is that of Σ w L (shared) and Σ L (heads, Nash's task weights).
    model.optimizer.iterations.assign(1)
    x2, y2 = small_batch(32, seed=1)
    grads, _, _, _, *_ = model.compute_gradients(x2, y2)
    w = np.asarray(model.balancer.stored_shared_weights)
    with tf.GradientTape(persistent=True) as tape:
        logits = model.forward(x2, training=True).logits
        losses = model.task_loss_function(y2, logits).stacked
        shared_total = tf.reduce_sum(w * losses)
        head_total = tf.reduce_sum(losses)
    shared_ids = {id(v) for v in model.shared_variables}
    for g, v in zip(grads, variables, strict=True):
        e = tape.gradient(shared_total if id(v) in shared_ids else head_total, v)
        if e is None:
            assert g is None or not np.any(dense(g)), v.path
        else:
            np.testing.assert_allclose(dense(g), dense(e), rtol=1e-5, atol=1e-7, err_msg=v.path)


def test_trains_under_xla_and_round_trips(tmp_path):
    x, y = xla_data(128)
    model = km.MultiTaskModel(features=xla_spec(),
                              tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
                              backbone=km.layers.MMoE(num_experts=2, expert_units=[8]),
                              tower_units=[4])
    model.compile(optimizer="adam", jit_compile=True,
                  balancer=balancers.get("upgrad", every=3, level="parameters"))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert history.history["skipped_steps"] == [0.0, 0.0]
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.balancer, EveryK) and restored.balancer.every == 3
    assert restored.balancer.get_config() == model.balancer.get_config()
    for a, b in zip(model.balancer.weights, restored.balancer.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("level", ["parameters", "representation"])
def test_both_branches_of_a_scheduled_step_share_one_forward_pass(level, monkeypatch):
    """The recompute and reuse branches read one recorded forward pass: the model's forward pass
    is traced (and compiled) once per step, not once per branch."""
    x, y = small_batch(32)
    model = small_model(balancer=balancers.get("mgda", every=4, level=level))
    model.compile(optimizer="sgd")
    forward, calls = model.forward, []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("detach_cut"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    tf.function(model.compute_gradients).get_concrete_function(
        tf.nest.map_structure(tf.constant, x), tf.nest.map_structure(tf.constant, y))
    assert calls == [True]
