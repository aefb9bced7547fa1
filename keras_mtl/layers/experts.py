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

    Two options HoME uses (Wang et al., arXiv 2408.05430; see `HoME`), both off by default:

    - `normalization=True`: every layer is `activation(BN(W h + b))`, the batch normalisation
      per expert and unit (statistics over the batch; moving averages at inference), so every
      expert's outputs have one scale ("expert normalisation"). Pass `training` when calling.
    - `feature_gate_rank=r`: each expert e reads its own gated copy of the input,
      `x ⊙ 2σ(x A_e B_e)` with `A_e ∈ R^{d×r}`, `B_e ∈ R^{r×d}` (LoRA-style low rank; HoME's
      feature-gate). `B_e` starts at zero, so every gate starts at 2σ(0) = 1: the expert first
      sees its input unchanged.
    """

    def __init__(
        self,
        num_experts: int,
        units: Sequence[int],
        activation: str = "relu",
        use_bias: bool = True,
        normalization: bool = False,
        feature_gate_rank: int | None = None,
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
        self.normalization = bool(normalization)
        if feature_gate_rank is not None and feature_gate_rank < 1:
            raise ValueError(f"feature_gate_rank must be >= 1 or None, got {feature_gate_rank}.")
        self.feature_gate_rank = None if feature_gate_rank is None else int(feature_gate_rank)
        self.norms = [keras.layers.BatchNormalization(name=f"norm_{i}")
                      for i in range(len(self.units))] if self.normalization else []

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        if self.feature_gate_rank is not None:
            r = self.feature_gate_rank
            limit = math.sqrt(6.0 / (d_in + r))
            self.gate_down = self.add_weight(
                name="feature_gate_down", shape=(self.num_experts, d_in, r),
                initializer=keras.initializers.RandomUniform(-limit, limit))
            self.gate_up = self.add_weight(name="feature_gate_up",
                                           shape=(self.num_experts, r, d_in), initializer="zeros")
        for norm, d_out in zip(self.norms, self.units, strict=False):  # no norms: none
            norm.build((None, self.num_experts * d_out))
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

    def feature_gates(self, inputs):
        """`2σ(x A_e B_e)` for every expert: `[batch, num_experts, d_in]`."""
        low = ops.einsum("bi,eir->ber", inputs, self.gate_down)
        return 2.0 * ops.sigmoid(ops.einsum("ber,eri->bei", low, self.gate_up))

    def call(self, inputs, training=None):
        if self.feature_gate_rank is None:
            hidden = ops.einsum("bi,eio->beo", inputs, self.kernels[0])
        else:
            # One op over the input and the gates: a slice of the input alone would not be
            # recorded by a gradient tape that watches the input only after this call (the
            # model's extraction watches the cut's stop-gradient leaves after the heads ran).
            gated = ops.einsum("bi,bei->bei", inputs, self.feature_gates(inputs))
            hidden = ops.einsum("bei,eio->beo", gated, self.kernels[0])
        for i, kernel in enumerate(self.kernels):
            if i > 0:
                hidden = ops.einsum("bei,eio->beo", hidden, kernel)
            if self.use_bias:
                hidden = hidden + self.biases[i]
            if self.normalization:
                flat = ops.reshape(hidden, (-1, self.num_experts * self.units[i]))
                hidden = ops.reshape(self.norms[i](flat, training=training),
                                     (-1, self.num_experts, self.units[i]))
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
            normalization=self.normalization,
            feature_gate_rank=self.feature_gate_rank,
        )
        return config
