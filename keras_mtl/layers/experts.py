"""A vectorised bank of MLP experts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class ExpertBank(keras.layers.Layer):
    """`num_experts` independent MLPs evaluated as one einsum per layer.

    The kernels of all experts are stacked into `[num_experts, d_in, d_out]`, so the first layer is
    `einsum("bi,eio->beo")` over the shared input and deeper layers `einsum("bei,eio->beo")`. This is
    mathematically identical to a Python loop of `Dense` layers (a test checks it) but issues one
    kernel per layer instead of one per expert.

    Each expert's kernel is Glorot-uniform initialised with its own fan-in/fan-out (a stacked 3-D
    kernel would otherwise get Keras' receptive-field fans and be `num_experts` times too small).

    Input: `[batch, d_in]`. Output: `[batch, num_experts, units[-1]]`.
    """

    def __init__(
        self,
        num_experts: int,
        units: Sequence[int],
        activation: str = "relu",
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}.")
        if not units:
            raise ValueError("units must name at least one layer width.")
        self.num_experts = int(num_experts)
        self.units = [int(u) for u in units]
        self.activation = keras.activations.get(activation)
        self._activation_name = activation
        self.use_bias = use_bias

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for i, d_out in enumerate(self.units):
            limit = math.sqrt(6.0 / (d_in + d_out))
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{i}",
                    shape=(self.num_experts, d_in, d_out),
                    initializer=keras.initializers.RandomUniform(-limit, limit),
                )
            )
            if self.use_bias:
                self.biases.append(
                    self.add_weight(
                        name=f"bias_{i}", shape=(self.num_experts, d_out), initializer="zeros"
                    )
                )
            d_in = d_out

    def call(self, inputs):
        hidden = ops.einsum("bi,eio->beo", inputs, self.kernels[0])
        for i, kernel in enumerate(self.kernels):
            if i > 0:
                hidden = ops.einsum("bei,eio->beo", hidden, kernel)
            if self.use_bias:
                hidden = hidden + self.biases[i]
            hidden = self.activation(hidden)
        return hidden

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_experts=self.num_experts,
            units=self.units,
            activation=self._activation_name,
            use_bias=self.use_bias,
        )
        return config
