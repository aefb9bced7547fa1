import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.features import FeatureEncoder, FeatureSpec
from tests.helpers import small_batch, small_model, small_spec


def test_adapt_fills_vocabularies_and_statistics():
    frame = pd.DataFrame({
        "country": ["us", "de", "us", None, "fr", "us"],
        "amount": [0.0, 1.0, 3.0, 7.0, np.nan, 15.0],
    })
    spec = FeatureSpec([km.Categorical("country"), km.Numeric("amount", log1p=True)]).adapt(
        frame, min_count=1)  # keep the values seen once (by default they go to the OOV row)
    assert spec["country"].vocabulary == ("us", "de", "fr")  # by frequency, then value
    values = np.log1p(np.array([0.0, 1.0, 3.0, 7.0, 15.0]))
    np.testing.assert_allclose(spec["amount"].mean, values.mean(), rtol=1e-6)
    np.testing.assert_allclose(spec["amount"].std, values.std(), rtol=1e-6)


def test_adapt_reports_bad_columns():
    spec = FeatureSpec([km.Numeric("amount")])
    with pytest.raises(KeyError, match="Cannot adapt feature 'amount'"):
        spec.adapt(pd.DataFrame({"other": [1.0]}))
    with pytest.raises(ValueError, match="'amount' has a non-numeric value 'abc'"):
        spec.adapt(pd.DataFrame({"amount": [1.0, "abc"]}))


def test_spec_config_round_trip_and_validation():
    spec = small_spec()
    assert FeatureSpec.from_config(spec.get_config()) == spec
    with pytest.raises(ValueError, match="repeated"):
        FeatureSpec([km.Numeric("a"), km.Numeric("a")])


def test_encoder_layout_oov_and_missing_numeric():
    spec = small_spec()
    encoder = FeatureEncoder(spec)
    x, _ = small_batch(8)
    out = np.asarray(encoder(x))
    assert out.shape == (8, encoder.output_dim) == (8, 1 + 1 + 4 + 3 + 2)
    # price: standardised with mean 1, std 2.
    np.testing.assert_allclose(out[:, 0], (x["price"].numpy() - 1.0) / 2.0, rtol=1e-6)
    # views: log1p then (mean 0, std 1).
    np.testing.assert_allclose(out[:, 1], np.log1p(x["views"].numpy()), rtol=1e-6)
    # Out-of-range ids share the last embedding row.
    table = np.asarray(encoder.embeddings["item_id"].embeddings)
    ids = x["item_id"].numpy()
    for row, item in enumerate(ids):
        expected = table[item] if 0 <= item < 20 else table[20]
        np.testing.assert_allclose(out[row, 2:6], expected)
    # A missing numeric value sits at the mean.
    nan_x = dict(x, price=np.full(8, np.nan, np.float32))
    np.testing.assert_array_equal(np.asarray(encoder(nan_x))[:, 0], 0.0)


def test_unadapted_categorical_fails_with_a_hint():
    with pytest.raises(ValueError, match="call FeatureSpec.adapt"):
        FeatureEncoder(FeatureSpec([km.Categorical("country")]))


def test_shape_errors_name_the_feature():
    encoder = FeatureEncoder(FeatureSpec([km.Numeric("a")]))
    with pytest.raises(ValueError, match="Feature 'a' must have shape"):
        encoder({"a": np.zeros((2, 3), np.float32)})


def test_adapt_refuses_non_finite_numbers_naming_column_and_rows():
    frame = pd.DataFrame({"age": [30.0, np.inf, 40.0, 1e39, np.nan]}, index=list("abcde"))
    with pytest.raises(ValueError, match=r"'age' has value inf at row 'b' \(2 of 5 rows .*float32"):
        FeatureSpec([km.Numeric("age")]).adapt(frame)
    # log1p would shrink 1e39 to 90 in float64, but the model casts to float32 first: inf.
    with pytest.raises(ValueError, match=r"'views' has value 1e\+39 at row 1 \(1 of 2"):
        FeatureSpec([km.Numeric("views", log1p=True)]).adapt(pd.DataFrame({"views": [1.0, 1e39]}))
    with pytest.raises(ValueError, match="'age' has value -inf"):
        FeatureSpec([km.Numeric("age")]).adapt({"age": np.array([1.0, -np.inf])})
    # NaN keeps meaning "missing": left out of the statistics.
    spec = FeatureSpec([km.Numeric("age")]).adapt(frame.drop(index=["b", "d"]))
    assert (spec["age"].mean, spec["age"].min, spec["age"].max) == (35.0, 30.0, 40.0)


def test_numeric_range_is_recorded_and_old_configs_still_load():
    frame = pd.DataFrame({"views": [0.0, 9.0, 99.0]})
    numeric = FeatureSpec([km.Numeric("views", log1p=True)]).adapt(frame)["views"]
    np.testing.assert_allclose((numeric.min, numeric.max), (0.0, np.log1p(99.0)))  # transformed scale
    low, high = numeric.standardized_range
    np.testing.assert_allclose(low, -numeric.mean / numeric.std)
    old = {"features": [{"kind": "numeric", "name": "views", "mean": 1.0, "std": 2.0, "log1p": False}]}
    legacy = FeatureSpec.from_config(old)["views"]
    assert legacy.min is None and legacy.standardized_range == (-10.0, 10.0)
    assert FeatureSpec.from_config(FeatureSpec([numeric]).get_config())["views"] == numeric
    with pytest.raises(ValueError, match="min 2.0 > max 1.0"):
        km.Numeric("a", min=2.0, max=1.0)


def test_encoder_treats_non_finite_numbers_as_missing_and_clips_to_the_training_range():
    spec = FeatureSpec([km.Numeric("age")]).adapt(pd.DataFrame({"age": [20.0, 30.0, 40.0]}))
    age = spec["age"]
    encoder = FeatureEncoder(spec)
    raw = np.array([1e38, -1e38, np.inf, -np.inf, np.nan, 1e39, 35.0], np.float64)  # 1e39: inf in f32
    expected = [(40 - 30) / age.std, (20 - 30) / age.std, 0, 0, 0, 0, 5 / age.std]
    np.testing.assert_allclose(np.asarray(encoder({"age": raw}))[:, 0], expected, rtol=1e-6)
    compiled = tf.function(encoder.call, jit_compile=True)  # tf.where / clip only: XLA compiles it
    with np.errstate(over="ignore"):
        raw32 = raw.astype(np.float32)
    np.testing.assert_allclose(np.asarray(compiled({"age": tf.constant(raw32)}))[:, 0], expected,
                               rtol=1e-6)


def test_extreme_numeric_input_gives_finite_scores():
    model = small_model()
    x, _ = small_batch(4)
    x = dict(x, price=tf.constant([1e38, -1e38, np.inf, np.nan], tf.float32),
             views=tf.constant([3e38, 1e38, np.inf, 1.0], tf.float32))
    out = model(x)
    for name, value in out.items():
        assert np.isfinite(value.numpy()).all(), name
    # A value past the clip range scores like the clip bound itself.
    at_bound = model(dict(x, price=tf.constant([21.0, -19.0, 1.0, 1.0], tf.float32)))  # mean 1 ± 10 std
    np.testing.assert_allclose(out["watch_time"].numpy()[:2], at_bound["watch_time"].numpy()[:2],
                               rtol=1e-5)


def test_a_feature_named_like_a_task_is_refused():
    spec = FeatureSpec([km.Numeric("age"), km.Numeric("click")])
    spec.check_not_labels(["watch_time"])
    with pytest.raises(ValueError, match="Feature 'click' has the same name as task 'click'.*leakage"):
        spec.check_not_labels([km.Task("click")])
    with pytest.raises(ValueError, match="Feature 'click' has the same name as task 'click'"):
        km.MultiTaskModel(features=spec, tasks=[km.Task("click")],
                          backbone=km.layers.SharedBottom(units=[4]))
