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
    (x, y), = list(from_dataframe(frame(), SPEC, TASKS, batch_size=8))
    assert x["country"].numpy().tolist() == [b"de", b"us", b""]
    assert np.isnan(y["buy"].numpy()[1])
    assert x["item"].dtype.name == "int64"


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
