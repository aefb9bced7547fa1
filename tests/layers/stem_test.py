"""STEM: task-specific embeddings trained by their task only, gates that see every expert."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import small_batch, small_model


def stem_model():
    return small_model("stem")


def test_each_task_has_its_own_embedding_tables_and_reads_every_expert():
    model = stem_model()
    assert [e.name for e in model.task_encoders] == ["click_features", "watch_time_features"]
    x, _ = small_batch(6)
    gates = model.gate_weights(x)
    # 2 shared experts + 1 per task: every task's gate mixes all 4.
    assert gates["click"].shape == (6, 4) and gates["watch_time"].shape == (6, 4)
    np.testing.assert_allclose(np.asarray(gates["click"]).sum(1), 1.0, rtol=1e-5)
    tables = {id(t) for t in model.partition.tables}
    for encoder in model.encoders:
        assert all(id(t) in tables for t in encoder.embedding_tables)


def test_all_forward_task_specific_backward():
    """Task k's loss reaches its own embeddings and experts and the shared ones, never another
    task's, though its gate mixes the other tasks' experts in the forward pass."""
    model = stem_model()
    x, y = small_batch(16)
    with tf.GradientTape(persistent=True) as tape:
        losses = model.task_losses(x, y, training=True).shares
    click, watch = model.task_encoders
    own_experts = model.backbone.task_experts
    for k, (loss, mine, other) in enumerate([(losses[0], click, watch), (losses[1], watch, click)]):
        def norm(variables, loss=loss):
            grads = tape.gradient(loss, variables)
            return sum(float(tf.norm(tf.convert_to_tensor(g))) for g in grads if g is not None)
        assert norm(mine.trainable_variables) > 0
        assert norm(other.trainable_variables) == 0.0
        assert norm(own_experts[k].trainable_variables) > 0
        assert norm(own_experts[1 - k].trainable_variables) == 0.0
        assert norm(model.encoder.trainable_variables) > 0
        assert norm(model.backbone.shared_experts.trainable_variables) > 0
    # …and the other task's experts do change task k's output (all forward):
    before = model.predict(x, verbose=0)["click"]
    for v in own_experts[1].trainable_variables:
        v.assign(v + 0.5)
    assert np.abs(model.predict(x, verbose=0)["click"] - before).max() > 1e-6


def test_round_trip(tmp_path):
    model = stem_model()
    x, _ = small_batch(5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for name, value in loaded.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, model.predict(x, verbose=0)[name], rtol=1e-5, atol=1e-6)


def test_outside_a_model_the_input_width_is_checked():
    with pytest.raises(ValueError, match=r"not K \+ 1 = 3 encodings"):
        km.layers.STEM(num_tasks=2).build((None, 7))
