"""A plain multi-layer perceptron used for shared bottoms and task towers."""

from __future__ import annotations

from collections.abc import Sequence

import keras


@keras.saving.register_keras_serializable(package="keras_mtl")
class MLP(keras.layers.Layer):
    """Dense layers of `units` widths with `activation`, and optional dropout after each."""

    def __init__(
        self, units: Sequence[int], activation: str = "relu", dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.dense_layers = [
            keras.layers.Dense(u, activation=activation, name=f"dense_{i}")
            for i, u in enumerate(self.units)
        ]
        self.dropout_layer = keras.layers.Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)

    def call(self, x, training=None):
        for layer in self.dense_layers:
            x = layer(x)
            if self.dropout_layer is not None:
                x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + ((self.units[-1],) if self.units else (input_shape[-1],))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, dropout=self.dropout)
        return config
