"""Lookups in the input pipeline: the same rows as the model's own lookups, and an XLA step."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.features.lookups import LookupStage, row_key
from tests.helpers import small_batch, small_model, small_spec


def test_stage_gives_the_rows_of_the_vocabulary_and_the_hash():
    stage = LookupStage(small_spec())
    x, _ = small_batch(8)
    out = stage(x)
    assert "country" not in out and "user" not in out
    country = x["country"].numpy().astype(str)
    # StringLookup: OOV row 0, then the vocabulary in order.
    expected = [{"de": 1, "fr": 2, "us": 3}.get(v, 0) for v in country]
    np.testing.assert_array_equal(out[row_key("country")].numpy(), expected)
    hashed = keras.layers.Hashing(num_bins=16)(x["user"]).numpy()
    np.testing.assert_array_equal(out[row_key("user")].numpy(), hashed)
    for name in ("price", "views", "item_id"):  # no lookup: passed through as they are
        assert out[name] is x[name]
    assert stage.pending(out) == [] and stage(out).keys() == out.keys()  # idempotent


def test_integer_input_to_a_hashed_feature_hashes_its_decimal_string():
    spec = km.FeatureSpec([km.Hashed("user", num_bins=50)])
    stage = LookupStage(spec)
    as_int = stage({"user": np.array([7, 123], np.int64)})[row_key("user")]
    as_str = stage({"user": np.array(["7", "123"])})[row_key("user")]
    np.testing.assert_array_equal(as_int.numpy(), as_str.numpy())


def test_model_scores_rows_looked_up_in_the_pipeline_as_raw_values():
    model = small_model()
    x, _ = small_batch(16)
    raw = model(x)
    looked_up = model(model.encoder.lookup_stage(x))
    fresh_stage = LookupStage(model.spec)(x)  # from the spec alone, as from_dataframe builds it
    for name in raw:
        np.testing.assert_allclose(looked_up[name].numpy(), raw[name].numpy(), rtol=1e-6)
        np.testing.assert_allclose(model(fresh_stage)[name].numpy(), raw[name].numpy(), rtol=1e-6)


def test_from_dataframe_looks_up_once_unless_asked_not_to():
    x, y = small_batch(10)
    frame = pd.DataFrame({**{k: v.numpy() for k, v in x.items()}, **{k: v.numpy() for k, v in y.items()}})
    frame["country"] = frame["country"].str.decode("utf-8")
    frame["user"] = frame["user"].str.decode("utf-8")
    tasks = [km.Task("click"), km.Task("watch_time", kind="regression")]
    (features, _), = km.data.from_dataframe(frame, small_spec(), tasks, batch_size=10).take(1)
    assert {row_key("country"), row_key("user")} <= set(features) and "country" not in features
    assert features[row_key("country")].dtype == tf.int64
    (raw, _), = km.data.from_dataframe(frame, small_spec(), tasks, batch_size=10,
                                       lookups=False).take(1)
    assert raw["country"].dtype == tf.string and row_key("country") not in raw


def test_string_features_train_under_xla():
    """The model keeps `jit_compile=True` with string features (Keras would turn it off) and a
    raw-string dataset, a dict of arrays and a DataFrame all train, evaluate and predict."""
    model = small_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when it drops jit_compile
        model.compile(optimizer="adam", jit_compile=True)
    assert model.jit_compile is True
    x, y = small_batch(64)
    raw_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = model.fit(raw_ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert model.jit_compile is True
    model.fit({k: v.numpy() for k, v in x.items()}, {k: v.numpy() for k, v in y.items()},
              batch_size=16, epochs=1, verbose=0, validation_data=(x, y))
    predictions = model.predict(raw_ds.map(lambda f, _: f), verbose=0)
    np.testing.assert_allclose(predictions["click"], model(x)["click"].numpy(), rtol=1e-5,
                               atol=1e-6)
    frame = pd.DataFrame({**{k: v.numpy() for k, v in x.items()},
                          **{k: v.numpy() for k, v in y.items()}})
    for column in ("country", "user"):
        frame[column] = frame[column].str.decode("utf-8")
    logs = model.evaluate(frame, batch_size=16, verbose=0, return_dict=True)  # labels from frame
    assert np.isfinite(logs["loss"])
    history = model.fit(frame, validation_data=frame, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["val_loss"][-1]) and np.isfinite(history["loss"][-1])
    labels = {k: v.numpy() for k, v in y.items()}
    history = model.fit(frame, validation_data=(frame, labels), batch_size=16, epochs=1,
                        verbose=0).history
    assert np.isfinite(history["val_loss"][-1])
    assert model.train_on_batch(x, y, return_dict=True)["loss"] > 0


def test_raw_strings_in_a_compiled_step_are_refused_by_name():
    model = small_model()
    model.compile(optimizer="adam", jit_compile=True)
    x, y = small_batch(16)

    def batches():  # a generator: the model cannot move its lookups into it
        while True:
            yield x, y

    with pytest.raises(ValueError, match=r"\['country', 'user'\].*raw values"):
        model.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)


def test_feature_names_may_not_end_in_the_row_suffix():
    with pytest.raises(ValueError, match="may not end in '__row'"):
        km.FeatureSpec([km.Numeric("price__row")])
