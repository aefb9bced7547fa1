"""Balancer parameters learned by gradient descent (uncertainty weights, GradNorm, FAMO, ...).

They are trained by the balancer, not by the model's optimizer: the balancer knows their gradient
in closed form, returns the Adam update as state `updates` (so a non-finite step changes
nothing), and keeps parameters and moments in non-trainable Keras variables that save with the
model. Adam as in PyTorch (`torch.optim.Adam`, whose L2 `weight_decay` FAMO's official code uses).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class AdamParameter:
    """A learned `[shape]` parameter of `layer` and its Adam moments."""

    def __init__(self, layer: keras.layers.Layer, name: str, shape, initial: float,
                 learning_rate: float, weight_decay: float = 0.0, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8):
        self.value = layer.add_weight(shape=shape, initializer=keras.initializers.Constant(initial),
                                      trainable=False, name=name)
        self.first = layer.add_weight(shape=shape, initializer="zeros", trainable=False,
                                      name=f"{name}_adam_m")
        self.second = layer.add_weight(shape=shape, initializer="zeros", trainable=False,
                                       name=f"{name}_adam_v")
        self.count = layer.add_weight(shape=(), initializer="zeros", trainable=False,
                                      name=f"{name}_adam_t")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def step(self, gradient: tf.Tensor) -> tuple[tf.Tensor, tuple]:
        """`(new value, updates)` after one Adam step on `gradient` (minimisation)."""
        gradient = tf.cast(gradient, tf.float32) + self.weight_decay * self.value
        count = self.count + 1.0
        first = self.beta_1 * self.first + (1.0 - self.beta_1) * gradient
        second = self.beta_2 * self.second + (1.0 - self.beta_2) * tf.square(gradient)
        corrected_first = first / (1.0 - self.beta_1 ** count)
        corrected_second = second / (1.0 - self.beta_2 ** count)
        value = self.value - self.learning_rate * corrected_first / (
            tf.sqrt(corrected_second) + self.epsilon)
        return value, ((self.first, first), (self.second, second), (self.count, count))
