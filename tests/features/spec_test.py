import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.features import FeatureEncoder, FeatureSpec
from tests.helpers import small_batch, small_spec


def test_adapt_fills_vocabularies_and_statistics():
    frame = pd.DataFrame({
        "country": ["us", "de", "us", None, "fr", "us"],
        "amount": [0.0, 1.0, 3.0, 7.0, np.nan, 15.0],
    })
    spec = FeatureSpec([km.Categorical("country"), km.Numeric("amount", log1p=True)]).adapt(frame)
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
    assert not spec.supports_xla
    assert FeatureSpec([km.Numeric("a"), km.IntegerId("b")]).supports_xla


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
