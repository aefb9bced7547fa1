"""The objectives real rankers train, end to end: a funnel with watch time, lifetime value and a
rating, every balancer level, calibration metrics, `.keras` round trip and fresh-process serving."""

import keras
import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl import serving
from keras_mtl.datasets import make_funnel
from tests.serving.export_test import run_fresh


def funnel_frame(n=600, seed=0):
    data = make_funnel(num_examples=n, num_users=50, num_items=40, watch_time=True, seed=seed,
                       fractions=(1.0, 0.0, 0.0))
    frame = data.train.copy()
    rng = np.random.default_rng(seed)
    frame["ltv"] = np.where(frame["purchase"] == 1, rng.lognormal(3.0, 1.0, len(frame)), 0.0)
    frame["rating"] = np.clip(np.round(frame["true_click"] * 20 + rng.normal(size=len(frame))),
                              0, 4)
    return data.features, frame


TASKS = [
    km.Task("click", pos_weight=4.0),
    km.Task("purchase", sample_space="click"),
    km.Task("watch_time", kind="watch_time"),
    km.Task("ltv", kind="ziln"),
    km.Task("rating", kind="multiclass", num_classes=5),
]


def funnel_model(spec, balancer="ew"):
    return km.MultiTaskModel(spec, TASKS, backbone=km.layers.MMoE(2, [8]), tower_units=[8],
                             balancer=balancer)


@pytest.fixture(scope="module")
def funnel():
    return funnel_frame()


@pytest.mark.parametrize("balancer", ["ew", "uw", "multibalance", "upgrad"])
def test_trains_with_every_level_and_reports_calibration(funnel, balancer):
    spec, frame = funnel
    model = funnel_model(spec, balancer)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(frame, batch_size=100, epochs=2, verbose=0).history
    assert history["skipped_steps"][-1] == 0
    assert history["loss"][-1] < history["loss"][0]
    logs = model.evaluate(frame, batch_size=200, verbose=0, return_dict=True)
    for name in ("click_pcoc", "click_ece", "click_logloss", "click_ne", "click_auc",
                 "purchase_pcoc", "watch_time_pcoc", "ltv_gini", "ltv_decile_mape",
                 "rating_accuracy", "rating_top_2"):
        assert np.isfinite(logs[name]), name
    predictions = model.predict(frame.head(8), verbose=0)
    assert predictions["rating"].shape == (8, 5)
    np.testing.assert_allclose(predictions["rating"].sum(1), 1.0, rtol=1e-5)
    for name in ("watch_time", "ltv"):  # expected values: non-negative amounts
        assert predictions[name].shape == (8,) and (predictions[name] >= 0).all()


def test_calibration_metric_equals_its_definition_on_the_model(funnel):
    spec, frame = funnel
    model = funnel_model(spec)
    model.compile()
    logs = model.evaluate(frame, batch_size=600, verbose=0, return_dict=True)
    predictions = model.predict(frame, batch_size=600, verbose=0)
    assert logs["click_pcoc"] == pytest.approx(predictions["click"].sum() / frame["click"].sum(),
                                               rel=1e-4)
    clicked = frame["click"].to_numpy() == 1  # purchase: the clicked rows only (sample space)
    assert logs["purchase_pcoc"] == pytest.approx(
        predictions["purchase"][clicked].sum() / frame["purchase"][clicked].sum(), rel=1e-4)


def test_keras_round_trip_and_fresh_process_serving(funnel, tmp_path):
    spec, frame = funnel
    model = funnel_model(spec, "upgrad")
    model.compile()
    model.fit(frame, batch_size=200, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    rows = frame.head(6)
    expected = model.predict(rows, verbose=0)
    for name, value in loaded.predict(rows, verbose=0).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
    assert [t.get_config() for t in loaded.tasks] == [t.get_config() for t in TASKS]

    score = serving.ScoreSpec(exponents={"click": 1.0, "purchase": 0.0, "watch_time": 0.5,
                                         "rating": 1.0},
                              classes={"rating": 4})
    path = serving.export(model, str(tmp_path / "ranker"), score=score, warmup=False)
    inputs = {name: rows[name].to_numpy() for name in spec.names}
    np.savez(tmp_path / "inputs.npz", **inputs)
    run_fresh("""
        import os
        import numpy as np
        import tensorflow as tf
        data = dict(np.load(os.environ["INPUTS"], allow_pickle=True))
        signature = tf.saved_model.load(os.environ["MODEL"]).signatures["serving_default"]
        inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in data.items()}
        np.savez(os.environ["OUTPUTS"], **{k: v.numpy() for k, v in signature(**inputs).items()})
    """, MODEL=path, INPUTS=str(tmp_path / "inputs.npz"), OUTPUTS=str(tmp_path / "out.npz"))
    served = np.load(tmp_path / "out.npz")
    for name in ("click", "watch_time", "ltv", "rating"):
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-5, atol=1e-6)
    # The score fuses each kind's served value: a probability, an expected watch time, the
    # probability of rating class 4.
    fused = (np.maximum(expected["click"], 1e-7) * np.sqrt(np.maximum(expected["watch_time"], 1e-7))
             * np.maximum(expected["rating"][:, 4], 1e-7))
    np.testing.assert_allclose(served["score"], fused, rtol=1e-4)


def test_invalid_labels_name_the_task_and_what_it_expects(funnel):
    spec, frame = funnel
    bad = frame.copy()
    bad.loc[bad.index[3], "rating"] = 7.0
    with pytest.raises(ValueError, match=r"Multiclass task 'rating' has label 7.0 at row .*"
                                         r"expected a class index 0 … 4"):
        km.data.from_dataframe(bad, spec, TASKS)
    model = funnel_model(spec)
    model.compile()
    x = {name: frame[name].to_numpy() for name in spec.names}
    y = {t.name: frame[t.name].to_numpy(np.float32) for t in TASKS}
    y["watch_time"] = y["watch_time"].copy()
    y["watch_time"][5] = -3.0
    with pytest.raises(ValueError, match=r"task 'watch_time' \(watch_time\): 1 label\(s\) that "
                                         r"are not a finite number >= 0"):
        model.fit(x, y, batch_size=200, epochs=1, verbose=0)


def test_ranking_loss_trains_under_xla_with_string_groups():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"x": rng.normal(size=n).astype(np.float32),
                          "request": [f"r{i}" for i in rng.integers(0, 40, n)]})
    frame["relevance"] = np.clip(np.round(frame["x"] + rng.normal(scale=0.3, size=n)) + 1, 0, 3)
    frame["click"] = (frame["relevance"] >= 2).astype(float)
    spec = km.FeatureSpec([km.Numeric("x"), km.Hashed("request", num_bins=64)])
    for name in ("listmle", "pairwise_logistic"):
        tasks = [km.Task("click"),
                 km.Task("relevance", kind="regression", loss=name, group="request")]
        model = km.MultiTaskModel(spec, tasks, backbone=km.layers.SharedBottom([8]),
                                  tower_units=[4], balancer="upgrad")
        model.compile(optimizer=keras.optimizers.Adam(0.02), jit_compile=True)
        before = model.evaluate(frame, batch_size=n, verbose=0, return_dict=True)
        model.fit(frame, batch_size=n, epochs=10, verbose=0)
        after = model.evaluate(frame, batch_size=n, verbose=0, return_dict=True)
        assert model.jit_compile
        assert after["relevance_loss"] < before["relevance_loss"]
        assert after["relevance_ndcg_10"] > before["relevance_ndcg_10"]
        assert after["relevance_ndcg_10"] > 0.9, name
