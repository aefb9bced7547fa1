import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.data import from_dataframe

SPEC = km.FeatureSpec([km.Numeric("age"), km.Categorical("country", vocabulary=["de", "us"]),
                       km.IntegerId("item", num_ids=5)])
TASKS = [km.Task("click"), km.Task("buy", sample_space="click")]


def frame(**overrides):
    data = {"age": [30.0, 40.0, 50.0], "country": ["de", "us", None], "item": [1, 2, 3],
            "click": [1.0, 0.0, 1.0], "buy": [0.0, np.nan, 1.0]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_batches_carry_features_labels_and_missing_labels_as_nan():
    (x, y), = list(from_dataframe(frame(), SPEC, TASKS, batch_size=8, lookups=False))
    assert x["country"].numpy().tolist() == [b"de", b"us", b""]
    assert np.isnan(y["buy"].numpy()[1])
    assert x["item"].dtype.name == "int64"
    # By default the vocabulary lookup is done here, once: OOV row 0, then the vocabulary.
    (rows, _), = list(from_dataframe(frame(), SPEC, TASKS, batch_size=8))
    assert "country" not in rows
    vocabulary = list(SPEC["country"].vocabulary)
    expected = [vocabulary.index(v) + 1 if v in vocabulary else 0 for v in ("de", "us", "")]
    assert rows["country__row"].numpy().tolist() == expected


def test_errors_name_the_column_and_an_offending_value():
    with pytest.raises(KeyError, match="Feature 'age' .* is not a column"):
        from_dataframe(frame().drop(columns="age"), SPEC, TASKS)
    with pytest.raises(ValueError, match="Binary task 'click' has label 2.0 at row 1"):
        from_dataframe(frame(click=[1.0, 2.0, 0.0]), SPEC, TASKS)
    with pytest.raises(ValueError, match="Numeric feature 'age' has non-numeric value 'old'"):
        from_dataframe(frame(age=[1.0, "old", 3.0]), SPEC, TASKS)
    with pytest.raises(KeyError, match="Task 'click' has no label column"):
        from_dataframe(frame().drop(columns="click"), SPEC, TASKS)


def test_a_task_without_any_label_is_reported_once():
    with pytest.warns(UserWarning, match="'buy' has no label in any of the 3 rows") as caught:
        from_dataframe(frame(buy=[np.nan, np.nan, np.nan]), SPEC, TASKS)
    assert len([w for w in caught if "no label" in str(w.message)]) == 1
    sentinel = [km.Task("click"), km.Task("buy", missing_value=-1.0)]
    with pytest.warns(UserWarning, match="'buy'"):
        from_dataframe(frame(buy=[-1.0, -1.0, -1.0]), SPEC, sentinel)


def test_non_finite_numbers_are_refused_with_column_and_row():
    bad = frame(age=[30.0, np.inf, 1e39]).set_axis(["r0", "r1", "r2"])
    with pytest.raises(ValueError, match=r"Numeric feature 'age' has value inf at row 'r1' \(2 of 3 rows"):
        from_dataframe(bad, SPEC, TASKS)
    (x, _), = list(from_dataframe(frame(age=[30.0, np.nan, 3e38]), SPEC, TASKS))  # NaN: missing
    assert np.isnan(x["age"].numpy()[1]) and np.isfinite(x["age"].numpy()[2])


def test_non_integral_ids_are_refused_not_truncated():
    with pytest.raises(ValueError, match=r"Integer feature 'item' has non-integral value 7.9 at row 1 "
                                         r"\(1 of 3 rows\)"):
        from_dataframe(frame(item=[1.0, 7.9, 3.0]), SPEC, TASKS)
    with pytest.raises(ValueError, match="'item' has non-integral value inf at row 2"):
        from_dataframe(frame(item=[1.0, 2.0, np.inf]), SPEC, TASKS)
    with pytest.raises(ValueError, match="'item' has non-integer value 'x' .row 0"):
        from_dataframe(frame(item=["x", 2, 3]), SPEC, TASKS)
    (x, _), = list(from_dataframe(frame(item=[1.0, 2.0, 3.0]), SPEC, TASKS))  # whole floats are fine
    assert x["item"].numpy().tolist() == [1, 2, 3]
