"""The balancer contract, exercised by a stateful test double: state is saved with the model,
restored on load, and only updated on finite steps."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.balancers import Weighting, register
from tests.helpers import BACKBONES, xla_data, xla_spec


@register("_test_inverse_loss_ema")
class InverseLossEMA(Weighting):
    """w_k = 1 / EMA_k(L_k) with EMA_k ← β EMA_k + (1 - β) L_k (state: one variable)."""

    def __init__(self, beta: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def build_state(self, num_tasks):
        self.ema = self.add_weight(shape=(num_tasks,), initializer="ones", trainable=False,
                                   name="ema")

    def task_weights(self, losses, context, matrix=None):
        new_ema = self.beta * self.ema + (1 - self.beta) * tf.stop_gradient(losses)
        return 1.0 / new_ema, ((self.ema, new_ema),)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


def model():
    return km.MultiTaskModel(
        features=xla_spec(), tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[4],
    )


def test_state_updates_once_per_step_and_round_trips(tmp_path):
    x, y = xla_data(64)
    m = model()
    m.compile(optimizer="adam", balancer=InverseLossEMA(beta=0.5))
    m.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    losses = m.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    ema = np.asarray(m.balancer.ema)
    assert not np.allclose(ema, 1.0)
    path = os.path.join(tmp_path, "m.keras")
    m.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(restored.balancer.ema), ema)
    assert restored.balancer.beta == 0.5
    del losses


def test_a_skipped_step_leaves_balancer_state_alone():
    x, y = xla_data(64)
    m = model()
    m.compile(optimizer="adam", balancer=InverseLossEMA())
    m.fit(x, y, batch_size=64, epochs=1, verbose=0)
    ema = np.asarray(m.balancer.ema)
    bad = dict(y, watch_time=np.full_like(y["watch_time"], np.nan))
    bad["watch_time"][0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite loss"):  # the epoch's only step
        m.fit(x, bad, batch_size=64, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.asarray(m.balancer.ema), ema)


def test_first_step_weights_follow_the_closed_form():
    x, y = xla_data(64)
    m = model()
    m.set_balancer(InverseLossEMA(beta=0.5))
    _, _, terms, result, *_ = m.compute_gradients(x, y)
    expected = 1.0 / (0.5 * 1.0 + 0.5 * np.asarray(terms))
    np.testing.assert_allclose(result.task_weights, expected, rtol=1e-6)
