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

    def detached_mixture(self, selector, experts, detached):
        """The mixture over `experts` (may be None) followed by `detached` experts, with the
        `detached` ones read through a stop-gradient: `(mixture, weights, detached weights,
        detached term)`, where `detached term = Σ_e w_e detached_e` is the only path from
        `detached` to the mixture (for `Backbone.factored_heads`)."""
        weights = ops.softmax(self.dense(selector), axis=-1)
        own = 0 if experts is None else int(experts.shape[1])
        detached_weights = weights[:, own:]
        term = ops.einsum("be,bed->bd", detached_weights, ops.stop_gradient(detached))
        mixture = term if experts is None else (
            ops.einsum("be,bed->bd", weights[:, :own], experts) + term)
        return mixture, weights, detached_weights, term

    def get_config(self):
        config = super().get_config()
        config["num_experts"] = self.num_experts
        return config
