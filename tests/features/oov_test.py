"""The out-of-vocabulary row is trained by default, so an unseen value scores like seen ones."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.features import FeatureEncoder


def test_adapt_sends_rare_values_to_the_oov_row_by_default():
    column = ["a"] * 5 + ["b"] * 3 + ["c", "d"]  # c and d are seen once
    frame = pd.DataFrame({"cat": column, "code": [7] * 5 + [8] * 3 + [9, 10]})
    spec = km.FeatureSpec([km.Categorical("cat"), km.Categorical("code")]).adapt(frame)
    assert spec["cat"].vocabulary == ("a", "b") and spec["cat"].min_count == 2
    assert spec["code"].vocabulary == (7, 8) and spec["code"].dtype == "int64"
    # So the training rows of c and d reach the OOV row (index 0 of the lookup).
    lookup = FeatureEncoder(spec).lookups["cat"]
    assert int(np.sum(np.asarray(lookup(tf.constant(column))) == 0)) == 2
    # An explicit min_count wins, and a feature can carry its own.
    assert spec["cat"].vocabulary != km.FeatureSpec([km.Categorical("cat")]).adapt(
        frame, min_count=1)["cat"].vocabulary
    assert km.FeatureSpec([km.Categorical("cat", min_count=4)]).adapt(frame)["cat"].vocabulary == ("a",)
    # Old configs (without min_count) still load.
    config = spec.get_config()
    for feature in config["features"]:
        feature.pop("min_count")
    assert km.FeatureSpec.from_config(config)["cat"].vocabulary == ("a", "b")


def test_a_column_of_only_rare_values_keeps_them_and_warns():
    frame = pd.DataFrame({"query": ["q1", "q2", "q3"]})
    with pytest.warns(UserWarning, match="'query'.*min_count=2.*keeping all 3 values"):
        spec = km.FeatureSpec([km.Categorical("query")]).adapt(frame)
    assert spec["query"].vocabulary == ("q1", "q2", "q3")


def test_unseen_value_scores_within_the_seen_values_after_training():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    frequent = [f"c{k}" for k in range(8)]
    rates = dict(zip(frequent, np.linspace(0.8, 0.95, 8), strict=True))
    values = list(rng.choice(frequent, 1600)) + [f"rare{i}" for i in range(160)]  # a long tail
    click = rng.random(len(values)) < np.array([rates.get(v, 0.875) for v in values])
    frame = pd.DataFrame({"cat": values, "x": rng.normal(size=len(values)),
                          "click": click.astype(np.float32)})
    spec = km.FeatureSpec([km.Categorical("cat", embedding_dim=4), km.Numeric("x")]).adapt(frame)
    assert set(spec["cat"].vocabulary) == set(frequent)
    tasks = [km.Task("click")]
    model = km.MultiTaskModel(features=spec, tasks=tasks, backbone=km.layers.SharedBottom(units=[8]),
                              tower_units=[4])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    table = model.encoder.embeddings["cat"].embeddings
    oov_before = np.array(table.numpy()[0])
    model.fit(km.data.from_dataframe(frame, spec, tasks, batch_size=128, shuffle=True, seed=0),
              epochs=4, verbose=0)
    assert np.abs(table.numpy()[0] - oov_before).max() > 1e-3, "the OOV row was never trained"
    scores = model({"cat": tf.constant(frequent + ["never-seen"]), "x": tf.zeros(9)})["click"].numpy()
    seen, unseen = scores[:-1], scores[-1]
    assert seen.min() <= unseen <= seen.max(), (seen, unseen)
