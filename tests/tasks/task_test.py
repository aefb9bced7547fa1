import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import Task


def test_present_mask_handles_nan_and_sentinel():
    task = Task("click", missing_value=-1.0)
    mask = task.present_mask(tf.constant([1.0, np.nan, -1.0, 0.0]))
    np.testing.assert_array_equal(mask, [True, False, False, True])


def test_default_losses_match_keras_definitions():
    labels = tf.constant([1.0, 0.0, 1.0])
    logits = tf.constant([2.0, -1.0, -3.0])
    bce = Task("click").per_example_loss(labels, logits)
    expected = keras.losses.binary_crossentropy(labels[:, None], tf.sigmoid(logits)[:, None])
    np.testing.assert_allclose(bce, expected, rtol=1e-4)
    mse = Task("t", kind="regression").per_example_loss(labels, logits)
    np.testing.assert_allclose(mse, (logits - labels) ** 2)
    huber = Task("t", kind="regression", loss=keras.losses.Huber(delta=1.0))
    np.testing.assert_allclose(huber.per_example_loss(labels, logits), [0.5, 0.5, 3.5])


def test_bad_definitions_fail_with_the_task_name():
    with pytest.raises(ValueError, match="Task 'x': kind must be one of"):
        Task("x", kind="ranking")
    with pytest.raises(ValueError, match="Task 'x': weight"):
        Task("x", weight=-1)
    with pytest.raises(ValueError, match="Task 'x': unknown loss 'msee'"):
        Task("x", loss="msee")


def test_config_round_trip():
    task = Task("t", kind="regression", loss=keras.losses.Huber(delta=2.0), metrics=["rmse", "mae"],
                weight=0.5, missing_value=-1.0)
    clone = Task.from_config(task.get_config())
    assert clone.get_config() == task.get_config()
    assert [m.name for m in clone.build_metrics()] == ["t_rmse", "t_mae"]
