"""DCN-v2's cross network as a bottom stage, built from keras-rs' `FeatureCross`."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import keras_rs

from keras_mtl.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_mtl")
class CrossNetwork(keras.layers.Layer):
    """Explicit bounded-degree feature crosses (Wang et al., "DCN V2", WWW 2021), then a deep MLP.

    Eq. (1) of the paper, one `keras_rs.layers.FeatureCross` per layer l, always crossing with the
    input `x_0` (a plain `keras.Sequential` of `FeatureCross` layers would cross each layer with its
    own input instead):

        x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,

    with `W_l = U_l V_lᵀ` of rank `projection_dim` when given (the paper's low-rank DCN-Mix without
    the mixture, eq. 2). `deep_units` adds the stacked structure's deep network on top (Fig. 2b);
    empty, the output is `x_L`, as wide as the input. As a `bottom=` of a backbone it is shared
    trunk: its variables are balanced like the experts'.
    """

    def __init__(self, num_layers: int = 2, projection_dim: int | None = None,
                 deep_units: Sequence[int] = (), activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"CrossNetwork num_layers must be >= 1, got {num_layers}.")
        self.num_layers = int(num_layers)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.deep_units = [int(u) for u in deep_units]
        self.activation = activation
        self.crosses = [keras_rs.layers.FeatureCross(projection_dim=self.projection_dim,
                                                     name=f"cross_{i}")
                        for i in range(self.num_layers)]
        self.deep = MLP(self.deep_units, activation, name="deep") if self.deep_units else None

    def build(self, input_shape):
        for cross in self.crosses:
            cross.build(input_shape)
        if self.deep is not None:
            self.deep.build(input_shape)

    def call(self, x, training=None):
        x0 = x
        for cross in self.crosses:
            x = cross(x0, x)
        return x if self.deep is None else self.deep(x, training=training)

    def compute_output_shape(self, input_shape):
        width = self.deep_units[-1] if self.deep_units else input_shape[-1]
        return tuple(input_shape[:-1]) + (width,)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, projection_dim=self.projection_dim,
                      deep_units=self.deep_units, activation=self.activation)
        return config
