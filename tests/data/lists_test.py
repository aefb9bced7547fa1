"""from_dataframe with list-valued columns: id lists padded and truncated, vectors checked."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.data import feature_arrays, from_dataframe
from keras_mtl.features import PADDING
from tests.features.list_helpers import list_batch, list_model

P = PADDING
SPEC = km.FeatureSpec([km.Sequence("hist", num_ids=10, max_length=3),
                       km.Vector("vec", dim=2), km.Numeric("price")])
TASKS = [km.Task("click")]


def frame(**overrides):
    data = {"hist": [[5, 4, 3, 2, 1], [], None, np.asarray([7], np.int32), (1.0, 2.0)],
            "vec": [[0.5, 1.0], np.asarray([2.0, 3.0]), [0, 1], (1.5, -1.5), [0.0, 0.0]],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0], "click": [1.0, 0.0, 1.0, 0.0, 1.0]}
    data.update(overrides)
    return pd.DataFrame(data, index=[f"r{i}" for i in range(5)])


def test_lists_are_padded_truncated_and_vectors_stacked():
    (x, y), = list(from_dataframe(frame(), SPEC, TASKS, batch_size=8))
    assert x["hist"].dtype == tf.int64 and x["hist"].shape == (5, 3)
    np.testing.assert_array_equal(x["hist"], [[5, 4, 3], [P, P, P], [P, P, P], [7, P, P], [1, 2, P]])
    assert x["vec"].dtype == tf.float32 and x["vec"].shape == (5, 2)
    np.testing.assert_array_equal(x["vec"][1], [2.0, 3.0])


def test_shuffled_batches_keep_rows_together():
    batches = list(from_dataframe(frame(), SPEC, TASKS, batch_size=2, shuffle=True, seed=1))
    rows = {tuple(h): tuple(p for p in [float(price)])
            for x, _ in batches for h, price in zip(x["hist"].numpy().tolist(), x["price"].numpy(),
                                                    strict=True)}
    assert rows[(5, 4, 3)] == (1.0,) and rows[(7, P, P)] == (4.0,)


@pytest.mark.parametrize("column, values, message", [
    ("hist", [[1], 3, [2], [2], [2]], "Sequence feature 'hist' at row 'r1': got int 3; expected a "
                                      "list"),
    ("hist", [[1], [2], [2, "x"], [2], [2]], "'hist' at row 'r2': id 'x' .str. is not an integer"),
    ("hist", [[1], [2], [2], [2.5], [2]], "'hist' at row 'r3': id 2.5 is not an integer"),
    ("hist", [[1], [2], [2], [2], [[1, 2]]], "'hist' at row 'r4': got a nested list"),
    ("vec", [[1.0, 2.0], [1.0], [0, 1], [0, 1], [0, 1]], "Vector feature 'vec' at row 'r1': got 1 "
                                                         "values; expected a list .* of 2"),
    ("vec", [[1.0, 2.0], [1, 2], None, [0, 1], [0, 1]], "'vec' at row 'r2': got NoneType None"),
    ("vec", [[1.0, 2.0], [1, 2], [0, 1], ["a", "b"], [0, 1]], "'vec' at row 'r3': got non-numeric"),
    ("vec", [[1.0, 2.0], [1, 2], [0, 1], [0, 1], [np.nan, 1]], "'vec' at row 'r4': value nan"),
])
def test_errors_name_the_feature_the_row_and_what_was_expected(column, values, message):
    with pytest.raises(ValueError, match=message):
        from_dataframe(frame(**{column: values}), SPEC, TASKS)


def test_a_model_trains_from_a_dataframe_with_lists():
    x, y = list_batch(32, seed=2)
    data = pd.DataFrame({
        **{k: v for k, v in x.items() if v.ndim == 1},
        # Cells as a caller holds them: ragged Python lists (padding stripped) and arrays.
        "hist_item_ids": [[int(i) for i in row if i != P] for row in x["hist_item_ids"]],
        "tags": [row[row != P] for row in x["tags"]],
        "user_vec": list(x["user_vec"]), **y,
    })
    model = list_model()
    arrays = feature_arrays(data, model.spec)
    np.testing.assert_array_equal(arrays["hist_item_ids"], _packed(x["hist_item_ids"])[:, :5])
    np.testing.assert_array_equal(arrays["tags"], _packed(x["tags"]))
    model.compile(optimizer="adam")
    history = model.fit(from_dataframe(data, model.spec, model.tasks, batch_size=16), epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def _packed(ids: np.ndarray) -> np.ndarray:
    """Each row's ids first, then padding (what from_dataframe makes of a list without padding)."""
    out = np.full_like(ids, P)
    for i, row in enumerate(ids):
        kept = row[row != P]
        out[i, :len(kept)] = kept
    return out
