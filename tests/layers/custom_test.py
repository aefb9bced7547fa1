"""Your own trunk: `CustomBackbone` (any Keras layer, optional per-task heads), `bottom=` before
our experts, and `CrossNetwork` (DCN-v2 from keras-rs) against the paper's equation."""

import keras
import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import run_layer_saving_test, small_batch, small_spec, small_tasks

X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


def dense_trunk():
    return keras.Sequential([keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4)])


def heads(n=2):
    return [keras.layers.Dense(3, activation="relu", name=f"head_{k}") for k in range(n)]


def test_cross_network_follows_dcn_v2_equation_1():
    layer = km.layers.CrossNetwork(num_layers=2)
    out = np.asarray(layer(X))
    x0, x = X.astype(np.float64), X.astype(np.float64)
    for cross in layer.crosses:  # full rank: one Dense W_l, b_l per layer
        kernel, bias = (np.asarray(v, np.float64) for v in cross.weights)
        x = x0 * (x @ kernel + bias) + x  # x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-6)


def test_cross_network_with_a_deep_part_and_its_shapes():
    layer = km.layers.CrossNetwork(num_layers=1, projection_dim=2, deep_units=[7])
    assert tuple(layer(X).shape) == (5, 7)
    assert layer.compute_output_shape((None, 6)) == (None, 7)
    with pytest.raises(ValueError, match="num_layers"):
        km.layers.CrossNetwork(num_layers=0)


def test_custom_trunk_outputs_are_the_cut_and_heads_are_each_tasks_own():
    layer = km.layers.CustomBackbone(dense_trunk(), heads=heads())
    assert layer.num_tasks == 2
    outputs = layer(X)
    cut = layer.trunk(X)
    assert len(cut) == 1 and tuple(cut[0].shape) == (5, 4)
    for ours, direct in zip(layer.heads(cut)[0], outputs, strict=True):
        np.testing.assert_allclose(ours, direct, rtol=1e-6)
    ids = [{id(v) for lyr in task for v in lyr.weights} for task in layer.head_layers()]
    assert ids[0] and not ids[0] & ids[1]


def test_a_trunk_with_several_outputs_is_a_cut_of_several_tensors():
    inputs = keras.Input((6,))
    trunk = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(2)(inputs)])
    layer = km.layers.CustomBackbone(trunk, num_tasks=2)
    layer(X)
    cut = layer.trunk(X)
    assert [tuple(c.shape) for c in cut] == [(5, 3), (5, 2)]
    shared, _ = layer.heads(cut)
    np.testing.assert_allclose(shared[0], np.concatenate([c.numpy() for c in cut], -1))


def test_custom_backbone_misuse_is_refused_clearly():
    with pytest.raises(TypeError, match="trunk must be a Keras layer"):
        km.layers.CustomBackbone("mlp")
    head = keras.layers.Dense(2)
    with pytest.raises(ValueError, match="distinct"):
        km.layers.CustomBackbone(dense_trunk(), heads=[head, head])
    with pytest.raises(ValueError, match="2 heads for num_tasks=3"):
        km.layers.CustomBackbone(dense_trunk(), heads=heads(), num_tasks=3)
    with pytest.raises(ValueError, match=r"\[batch, units\]"):
        km.layers.MMoE(2, [4], num_tasks=2, bottom=keras.layers.Reshape((3, 2))).build((None, 6))


@pytest.mark.parametrize("make", [
    lambda: km.layers.CustomBackbone(dense_trunk(), heads=heads()),
    lambda: km.layers.CustomBackbone(dense_trunk(), num_tasks=2),
    lambda: km.layers.MMoE(2, [4], num_tasks=2, bottom=km.layers.CrossNetwork(2)),
    lambda: km.layers.PLE(2, 2, 1, [4], num_tasks=2,
                          bottom=keras.Sequential([keras.layers.Dense(5)])),
    lambda: km.layers.SharedBottom([4], num_tasks=2, bottom=km.layers.CrossNetwork(1)),
])
def test_own_trunks_and_bottoms_round_trip_through_keras_file(make, tmp_path):
    run_layer_saving_test(make(), (6,), tmp_path)


def test_a_plain_keras_layer_is_the_trunk_of_a_model():
    model = km.MultiTaskModel(small_spec(), small_tasks(), backbone=dense_trunk(), tower_units=[4])
    assert isinstance(model.backbone, km.layers.CustomBackbone)
    trunk_ids = {id(v) for v in model.backbone.trunk_layer.trainable_variables}
    assert trunk_ids <= {id(v) for v in model.partition.balanced}


@pytest.mark.parametrize("balancer", ["ew", "uw", "multibalance", "mgda", "upgrad"])
def test_every_level_trains_a_custom_trunk_with_heads_and_a_cross_bottom(balancer, tmp_path):
    trunk = keras.Sequential([km.layers.CrossNetwork(1), keras.layers.Dense(6, activation="relu")])
    model = km.MultiTaskModel(small_spec(), small_tasks(),
                              backbone=km.layers.CustomBackbone(trunk, heads=heads()),
                              tower_units=[4], balancer=balancer)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = small_batch(64)
    before = [v.numpy().copy() for v in trunk.trainable_variables]
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [0.0]
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, trunk.trainable_variables,
                                                             strict=True))
    path = str(tmp_path / "own.keras")
    model.save(path)
    restored = km.load_model(path)
    for key, value in model.predict(x, verbose=0).items():
        np.testing.assert_allclose(restored.predict(x, verbose=0)[key], value, atol=1e-6)
