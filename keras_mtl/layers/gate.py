"""Softmax gating network over a set of experts."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class Gate(keras.layers.Layer):
    """`g(x) = softmax(W x)` (MMoE eq. 7, PLE eq. 4) and the gated mixture `Σ_i g(x)_i f_i(x)`.

    `call(selector, experts)` takes the selector input `[batch, d]` and stacked expert outputs
    `[batch, num_experts, units]`; it returns `(mixture [batch, units], weights [batch, num_experts])`.
    """

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.dense = keras.layers.Dense(self.num_experts, name="logits")

    def build(self, selector_shape, experts_shape=None):
        self.dense.build(selector_shape)

    def call(self, selector, experts):
        weights = ops.softmax(self.dense(selector), axis=-1)
        return ops.einsum("be,bed->bd", weights, experts), weights

    def get_config(self):
        config = super().get_config()
        config["num_experts"] = self.num_experts
        return config
