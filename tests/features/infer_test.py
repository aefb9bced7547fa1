"""FeatureSpec.infer: feature kinds from dtypes, adapted in the same pass."""

import numpy as np
import pandas as pd
import pytest

from keras_mtl import Categorical, FeatureSpec, Hashed, Numeric
from keras_mtl.data import from_dataframe
from keras_mtl.features.lookups import needs_lookup, row_key
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
    x, y = next(iter(from_dataframe(data, spec, [Task("click")], batch_size=64, shuffle=False,
                                    lookups=False)))
    assert set(x) == set(spec.names)
    assert x["country"].dtype.name == "string" and x["price"].dtype.name == "float32"
    rows, _ = next(iter(from_dataframe(data, spec, [Task("click")], batch_size=64)))
    looked_up = {f.name for f in spec if needs_lookup(f)}
    assert looked_up >= {"country"}
    assert set(rows) == {row_key(n) if n in looked_up else n for n in spec.names}
    assert rows[row_key("country")].dtype.name == "int64"


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


def test_task_columns_are_left_out():
    data = frame()
    spec = FeatureSpec.infer(data, tasks=[Task("click")])
    assert "click" not in spec.names and "price" in spec.names
    assert FeatureSpec.infer(data, tasks=["click"], exclude=["score"]).names == [
        n for n in spec.names if n != "score"]
    assert spec.inference_report["click"].decision == "left out"
    assert "label of task 'click'" in spec.inference_report["click"].reason


def test_integer_codes_are_categorical_by_name():
    n = 300
    codes = pd.DataFrame({
        "101": RNG.integers(0, 40, n),             # Ali-CCP field ids
        "109_14": RNG.integers(0, 6, n),
        "categorical_1": RNG.integers(0, 9, n),    # AliExpress
        "item_id": RNG.integers(0, 20, n),
        "session_count": RNG.integers(0, 5, n),    # a small count is still a quantity
        "numerical_1": RNG.normal(size=n),
    })
    spec = FeatureSpec.infer(codes)
    for name in ("101", "109_14", "categorical_1", "item_id"):
        assert isinstance(spec[name], Categorical) and spec[name].dtype == "int64", name
    assert isinstance(spec["session_count"], Numeric) and isinstance(spec["numerical_1"], Numeric)


def test_inference_report_says_what_was_decided_and_why(capsys, caplog):
    data = frame()
    with caplog.at_level("INFO", logger="keras_mtl.features.spec"):
        spec = FeatureSpec.infer(data, tasks=[Task("click")], verbose=True)
    report = spec.inference_report
    assert [row.column for row in report] == list(data.columns)
    assert report["user_id"].decision.startswith("Categorical") and "*_id" in report["user_id"].reason
    assert report["session_count"].decision == "Numeric"
    assert "not an id/code" in report["session_count"].reason
    assert report["price"].decision == "Numeric (log1p)" and "skewness" in report["price"].reason
    assert report["country"].distinct == 3 and report["country"].dtype in ("object", "str")
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["column", "dtype", "distinct", "decision", "reason"]
    assert all(column in printed for column in data.columns)
    assert "session_count" in caplog.text
    assert list(report.to_frame().columns) == ["column", "dtype", "distinct", "decision", "reason"]
