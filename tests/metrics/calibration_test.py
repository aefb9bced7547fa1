"""Calibration, lifetime-value and per-group ranking metrics against hand and row-level values."""

import keras
import keras_rs
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.metrics import (
    PCOC,
    DecileMAPE,
    ExpectedCalibrationError,
    GroupNDCG,
    LogLoss,
    NormalizedGini,
    make_metric,
    update_metric,
)
from keras_mtl.tasks import Task


def update(metric, y, p, w=None, **kwargs):
    metric.update_state(np.asarray(y, np.float32), np.asarray(p, np.float32),
                        sample_weight=None if w is None else np.asarray(w, np.float32), **kwargs)
    return float(metric.result())


def test_pcoc_and_ece_by_hand():
    y = [1, 0, 0, 1, 0]
    p = [0.9, 0.15, 0.05, 0.55, 0.45]
    assert update(PCOC(), y, p) == pytest.approx(2.1 / 2.0)
    # Bins of 0.1: {0.05}, {0.15}, {0.45}, {0.55}, {0.9}: gaps .05, .15, .45, .45, .1 over 5 rows.
    assert update(ExpectedCalibrationError(), y, p) == pytest.approx(1.2 / 5)
    # Two rows in one bin: their gaps cancel (0.4 − 1 + 0.4 − 0) before the absolute value.
    assert update(ExpectedCalibrationError(num_bins=2), [1, 0], [0.4, 0.4]) == pytest.approx(0.1)
    # Weights: a zero-weight row does not count.
    assert update(PCOC(), [1, 1], [0.5, 0.9], w=[1, 0]) == pytest.approx(0.5)
    assert np.isnan(update(PCOC(), [0, 0], [0.2, 0.3]))
    assert np.isnan(ExpectedCalibrationError().result())


def test_logloss_equals_keras_binary_crossentropy():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.uniform(0.01, 0.99, 50)
    reference = keras.metrics.BinaryCrossentropy()
    reference.update_state(y[:, None].astype(np.float32), p[:, None].astype(np.float32))
    assert update(LogLoss(), y, p) == pytest.approx(float(reference.result()), rel=1e-5)


def row_gini(labels, order):
    """Gini of the cumulative-gain curve of rows taken in `order`, trapezoids, row by row."""
    gain = np.concatenate([[0.0], np.cumsum(labels[order]) / labels.sum()])
    population = np.linspace(0.0, 1.0, len(labels) + 1)
    return 2.0 * np.trapezoid(gain, population) - 1.0


def test_normalised_gini_and_decile_mape_match_row_level_values():
    rng = np.random.default_rng(1)
    n = 200  # a multiple of 10: deciles of 20 rows each
    labels = np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(3.0, 1.0, n))
    predictions = np.exp(rng.normal(3.0, 1.0, n)) * (1 + labels / 50)  # distinct, correlated
    by_prediction = np.argsort(-predictions)
    expected = row_gini(labels, by_prediction) / row_gini(labels, np.argsort(-labels))
    gini = NormalizedGini(num_buckets=200_000)  # a bucket per value: exact
    assert update(gini, labels, predictions) == pytest.approx(expected, abs=1e-3)
    deciles = np.split(by_prediction, 10)
    mape = np.mean([abs(predictions[d].sum() - labels[d].sum()) / labels[d].sum()
                    for d in deciles if labels[d].sum() > 0])
    assert update(DecileMAPE(num_buckets=200_000), labels, predictions) == pytest.approx(mape,
                                                                                         rel=1e-3)
    # The default resolution is close, and a perfect model scores 1 / 0.
    assert update(NormalizedGini(), labels, predictions) == pytest.approx(expected, abs=0.01)
    assert update(NormalizedGini(), labels, labels + 1e-3) == pytest.approx(1.0, abs=0.01)
    assert update(DecileMAPE(), labels, labels) < 0.02


def test_group_ndcg_equals_keras_rs_per_group():
    rng = np.random.default_rng(2)
    sizes = [5, 3, 6]
    groups = np.repeat([11, 40, 7], sizes)
    labels = rng.integers(0, 4, len(groups)).astype(np.float32)
    labels[[0, 5, 8]] = 3.0  # every group has a relevant row
    scores = rng.normal(size=len(groups)).astype(np.float32)
    order = rng.permutation(len(groups))
    value = update(GroupNDCG(group_feature="request", k=3), labels[order], scores[order],
                   groups=groups[order])
    per_group = []
    for g in (11, 40, 7):
        at = groups == g
        reference = keras_rs.metrics.NDCG(k=3)
        reference.update_state(labels[at][None, :], scores[at][None, :])
        per_group.append(float(reference.result()))
    assert value == pytest.approx(np.mean(per_group), rel=1e-5)


def test_group_ndcg_leaves_out_groups_without_relevant_rows():
    metric = GroupNDCG(k=2)
    assert update(metric, [0, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], groups=[1, 1, 2, 2]) == 1.0
    assert np.isnan(update(GroupNDCG(), [0, 0], [0.5, 0.1], groups=[3, 3]))


def test_names_resolve_for_their_tasks():
    rating = Task("rating", kind="multiclass", num_classes=5)
    assert isinstance(make_metric("accuracy", "rating", rating), keras.metrics.SparseCategoricalAccuracy)
    assert make_metric("top_3", "rating", rating).k == 3
    ranked = Task("rel", kind="regression", loss="listmle", group="request")
    assert make_metric("ndcg_5", "rel", ranked).group_feature == "request"
    with pytest.raises(ValueError, match="top-k accuracy\\) is for multiclass"):
        make_metric("top_2", "click", Task("click"))
    with pytest.raises(ValueError, match="needs a task with group="):
        make_metric("ndcg_5", "click", Task("click"))


def test_keras_function_metrics_respect_row_weights():
    for name in ("mae", "mse", "mean_absolute_percentage_error"):
        metric = make_metric(name, "t")
        update_metric(metric, tf.constant([1.0, 0.0, 0.0]), tf.constant([2.0, 5.0, 5.0]),
                      tf.constant([1.0, 0.0, 0.0]))
        assert float(metric.result()) == pytest.approx(100.0 if "percentage" in name else 1.0)
