"""Keras and pandas habits: per-task and spread numpy sample weights, class_weight's error, and
DataFrames into the diagnostics."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import small_batch, small_model


def test_sample_weight_is_one_vector_for_all_tasks_or_a_vector_per_task():
    model = small_model()
    x, y = small_batch(16)
    w = np.linspace(0.0, 2.0, 16).astype(np.float32)
    plain = model.task_losses(x, y).stacked.numpy()
    shared = model.task_losses(x, y, sample_weight=w).stacked.numpy()
    spread = model.task_losses(x, y, sample_weight={"click": w, "watch_time": w}).stacked.numpy()
    only_click = model.task_losses(x, y, sample_weight={"click": w}).stacked.numpy()
    np.testing.assert_allclose(spread, shared, rtol=1e-6)
    np.testing.assert_allclose(only_click, [shared[0], plain[1]], rtol=1e-6)  # watch_time weighs 1
    # The weighted mean by hand for click: Σ w·ℓ / Σ w with ℓ the binary cross-entropy.
    logits = model.forward(model.encoder.lookup_stage(x)).logits[0]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y["click"], logits=logits).numpy()
    np.testing.assert_allclose(shared[0], (w * bce).sum() / w.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\['clik'\], which are not tasks"):
        model.task_losses(x, y, sample_weight={"clik": w})


def test_fit_takes_a_numpy_sample_weight_with_dict_labels():
    model = small_model()
    model.compile(optimizer="adam")
    x, y = small_batch(32)
    x = {k: v.numpy() for k, v in x.items()}
    y = {k: v.numpy() for k, v in y.items()}
    weights = np.ones(32, np.float32)
    weights[::2] = 0.0  # Keras spreads this one array over the label dict
    history = model.fit(x, y, sample_weight=weights, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["skipped_steps"] == [0.0]


def test_class_weight_says_what_to_use_instead():
    model = small_model()
    model.compile(optimizer="adam")
    x, y = small_batch(16)
    with pytest.raises(ValueError, match=r"class_weight.*sample_weight=\{task: row weights\}"):
        model.fit(x, y, class_weight={0: 1.0, 1: 5.0}, verbose=0)


def test_gradient_cosines_take_a_dataframe_with_its_labels():
    model = small_model()
    x, y = small_batch(32)
    frame = pd.DataFrame({**{k: v.numpy() for k, v in x.items()},
                          **{k: v.numpy() for k, v in y.items()}})
    for column in ("country", "user"):
        frame[column] = frame[column].str.decode("utf-8")
    from_frame = km.diagnostics.gradient_cosines(model, frame)
    from_tensors = km.diagnostics.gradient_cosines(model, x, y)
    np.testing.assert_allclose(from_frame, from_tensors, atol=1e-5)
    assert from_frame.shape == (2, 2) and np.allclose(np.diag(from_frame), 1.0)


def test_evaluate_returns_one_value_per_metrics_name_in_that_order():
    model = small_model()
    model.compile(optimizer="adam")
    x, y = small_batch(32)
    values = model.evaluate(x, y, verbose=0)
    named = model.evaluate(x, y, verbose=0, return_dict=True)
    assert len(values) == len(model.metrics_names) == len(named)
    assert model.metrics_names[0] == "loss"
    np.testing.assert_allclose(values, [named[n] for n in model.metrics_names], rtol=1e-6)
