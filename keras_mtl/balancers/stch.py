"""Smooth Tchebycheff scalarisation (Lin et al., ICML 2024)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("stch")
class STCH(Weighting):
    """Smooth Tchebycheff scalarisation of the log-normalised losses.

    Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024,
    eq. 9 for multi-task learning as in the official STCH_MTL code and LibMTL:

        epochs < warmup:   L = Σ_k log L_k                         (w_k = 1 / L_k)
        epoch = warmup:    same, and the nadir point `n_k` = mean loss over that epoch is recorded
        afterwards:        L = K μ log Σ_k exp(log(L_k / n_k) / μ)
                           w_k = K softmax(log(L_k / n_k) / μ)_k / L_k

    Defaults μ = 1, warmup = 4 epochs (LibMTL's). Losses are floored at 1e-20 as in the code.
    The nadir is accumulated in state variables, so it survives a save and restore.
    """

    def __init__(self, mu: float = 1.0, warmup_epochs: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.mu = self.check_range("mu", mu, 0.0)
        if self.mu == 0:
            raise ValueError("stch mu must be > 0.")
        self.warmup_epochs = int(self.check_range("warmup_epochs", warmup_epochs, 0.0))

    def build_state(self, num_tasks):
        self.nadir_sum = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                         trainable=False, name="nadir_sum")
        self.nadir_count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="nadir_count")

    def task_weights(self, losses, context, matrix=None):
        losses = tf.maximum(tf.stop_gradient(losses), 1e-20)
        epoch = tf.cast(context.epoch, tf.float32)
        warmup = float(self.warmup_epochs)
        recording = tf.equal(epoch, warmup)
        nadir = self.nadir_sum / tf.maximum(self.nadir_count, 1.0)
        normalised = tf.math.log(losses / tf.where(nadir > 0, nadir, 1.0)) / self.mu
        smooth = self.num_tasks * tf.nn.softmax(normalised) / losses
        weights = tf.where((epoch > warmup) & (self.nadir_count > 0), smooth, 1.0 / losses)
        return weights, (
            (self.nadir_sum, tf.where(recording, self.nadir_sum + losses, self.nadir_sum)),
            (self.nadir_count, self.nadir_count + tf.cast(recording, tf.float32)))

    def get_config(self):
        return {**super().get_config(), "mu": self.mu, "warmup_epochs": self.warmup_epochs}
