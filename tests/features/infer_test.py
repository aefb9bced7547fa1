"""FeatureSpec.infer: feature kinds from dtypes, adapted in the same pass."""

import numpy as np
import pandas as pd
import pytest

from keras_mtl import Categorical, FeatureSpec, Hashed, Numeric
from keras_mtl.data import from_dataframe
from keras_mtl.tasks import Task

RNG = np.random.default_rng(0)


def frame(n=400):
    return pd.DataFrame({
        "country": RNG.choice(["de", "fr", "us"], n),
        "device": pd.Categorical(RNG.choice(["ios", "android"], n)),
        "user_id": RNG.integers(0, 50, n),
        "session_count": RNG.integers(0, 5, n),
        "price": RNG.lognormal(3, 1.5, n),
        "score": RNG.normal(size=n),
        "is_new": RNG.integers(0, 2, n).astype(bool),
        "click": RNG.integers(0, 2, n).astype(np.float32),
    })


def test_kinds_follow_dtypes_and_names():
    data = frame()
    spec = FeatureSpec.infer(data, exclude=["click"])
    assert spec.names == ["country", "device", "user_id", "session_count", "price", "score",
                          "is_new"]
    assert isinstance(spec["country"], Categorical)
    assert set(spec["country"].vocabulary) == {"de", "fr", "us"}
    assert isinstance(spec["device"], Categorical)
    assert isinstance(spec["user_id"], Categorical) and spec["user_id"].dtype == "int64"
    assert isinstance(spec["session_count"], Numeric)  # an integer that is not an id
    assert isinstance(spec["is_new"], Numeric)
    assert spec["price"].log1p and not spec["score"].log1p  # heavy-tailed vs symmetric
    # Adapted in the same pass: standardisation statistics of the (transformed) column.
    np.testing.assert_allclose(spec["price"].mean, np.log1p(data["price"]).mean(), rtol=1e-6)
    np.testing.assert_allclose(spec["score"].std, data["score"].std(ddof=0), rtol=1e-6)
    assert spec["country"].embedding_dim == round(6 * 3 ** 0.25)


def test_high_cardinality_is_hashed_and_overrides_win():
    data = frame()
    spec = FeatureSpec.infer(data, exclude=["click"], max_vocabulary=10,
                             categorical=["session_count"], numeric=["user_id"])
    assert isinstance(spec["user_id"], Numeric)
    assert isinstance(spec["session_count"], Categorical)
    wide = pd.DataFrame({"query": [f"q{i}" for i in range(100)]})
    hashed = FeatureSpec.infer(wide, max_vocabulary=10)["query"]
    assert isinstance(hashed, Hashed) and hashed.num_bins == 400


def test_inferred_spec_feeds_a_pipeline():
    data = frame(64)
    spec = FeatureSpec.infer(data, exclude=["click"])
    x, y = next(iter(from_dataframe(data, spec, [Task("click")], batch_size=64, shuffle=False)))
    assert set(x) == set(spec.names)
    assert x["country"].dtype.name == "string" and x["price"].dtype.name == "float32"


def test_bad_requests_name_the_columns():
    data = frame(10)
    with pytest.raises(KeyError, match="nope"):
        FeatureSpec.infer(data, exclude=["nope"])
    with pytest.raises(ValueError, match="both categorical and numeric"):
        FeatureSpec.infer(data, categorical=["score"], numeric=["score"])
    with pytest.raises(ValueError, match="'when'.*datetime"):
        FeatureSpec.infer(data.assign(when=pd.Timestamp("2024-01-01")), exclude=["click"])
    with pytest.raises(ValueError, match="'country' has a non-numeric value"):
        FeatureSpec.infer(data, exclude=["click"], numeric=["country"])
