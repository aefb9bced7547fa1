"""DLRM's dot interaction as a bottom stage, built from keras-rs' `DotInteraction`."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import keras_rs
import tensorflow as tf

from keras_mtl.features.spec import FeatureSpec, as_feature_spec
from keras_mtl.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_mtl")
class DotInteraction(keras.layers.Layer):
    """Pairwise dot products of the feature embeddings (Naumov et al., "Deep Learning
    Recommendation Model for Personalization and Recommendation Systems", arXiv 1906.00091, §2-3).

    DLRM's interaction: the dense inputs (numerics and vectors) go through the bottom MLP to one
    vector `z_0` as wide as the embeddings, and with the embedded features `e_1 … e_F` (ids,
    categoricals, pooled histories) the layer forms every pairwise dot product

        output = [z_0, (⟨v_i, v_j⟩)_{0 ≤ j < i ≤ F}],   v_0 = z_0, v_i = e_i,

    with `keras_rs.layers.DotInteraction` (`self_interaction=True` also keeps i = j). As a backbone's
    `bottom=` it reads the encoder's flat output and finds each feature's block from the spec
    (`FeatureSpec.encoded_layout`), so it is given the model's `features`; its variables (the
    bottom MLP) are shared trunk, balanced like the experts'. Without dense inputs there is no
    `z_0` and the output is the embeddings' pairwise products alone.

    Args:
        features: the model's `FeatureSpec`; its embedded features must share one width.
        dense_units: hidden widths of the bottom MLP before its last layer (which is as wide as
            the embeddings, as in DLRM).
        self_interaction: also ⟨v_i, v_i⟩.
    """

    def __init__(self, features: FeatureSpec | Sequence | dict, dense_units: Sequence[int] = (),
                 self_interaction: bool = False, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.spec = as_feature_spec(features)
        self.dense_units = [int(u) for u in dense_units]
        self.self_interaction = bool(self_interaction)
        self.activation = activation
        layout, start = [], 0
        for name, width, embedded in self.spec.encoded_layout():
            layout.append((name, start, width, embedded))
            start += width
        self.input_width = start
        self.embedded = [(start, width) for _, start, width, embedded in layout if embedded]
        self.dense = [(start, width) for _, start, width, embedded in layout if not embedded]
        widths = {name: width for name, _, width, embedded in layout if embedded}
        if len(set(widths.values())) > 1:
            raise ValueError(
                f"DotInteraction takes dot products of the feature embeddings, so they need one "
                f"width; the spec's embedding widths are {widths}. Give them one embedding_dim.")
        if not widths or len(widths) + bool(self.dense) < 2:
            raise ValueError(
                "DotInteraction needs at least two vectors to interact (embedded features, plus "
                f"the dense inputs' vector); the spec has embedded features {list(widths)} and "
                f"{len(self.dense)} dense ones.")
        self.embedding_dim = next(iter(widths.values()))
        self.bottom_mlp = (MLP([*self.dense_units, self.embedding_dim], activation,
                               name="bottom_mlp") if self.dense else None)
        self.interaction = keras_rs.layers.DotInteraction(
            self_interaction=self.self_interaction, name="dot_interaction")

    @property
    def num_vectors(self) -> int:
        return len(self.embedded) + (1 if self.dense else 0)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.input_width:
            raise ValueError(
                f"DotInteraction was given features {self.spec.names} ({self.input_width} encoded "
                f"columns) but its input has {input_shape[-1]}: pass the model's own FeatureSpec.")
        if self.bottom_mlp is not None:
            self.bottom_mlp.build((None, sum(width for _, width in self.dense)))

    def call(self, x, training=None):
        vectors = [x[:, start:start + width] for start, width in self.embedded]
        dense = None
        if self.bottom_mlp is not None:
            dense_inputs = tf.concat([x[:, start:start + width] for start, width in self.dense],
                                     axis=-1)
            dense = self.bottom_mlp(dense_inputs, training=training)
            vectors = [dense, *vectors]
        products = self.interaction(vectors)
        return products if dense is None else tf.concat([dense, products], axis=-1)

    def compute_output_shape(self, input_shape):
        n = self.num_vectors
        pairs = n * (n + 1) // 2 if self.self_interaction else n * (n - 1) // 2
        width = pairs + (self.embedding_dim if self.dense else 0)
        return tuple(input_shape[:-1]) + (width,)

    def get_config(self):
        config = super().get_config()
        config.update(features=self.spec.get_config(), dense_units=self.dense_units,
                      self_interaction=self.self_interaction, activation=self.activation)
        return config
