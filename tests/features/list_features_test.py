"""Sequence, MultiValued and Vector features: pooling by hand, DIN attention against numpy,
padding, truncation, shared tables, XLA, configs and the `.keras` round trip."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.features import PADDING, FeatureEncoder, FeatureSpec
from keras_mtl.features.spec import feature_from_config
from tests.features.list_helpers import as_tensors, list_batch, list_model, list_spec

P = PADDING
TABLE = np.asarray([[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]], np.float32)  # row 2: out of range


def bag_encoder(pooling: str, max_length: int = 3) -> FeatureEncoder:
    """A 2-id bag whose table is set by hand: rows 0, 1 and the out-of-range row 2."""
    encoder = FeatureEncoder([km.MultiValued("tags", num_ids=2, embedding_dim=2,
                                             max_length=max_length, pooling=pooling)])
    encoder.build()
    encoder.embeddings["tags"].embeddings.assign(TABLE)
    return encoder


IDS = np.asarray([[0, 1, P], [1, 1, P], [P, P, P], [1, 7, -5]], np.int64)


@pytest.mark.parametrize("pooling, expected", [
    ("mean", [(TABLE[0] + TABLE[1]) / 2, TABLE[1], [0.0, 0.0], (TABLE[1] + 2 * TABLE[2]) / 3]),
    ("sum", [TABLE[0] + TABLE[1], 2 * TABLE[1], [0.0, 0.0], TABLE[1] + 2 * TABLE[2]]),
    ("max", [np.maximum(TABLE[0], TABLE[1]), TABLE[1], [0.0, 0.0], TABLE[2]]),
])
def test_pooling_by_hand_with_padding_out_of_range_ids_and_an_empty_row(pooling, expected):
    out = np.asarray(bag_encoder(pooling)({"tags": IDS}))
    np.testing.assert_allclose(out, np.asarray(expected, np.float32), rtol=1e-6)  # ids 7, -5 → row 2


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_padding_contributes_nothing_and_receives_no_gradient(pooling):
    encoder = bag_encoder(pooling)
    ids = IDS[:3]  # no out-of-range id: padding is the only thing that gathers row 2
    before = np.asarray(encoder({"tags": ids}))
    table = encoder.embeddings["tags"].embeddings
    table.assign(np.where(np.arange(3)[:, None] == 2, np.nan, TABLE))  # the row padding gathers
    with tf.GradientTape() as tape:
        out = encoder({"tags": ids})
        loss = tf.reduce_sum(out ** 2)
    np.testing.assert_array_equal(np.asarray(out), before)
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    dense = tf.math.unsorted_segment_sum(grad.values, grad.indices, 3).numpy()
    np.testing.assert_array_equal(dense[2], 0.0)  # exactly zero, NaN row and all
    assert np.isfinite(dense).all()


def test_rows_longer_than_max_length_keep_their_first_ids():
    encoder = bag_encoder("sum", max_length=2)
    long = np.asarray([[0, 1, 1, 1], [1, P, 0, 0]], np.int64)
    np.testing.assert_allclose(encoder({"tags": long}), [TABLE[0] + TABLE[1], TABLE[1]])
    ragged = tf.ragged.constant([[0, 1, 1], [1], []], tf.int64)  # padded (and cut) by the model
    np.testing.assert_allclose(encoder({"tags": ragged}),
                               [TABLE[0] + TABLE[1], TABLE[1], [0.0, 0.0]])


def din_numpy(layer, keys, query, present):
    """DIN eq. 3 with the activation unit of Fig. 2, re-implemented from the layer's weights."""
    weights = [w.numpy() for w in layer.weights]
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    q = np.broadcast_to(query[:, None, :], keys.shape)
    h = np.concatenate([keys, q, keys - q, keys * q], axis=-1)
    for kernel, bias in zip(weights[0:-2:2], weights[1:-2:2], strict=True):
        h = sigmoid(h @ kernel + bias)
    a = (h @ weights[-2] + weights[-1])[..., 0]
    a = np.where(present, a, 0.0)  # no softmax: the weights are not normalised
    return (a[..., None] * keys).sum(axis=1), a


def attention_spec(**kwargs) -> FeatureSpec:
    return FeatureSpec([
        km.IntegerId("item_id", num_ids=10, embedding_dim=4),
        km.Sequence("hist", max_length=4, shares_embedding_with="item_id", pooling="attention",
                    query="item_id", attention_units=(5, 3), **kwargs),
    ])


def test_din_attention_matches_numpy_and_is_not_normalised():
    encoder = FeatureEncoder(attention_spec())
    encoder.build()
    table = encoder.embeddings["item_id"].embeddings
    table.assign(np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32))
    items = np.asarray([3, 4, 5, 6], np.int64)
    hist = np.asarray([[1, 2, P, P], [3, 12, 4, 4], [P, P, P, P], [2, 2, 2, 2]], np.int64)
    out = np.asarray(encoder({"item_id": items, "hist": hist}))
    t = table.numpy()
    rows = np.where((hist >= 0) & (hist < 10), hist, 10)
    keys = np.where((hist != P)[..., None], t[rows], 0.0)
    expected, a = din_numpy(encoder.attention["hist"], keys, t[items], hist != P)
    np.testing.assert_allclose(out[:, :4], t[items], rtol=1e-6)  # the query's own embedding
    np.testing.assert_allclose(out[:, 4:], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[2, 4:], 0.0)  # empty history
    assert not np.allclose(a.sum(axis=1)[[0, 1, 3]], 1.0)  # no softmax
    # Unnormalised: the same behaviour four times weighs four times one occurrence.
    once = np.asarray(encoder({"item_id": items[3:], "hist": np.asarray([[2, P, P, P]])}))
    np.testing.assert_allclose(out[3, 4:], 4 * once[0, 4:], rtol=1e-5)


def test_attention_weights_are_shared_trunk_parameters_with_dense_gradients():
    encoder = FeatureEncoder(attention_spec())
    encoder.build()
    x = {"item_id": np.asarray([1, 2], np.int64), "hist": np.asarray([[3, 4, P, P], [5, P, P, P]])}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(x) ** 2)
    attention = encoder.attention["hist"].trainable_variables
    shared = {v.path for v in encoder.trainable_variables}
    assert len(attention) == 6 and {v.path for v in attention} <= shared
    grads = tape.gradient(loss, attention)
    assert all(isinstance(g, tf.Tensor) and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_a_shared_table_is_one_variable_and_both_features_train_it_sparsely():
    encoder = FeatureEncoder(attention_spec())
    encoder.build()
    assert len(encoder.embedding_tables) == 1
    assert encoder.embedding_tables[0] is encoder.embeddings["item_id"].embeddings
    x = {"item_id": np.asarray([1, 2], np.int64), "hist": np.asarray([[7, 8, P, P], [9, 15, P, P]])}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(x) ** 2)
    grad = tape.gradient(loss, encoder.embedding_tables[0])
    assert isinstance(grad, tf.IndexedSlices)  # never densified to vocab × dim
    touched = set(grad.indices.numpy().tolist())
    assert {1, 2, 7, 8, 9, 10} <= touched  # the candidates, the history, 15 → out-of-range row 10
    # MultiValued may share too; widths are the owner's.
    spec = FeatureSpec([km.IntegerId("item_id", num_ids=10, embedding_dim=4),
                        km.MultiValued("similar", shares_embedding_with="item_id")])
    assert spec.embedding_dim("similar") == 4 and FeatureEncoder(spec).output_dim == 8


def test_sharing_and_query_errors_are_clear():
    item = km.IntegerId("item_id", num_ids=10, embedding_dim=4)
    with pytest.raises(ValueError, match="'hist' shares the embedding table of 'item_id' .width 4. "
                                         "but has embedding_dim=8"):
        FeatureSpec([item, km.Sequence("hist", shares_embedding_with="item_id", embedding_dim=8)])
    with pytest.raises(ValueError, match="'nope', which is not a feature"):
        FeatureSpec([item, km.Sequence("hist", shares_embedding_with="nope")])
    with pytest.raises(ValueError, match="'country', a Categorical feature; only IntegerId"):
        FeatureSpec([km.Categorical("country", vocabulary=["a"]),
                     km.Sequence("hist", shares_embedding_with="country")])
    with pytest.raises(ValueError, match="cycle"):
        FeatureSpec([km.Sequence("a", shares_embedding_with="b"),
                     km.Sequence("b", shares_embedding_with="a")])
    with pytest.raises(ValueError, match="num_ids=5: a shared table has one size"):
        FeatureSpec([item, km.Sequence("hist", shares_embedding_with="item_id", num_ids=5)])
    with pytest.raises(ValueError, match="pooling='attention' needs query="):
        km.Sequence("hist", pooling="attention")
    with pytest.raises(ValueError, match="only used with pooling='attention'"):
        km.Sequence("hist", query="item_id")
    with pytest.raises(ValueError, match="pooling must be one of"):
        km.MultiValued("tags", pooling="median")
    with pytest.raises(ValueError, match="has embedding width 8 but its query 'item_id' has 4"):
        FeatureSpec([item, km.Sequence("hist", num_ids=10, pooling="attention", query="item_id")])
    with pytest.raises(ValueError, match="query 'price' is a Numeric feature"):
        FeatureSpec([km.Numeric("price"),
                     km.Sequence("hist", num_ids=3, pooling="attention", query="price")])
    with pytest.raises(ValueError, match="'tags' has no num_ids"):
        FeatureEncoder([km.MultiValued("tags")])
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        km.Vector("v", dim=0)


def test_input_errors_name_the_feature():
    encoder = FeatureEncoder(list_spec())
    x = as_tensors(list_batch(4)[0])
    with pytest.raises(ValueError, match=r"Vector feature 'user_vec' must have shape \[batch, 4\]"):
        encoder(dict(x, user_vec=tf.zeros([4, 3])))
    with pytest.raises(ValueError, match=r"Sequence feature 'hist_item_ids' must have shape "
                                         r"\[batch, length\]"):
        encoder(dict(x, hist_item_ids=tf.zeros([4], tf.int64)))
    with pytest.raises(TypeError, match="'tags' expects integer ids, got float32"):
        encoder(dict(x, tags=tf.zeros([4, 4])))


def test_vectors_pass_through_with_non_finite_values_zeroed():
    encoder = FeatureEncoder([km.Vector("v", dim=3), km.Vector("w", dim=1)])
    v = np.asarray([[1.0, np.nan, -2.0], [np.inf, 5.0, -np.inf]], np.float32)
    out = np.asarray(encoder({"v": v, "w": np.asarray([7.0, 8.0], np.float32)}))  # [batch] for dim 1
    np.testing.assert_array_equal(out, [[1.0, 0.0, -2.0, 7.0], [0.0, 5.0, 0.0, 8.0]])
    assert encoder.output_dim == 4


def test_output_layout_and_example_inputs():
    spec = list_spec()
    encoder = FeatureEncoder(spec)
    # item 6 + pooled history 6 + tags 3 + vector 4 + country 2 + price 1
    assert encoder.output_dim == 22
    inputs = spec.example_inputs(3)
    assert inputs["hist_item_ids"].shape == (3, 5) and inputs["hist_item_ids"].dtype == tf.int64
    assert (inputs["hist_item_ids"].numpy() == PADDING).all()
    assert inputs["tags"].shape == (3, 4)
    assert inputs["user_vec"].shape == (3, 4) and inputs["user_vec"].dtype == tf.float32
    assert inputs["country"].dtype == tf.string and inputs["country"].numpy().tolist() == [b""] * 3
    assert inputs["item_id"].shape == (3,) and inputs["price"].dtype == tf.float32
    out = encoder(inputs)
    assert out.shape == (3, 22) and np.isfinite(out.numpy()).all()
    np.testing.assert_array_equal(out.numpy()[:, 6:12], 0.0)  # empty history pools to zeros


def test_id_lists_vectors_and_looked_up_strings_compile_under_xla():
    encoder = FeatureEncoder(list_spec())
    x = as_tensors(list_batch(8)[0])
    eager = encoder(x)  # raw strings, looked up in the encoder
    rows = encoder.lookup_stage(x)  # what the input pipeline hands a compiled step
    compiled = tf.function(lambda inputs: encoder(inputs), jit_compile=True)(rows)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_configs_round_trip_for_every_new_kind():
    spec = list_spec()
    config = spec.get_config()
    assert FeatureSpec.from_config(config) == spec
    kinds = {c["name"]: c["kind"] for c in config["features"]}
    assert kinds["hist_item_ids"] == "sequence" and kinds["tags"] == "multi_valued"
    assert kinds["user_vec"] == "vector"
    for feature in spec:
        assert feature_from_config(feature.get_config()) == feature
    restored = FeatureEncoder.from_config(FeatureEncoder(spec).get_config())
    assert restored.spec == spec


def test_multi_task_model_keras_round_trip(tmp_path):
    spec = list_spec()
    model = km.MultiTaskModel(features=spec, tasks=[km.Task("click"), km.Task("like")],
                              backbone=km.layers.MMoE(num_experts=2, expert_units=[8]))
    model.compile(optimizer="adam")
    x, y = list_batch(32)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    tables = model.encoder.embedding_tables
    assert len(tables) == 3  # item_id (shared with the history), tags, country
    assert [v.path for v in model.partition.tables] == [v.path for v in tables]
    path = str(tmp_path / "ranker.keras")
    model.save(path)
    restored = km.load_model(path)
    assert restored.spec == spec
    inputs = as_tensors(x)
    expected, got = model.predict(inputs, verbose=0), restored.predict(inputs, verbose=0)
    for task in ("click", "like"):
        np.testing.assert_array_equal(got[task], expected[task])


def test_mixed_precision_pools_in_the_compute_dtype():
    encoder = FeatureEncoder(list_spec(), dtype="mixed_float16")
    out = encoder(as_tensors(list_batch(4)[0]))
    assert out.dtype == tf.float16 and np.isfinite(out.numpy()).all()


def test_a_model_with_lists_trains_from_a_dataset():
    model = list_model()
    model.compile(optimizer="adam")
    x, y = list_batch(32, seed=3)
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # The activation unit is trunk-side: shared by the tasks, balanced with the trunk.
    attention = {v.path for v in model.encoder.attention["hist_item_ids"].trainable_variables}
    assert attention <= {v.path for v in model.shared_variables}
    assert not attention & {v.path for v in model.head_variables}


def test_a_train_step_with_lists_vectors_and_strings_compiles_under_xla():
    model = list_model()
    model.compile(optimizer="adam", jit_compile=True)
    assert model.jit_compile is True  # the string feature's lookup table did not force it off
    x, y = list_batch(32, seed=5)
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
