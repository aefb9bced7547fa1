"""`DotInteraction` (DLRM, from keras-rs) as a bottom: the paper's products, the spec's layout,
misuse errors, the `.keras` round trip and a model trained through it."""

import keras
import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import run_layer_saving_test


def spec(width: int = 3) -> km.FeatureSpec:
    return km.FeatureSpec([
        km.Numeric("price"),
        km.IntegerId("item_id", num_ids=10, embedding_dim=width),
        km.Vector("user_vec", dim=2),
        km.Categorical("country", vocabulary=["de", "fr"], embedding_dim=width),
        km.Sequence("hist", max_length=4, shares_embedding_with="item_id", pooling="mean"),
    ])


def test_output_is_the_dense_vector_and_dlrm_pairwise_products():
    layer = km.layers.DotInteraction(spec(), dense_units=[5])
    x = np.random.default_rng(0).normal(size=(4, 1 + 3 + 2 + 3 + 3)).astype(np.float32)
    out = np.asarray(layer(x), np.float64)
    # The encoder's layout: price | item_id (3) | user_vec (2) | country (3) | hist (3).
    dense_in = np.concatenate([x[:, 0:1], x[:, 4:6]], axis=1).astype(np.float64)
    h = dense_in
    for dense in layer.bottom_mlp.dense_layers:
        kernel, bias = (np.asarray(v, np.float64) for v in dense.weights)
        h = np.maximum(h @ kernel + bias, 0.0)  # DLRM's bottom MLP, ReLU throughout
    vectors = [h, x[:, 1:4], x[:, 6:9], x[:, 9:12]]
    pairs = [np.sum(vectors[i] * vectors[j], axis=1) for i in range(4) for j in range(i)]
    np.testing.assert_allclose(out, np.concatenate([h, np.stack(pairs, 1)], 1), rtol=1e-5,
                               atol=1e-6)
    assert layer.compute_output_shape((None, 12)) == (None, 3 + 6)


def test_self_interaction_and_no_dense_inputs():
    only_embedded = km.FeatureSpec([km.IntegerId("a", 5, embedding_dim=2),
                                    km.IntegerId("b", 5, embedding_dim=2)])
    layer = km.layers.DotInteraction(only_embedded, self_interaction=True)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    a, b = x[:, :2], x[:, 2:]
    expected = np.stack([(a * a).sum(1), (b * a).sum(1), (b * b).sum(1)], 1)
    np.testing.assert_allclose(np.asarray(layer(x)), expected)
    assert layer.bottom_mlp is None


def test_misuse_is_refused_naming_what_is_wrong():
    widths = km.FeatureSpec([km.IntegerId("a", 5, embedding_dim=2),
                             km.IntegerId("b", 5, embedding_dim=3)])
    with pytest.raises(ValueError, match=r"one width.*'a': 2, 'b': 3"):
        km.layers.DotInteraction(widths)
    with pytest.raises(ValueError, match="at least two vectors"):
        km.layers.DotInteraction(km.FeatureSpec([km.IntegerId("a", 5)]))
    with pytest.raises(ValueError, match="12 encoded columns.*has 7"):
        km.layers.DotInteraction(spec()).build((None, 7))


def test_round_trips_through_keras_file(tmp_path):
    run_layer_saving_test(km.layers.DotInteraction(spec(), dense_units=[4]), (12,), tmp_path)


@pytest.mark.parametrize("balancer", ["ew", "multibalance", "upgrad"])
def test_a_dlrm_bottom_under_mmoe_trains_at_every_level(balancer):
    features = spec(4)
    model = km.MultiTaskModel(
        features, [km.Task("click"), km.Task("like")], tower_units=[4], balancer=balancer,
        backbone=km.layers.MMoE(2, [6], bottom=km.layers.DotInteraction(features, [4])))
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    rng = np.random.default_rng(1)
    n = 64
    hist = rng.integers(0, 10, (n, 4))
    hist[rng.random((n, 4)) < 0.3] = km.features.PADDING
    x = {"price": rng.normal(size=n).astype(np.float32), "item_id": rng.integers(0, 10, n),
         "user_vec": rng.normal(size=(n, 2)).astype(np.float32),
         "country": rng.choice(np.array(["de", "fr", "it"], dtype=object), n), "hist": hist}
    y = {"click": rng.integers(0, 2, n).astype(np.float32),
         "like": rng.integers(0, 2, n).astype(np.float32)}
    bottom = model.backbone.bottom_stage
    before = [v.numpy().copy() for v in bottom.trainable_variables]
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [0.0]
    assert all(not np.allclose(b, v.numpy())
               for b, v in zip(before, bottom.trainable_variables, strict=True))
    assert {v.path for v in bottom.trainable_variables} <= {v.path for v in model.partition.balanced}
