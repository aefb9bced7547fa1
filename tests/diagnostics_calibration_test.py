"""`calibration_table`: buckets of equal weight by prediction, checked against predictions taken
through `model.predict` (another path than the table's) and against the labels directly."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import xla_data, xla_spec


def _frame(n=240, seed=0):
    x, y = xla_data(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    value = np.where(rng.random(n) < 0.4, rng.lognormal(2.0 + x["x0"], 0.7), 0.0)
    purchase = np.where(y["click"] > 0, (rng.random(n) < 0.5).astype(np.float32), np.nan)
    rating = rng.integers(0, 3, n).astype(np.float32)
    return pd.DataFrame({**x, **y, "value": value, "purchase": purchase, "rating": rating})


def _model(tasks):
    model = km.MultiTaskModel(xla_spec(), tasks, km.layers.MMoE(2, [8]), tower_units=[4])
    model.compile("adam")
    return model


def _expected(predictions, labels, bins):
    """Equal-size buckets of the rows sorted by prediction, computed directly."""
    order = np.argsort(predictions, kind="stable")
    parts = np.array_split(order, bins)
    return ([predictions[p].mean() for p in parts], [labels[p].mean() for p in parts])


def test_buckets_of_a_binary_task_match_predict_and_the_labels():
    frame = _frame()
    model = _model([km.Task("click"), km.Task("watch_time", kind="regression")])
    model.fit(frame, epochs=2, batch_size=64, verbose=0)
    table = km.diagnostics.calibration_table(model, frame, task="click", bins=4)
    predicted = model.predict(frame, verbose=0)["click"].reshape(-1)
    expected_predicted, expected_observed = _expected(predicted, frame.click.to_numpy(), 4)
    assert list(table.index) == [1, 2, 3, 4, "all"] and table.index.name == "bin"
    np.testing.assert_array_equal(table.rows.to_numpy(), [60, 60, 60, 60, 240])
    np.testing.assert_allclose(table.predicted.to_numpy()[:4], expected_predicted, rtol=1e-5)
    np.testing.assert_allclose(table.observed.to_numpy()[:4], expected_observed, rtol=1e-6)
    assert np.all(np.diff(table.predicted.to_numpy()[:4]) >= 0)
    overall = table.loc["all"]
    np.testing.assert_allclose(overall.pcoc, predicted.mean() / frame.click.mean(), rtol=1e-5)
    logs = model.evaluate(frame, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(overall.pcoc, logs["click_pcoc"], rtol=1e-4)


def test_rows_are_those_the_metrics_count_sample_space_missing_labels_and_weights():
    frame = _frame()
    frame.loc[:9, "click"] = np.nan  # missing click labels: out of both tasks' rows
    model = _model([km.Task("click"), km.Task("purchase", sample_space="click")])
    table = km.diagnostics.calibration_table(model, frame, task="purchase", bins=2)
    inside = (frame.click == 1) & frame.purchase.notna()
    assert table.loc["all", "rows"] == inside.sum()
    np.testing.assert_allclose(table.loc["all", "observed"], frame.purchase[inside].mean())
    # An ESMM task's pCVR is judged where its parent happened (its loss covers every impression).
    esmm = _model([km.Task("click"), km.Task("purchase", esmm_parent="click")])
    esmm_table = km.diagnostics.calibration_table(esmm, frame, task="purchase", bins=2)
    assert esmm_table.loc["all", "rows"] == inside.sum()
    # Sample weights: buckets of equal weight, weighted means.
    weights = np.where(np.arange(len(frame)) % 2 == 0, 3.0, 1.0).astype(np.float32)
    x = {name: frame[name].to_numpy() for name in xla_spec().names}
    y = {"click": frame.click.to_numpy(np.float32), "purchase": frame.purchase.to_numpy(np.float32)}
    weighted = km.diagnostics.calibration_table(model, x, y, task="click", bins=1,
                                                sample_weight={"click": weights})
    present = frame.click.notna().to_numpy()
    assert weighted.loc["all", "weight"] == weights[present].sum()
    np.testing.assert_allclose(
        weighted.loc["all", "observed"],
        np.sum(weights[present] * frame.click[present]) / weights[present].sum(), rtol=1e-6)


def test_a_ziln_table_decomposes_each_prediction_exactly_label_scale_included():
    frame = _frame()
    model = _model([km.Task("value", kind="ziln", label_scale=10.0)])
    model.fit(frame, epochs=2, batch_size=64, verbose=0)
    rows = len(frame)
    table = km.diagnostics.calibration_table(model, frame, bins=rows)  # one row per bucket
    buckets = table.iloc[:-1]
    # p · exp(μ + σ²/2) is the prediction, in the label's units (μ shifted by log 10).
    np.testing.assert_allclose(buckets.predicted, buckets.p * buckets.predicted_nonzero,
                               rtol=1e-4)
    np.testing.assert_allclose(
        buckets.predicted_nonzero, np.exp(buckets.mu + buckets.sigma ** 2 / 2), rtol=1e-4)
    np.testing.assert_allclose(np.sort(buckets.predicted.to_numpy()),
                               np.sort(model.predict(frame, verbose=0)["value"].reshape(-1)),
                               rtol=1e-5)
    # Buckets of many rows mix the rows' log-normals in proportion to p: the mixture's moments
    # and mean, computed here from the one-row buckets.
    p, mu, sigma = (buckets[c].to_numpy() for c in ("p", "mu", "sigma"))
    mixed = km.diagnostics.calibration_table(model, frame, bins=1).loc["all"]
    np.testing.assert_allclose(mixed.mu, np.sum(p * mu) / p.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        mixed.sigma, np.sqrt(np.sum(p * (sigma ** 2 + mu ** 2)) / p.sum() - mixed.mu ** 2),
        rtol=1e-4)
    np.testing.assert_allclose(mixed.predicted, mixed.p * mixed.predicted_nonzero, rtol=1e-5)
    # What the labels show, computed from them directly (weighted, in four buckets).
    weights = np.where(np.arange(rows) % 3 == 0, 2.0, 1.0)
    weighted = km.diagnostics.calibration_table(
        model, {n: frame[n].to_numpy() for n in xla_spec().names},
        {"value": frame.value.to_numpy(np.float32)}, bins=4, sample_weight=weights)
    order = np.argsort(model.predict(frame, verbose=0)["value"].reshape(-1), kind="stable")
    value, cumulative = frame.value.to_numpy(), np.cumsum(weights[order])
    bucket = np.minimum(((cumulative - weights[order] / 2) / cumulative[-1] * 4).astype(int), 3)
    np.testing.assert_allclose(weighted.weight.to_numpy()[:4],
                               [weights[order][bucket == b].sum() for b in range(4)])
    for b in range(4):
        members = order[bucket == b]
        w, v = weights[members], value[members]
        logs, lw = np.log(v[v > 0]), w[v > 0]
        log_mean = np.sum(lw * logs) / lw.sum()
        expected = {"observed": np.sum(w * v) / w.sum(), "nonzero": lw.sum() / w.sum(),
                    "log_mean": log_mean,
                    "log_std": np.sqrt(np.sum(lw * (logs - log_mean) ** 2) / lw.sum()),
                    "observed_nonzero": np.sum(lw * v[v > 0]) / lw.sum()}
        for column, number in expected.items():
            np.testing.assert_allclose(weighted.iloc[b][column], number, rtol=1e-5,
                                       err_msg=f"bucket {b + 1}, {column}")
    assert np.all((buckets.p > 0) & (buckets.p < 1) & (buckets.sigma > 0))


def test_non_finite_predictions_are_left_out_and_counted_and_empty_buckets_are_nan():
    frame = _frame(n=60)
    model = _model([km.Task("value", kind="ziln")])
    model.predict(frame.iloc[:2], verbose=0)  # builds the layers
    logit = model.logit_layers[0]
    kernel = logit.kernel.numpy()
    kernel[:, 2] = np.random.default_rng(0).normal(0.0, 3.0, kernel.shape[0])
    logit.kernel.assign(kernel)
    logit.bias.assign([0.0, 0.0, 13.0])  # σ ≈ 13: exp(σ²/2) overflows float32 on some rows
    with pytest.warns(UserWarning, match=r"'value': \d+ of 60 labelled rows have a non-finite"):
        table = km.diagnostics.calibration_table(model, frame, bins=100)
    skipped = table.attrs["non_finite_rows"]
    assert 0 < skipped < 60 and table.loc["all", "rows"] + skipped == 60
    assert np.isfinite(table.loc["all", "predicted"])
    empty = table[table.rows == 0]
    assert len(empty) > 0 and empty.drop(columns=["rows", "weight"]).isna().all().all()


def test_multiclass_needs_a_class_and_a_dataset_gives_the_same_table():
    frame = _frame()
    model = _model([km.Task("rating", kind="multiclass", num_classes=3)])
    table = km.diagnostics.calibration_table(model, frame, bins=3, class_index=2)
    probabilities = model.predict(frame, verbose=0)["rating"][:, 2]
    expected_predicted, expected_observed = _expected(probabilities,
                                                      (frame.rating == 2).to_numpy(float), 3)
    np.testing.assert_allclose(table.predicted.to_numpy()[:3], expected_predicted, rtol=1e-5)
    np.testing.assert_allclose(table.observed.to_numpy()[:3], expected_observed, rtol=1e-6)
    x = {name: frame[name].to_numpy() for name in xla_spec().names}
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, {"rating": frame.rating.to_numpy(np.float32)})).batch(50)
    from_dataset = km.diagnostics.calibration_table(model, dataset, bins=3, class_index=2)
    pd.testing.assert_frame_equal(from_dataset, table, rtol=1e-5)
    weights = np.linspace(0.5, 2.0, len(frame)).astype(np.float32)
    weighted = km.diagnostics.calibration_table(model, x, {"rating": frame.rating.to_numpy()},
                                                bins=3, class_index=2, sample_weight=weights)
    weighted_dataset = tf.data.Dataset.from_tensor_slices(
        (x, {"rating": frame.rating.to_numpy(np.float32)}, weights)).batch(50)
    pd.testing.assert_frame_equal(
        km.diagnostics.calibration_table(model, weighted_dataset, bins=3, class_index=2),
        weighted, rtol=1e-5)
    with pytest.raises(ValueError, match="sample_weight= would be ignored"):
        km.diagnostics.calibration_table(model, weighted_dataset, class_index=2,
                                         sample_weight=weights)
    with pytest.raises(ValueError, match=r"'rating' is multiclass: give class_index"):
        km.diagnostics.calibration_table(model, frame)


def test_bad_requests_say_what_was_expected():
    frame = _frame()
    model = _model([km.Task("click"), km.Task("purchase", sample_space="click")])
    with pytest.raises(ValueError, match=r"Name the task.*\['click', 'purchase'\]"):
        km.diagnostics.calibration_table(model, frame)
    with pytest.raises(ValueError, match="Unknown task 'clicks'"):
        km.diagnostics.calibration_table(model, frame, task="clicks")
    for bins in (0, 2.5):
        with pytest.raises(ValueError, match="bins must be an integer >= 1"):
            km.diagnostics.calibration_table(model, frame, task="click", bins=bins)
    with pytest.raises(ValueError, match="class_index is for multiclass tasks; task 'click'"):
        km.diagnostics.calibration_table(model, frame, task="click", class_index=1)
    unclicked = frame.assign(click=0.0)
    with pytest.raises(ValueError, match="'purchase' has no labelled rows"):
        km.diagnostics.calibration_table(model, unclicked, task="purchase")
    with pytest.raises(ValueError, match="needs labels"):
        km.diagnostics.calibration_table(model, {n: frame[n].to_numpy()
                                                 for n in xla_spec().names}, task="click")
