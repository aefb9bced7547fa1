"""Dynamic Weight Average (Liu et al., CVPR 2019)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("dwa")
class DWA(Weighting):
    """Weights from the rate at which each task's epoch loss falls.

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019, eq. 7:

        r_k(t−1) = L̄_k(t−1) / L̄_k(t−2),      w_k(t) = K exp(r_k(t−1)/T) / Σ_j exp(r_j(t−1)/T)

    with `L̄_k(t)` task k's mean training loss over epoch t, and `w = 1` for the first two epochs.
    A task whose loss falls slowly gets more weight. The epoch means accumulate in state
    variables over the steps of each epoch (the model's epoch counter marks the boundaries), so
    they survive a save and restore mid-training. Default T = 2 (the paper's).
    """

    def __init__(self, temperature: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = self.check_range("temperature", temperature, 0.0)
        if self.temperature == 0:
            raise ValueError("dwa temperature must be > 0.")

    def build_state(self, num_tasks):
        def state(name, shape=(num_tasks,)):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)

        self.running_sum, self.last, self.before_last = state("running_sum"), state("last"), \
            state("before_last")
        self.running_count = state("running_count", ())
        self.completed_epochs = state("completed_epochs", ())
        self.current_epoch = state("current_epoch", ())

    def task_weights(self, losses, context, matrix=None):
        losses = tf.stop_gradient(losses)
        epoch = tf.cast(context.epoch, tf.float32)
        # A new epoch closes the previous one, if it saw any step.
        closes = (epoch > self.current_epoch) & (self.running_count > 0)
        mean = self.running_sum / tf.maximum(self.running_count, 1.0)
        last = tf.where(closes, mean, self.last)
        before_last = tf.where(closes, self.last, self.before_last)
        completed = self.completed_epochs + tf.cast(closes, tf.float32)
        ratio = tf.math.divide_no_nan(last, before_last)
        weights = self.num_tasks * tf.nn.softmax(ratio / self.temperature)
        weights = tf.where(completed >= 2.0, weights, tf.ones_like(weights))
        fresh = epoch > self.current_epoch
        running_sum = tf.where(fresh, losses, self.running_sum + losses)
        running_count = tf.where(fresh, 1.0, self.running_count + 1.0)
        return weights, ((self.running_sum, running_sum), (self.running_count, running_count),
                         (self.last, last), (self.before_last, before_last),
                         (self.completed_epochs, completed),
                         (self.current_epoch, tf.maximum(epoch, self.current_epoch)))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
