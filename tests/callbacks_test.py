"""TensorBoard works from a plain install; BalanceMonitor logs weights, norms and cosines."""

import glob
import os

import keras
import matplotlib
import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import small_batch, small_model

matplotlib.use("Agg")


def _event_tags(path: str) -> set:
    import tensorflow as tf

    tags = set()
    for event_file in glob.glob(os.path.join(path, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags |= {value.tag for value in event.summary.value}
    return tags


def test_keras_tensorboard_and_balance_monitor_log_during_fit(tmp_path):
    x, y = small_batch(64)
    model = small_model(balancer="mgda")
    model.compile(optimizer="adam")
    log_dir = str(tmp_path / "logs")
    monitor = km.callbacks.BalanceMonitor((x, y), every=2, log_dir=log_dir)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(log_dir=log_dir), monitor])
    assert "epoch_click_auc" in _event_tags(os.path.join(log_dir, "train"))
    tags = _event_tags(os.path.join(log_dir, "balance"))
    assert {"weight/click", "weight_share/watch_time", "grad_norm/click",
            "cosine/click~watch_time"} <= tags

    history = monitor.history
    assert list(history.index) == [0, 2, 4, 6, 8]  # before training, then every 2 of 8 steps
    shares = history[["weight_share/click", "weight_share/watch_time"]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0, rtol=1e-6)
    assert (history["weight/click"] >= 0).all()  # MGDA: a convex combination
    np.testing.assert_allclose(history[["weight/click", "weight/watch_time"]].sum(1), 1.0,
                               rtol=1e-4)
    assert (history["grad_norm/click"] > 0).all()
    assert history["cosine/click~watch_time"].between(-1, 1).all()

    # The monitor's cosines are the diagnostics' at the same level, on the same probe.
    cosines = km.diagnostics.gradient_cosines(model, x, y, level="representation")
    np.testing.assert_allclose(monitor.measure()["cosine/click~watch_time"], cosines[0, 1],
                               rtol=1e-5, atol=1e-7)
    figure = monitor.plot()
    assert [len(ax.lines) for ax in figure.axes][:2] == [2, 2]


def test_balance_monitor_history_only_and_a_dataset_probe():
    import tensorflow as tf

    x, y = small_batch(32)
    model = small_model()
    model.compile(optimizer="sgd")
    probe = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    monitor = km.callbacks.BalanceMonitor(probe, every=1, level="parameters")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert len(monitor.history) == 3
    np.testing.assert_allclose(monitor.history["weight/click"], 1.0)  # ew
    with pytest.raises(ValueError, match="every"):
        km.callbacks.BalanceMonitor((x, y), every=0)
