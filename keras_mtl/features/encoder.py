"""`FeatureEncoder`: raw named features -> one dense vector per row."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_mtl.features.spec import (
    Categorical,
    FeatureSpec,
    Hashed,
    IntegerId,
    Numeric,
    as_feature_spec,
)


@keras.saving.register_keras_serializable(package="keras_mtl")
class FeatureEncoder(keras.layers.Layer):
    """Turns a dict of raw features into the concatenation of their embeddings and scaled numerics.

    Categorical features use `StringLookup`/`IntegerLookup`, hashed ones `Hashing`; both are lookup
    tables that XLA cannot compile, so a model with them trains without `jit_compile` (Keras' "auto"
    does this by itself). `IntegerId` and `Numeric` features are plain arithmetic and compile.
    A numeric input that is missing or non-finite sits at the training mean (0), and standardised
    numerics are clipped to the training range (`Numeric`), so a stray value cannot overflow.

    Output: `[batch, sum(embedding_dim) + num_numeric]`, float32, in the spec's feature order.
    """

    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.spec: FeatureSpec = as_feature_spec(features)
        self.lookups: dict[str, keras.layers.Layer] = {}
        self.embeddings: dict[str, keras.layers.Embedding] = {}
        for feature in self.spec:
            if isinstance(feature, Categorical):
                if feature.vocabulary is None:
                    raise ValueError(
                        f"Categorical feature {feature.name!r} has no vocabulary: pass one, or call "
                        "FeatureSpec.adapt(train_frame) first."
                    )
                lookup_cls = (
                    keras.layers.IntegerLookup
                    if feature.dtype == "int64"
                    else keras.layers.StringLookup
                )
                self.lookups[feature.name] = lookup_cls(
                    vocabulary=list(feature.vocabulary),
                    num_oov_indices=feature.num_oov,
                    name=f"{feature.name}_lookup",
                )
                rows = len(feature.vocabulary) + feature.num_oov
            elif isinstance(feature, Hashed):
                self.lookups[feature.name] = keras.layers.Hashing(
                    num_bins=feature.num_bins, name=f"{feature.name}_hashing"
                )
                rows = feature.num_bins
            elif isinstance(feature, IntegerId):
                rows = feature.num_ids + 1  # the last row takes out-of-range ids
            else:
                continue
            self.embeddings[feature.name] = keras.layers.Embedding(
                rows, feature.embedding_dim, name=f"{feature.name}_embedding"
            )

    @property
    def output_dim(self) -> int:
        return sum(
            1 if isinstance(f, Numeric) else f.embedding_dim for f in self.spec
        )

    @property
    def embedding_tables(self) -> list:
        """The embedding variables: their gradients arrive as `tf.IndexedSlices`."""
        return [layer.embeddings for layer in self.embeddings.values()]

    def build(self, input_shape=None):
        for feature in self.spec:
            if feature.name in self.embeddings:
                self.embeddings[feature.name].build((None,))
        self.built = True

    def call(self, inputs):
        parts = []
        for feature in self.spec:
            value = self._column(inputs, feature)
            if isinstance(feature, Numeric):
                parts.append(self._numeric(feature, value)[:, None])
                continue
            if isinstance(feature, IntegerId):
                ids = tf.cast(value, tf.int64)
                in_range = (ids >= 0) & (ids < feature.num_ids)
                index = tf.where(in_range, ids, tf.constant(feature.num_ids, tf.int64))
            else:
                index = self.lookups[feature.name](value)
            parts.append(self.embeddings[feature.name](index))
        # Numerics are standardised in float32; under a mixed precision policy everything then
        # joins the layer's compute dtype (Keras feeds float inputs in it, embeddings output it).
        return tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=-1)

    @staticmethod
    def _numeric(feature: Numeric, value: tf.Tensor) -> tf.Tensor:
        """The standardised float32 value: non-finite inputs are missing, the rest clipped.

        A missing value (NaN), ±inf, or a value too large for float32 (inf once cast) sits at the
        mean, 0 after standardisation; every other value is clipped to `feature.standardized_range`
        (the training range, see `Numeric`), so no input can overflow the layers above into
        `-inf` or a saturated score. Only `tf.where`/clip: XLA compiles it.
        """
        value = tf.cast(value, tf.float32)
        present = tf.math.is_finite(value)
        value = tf.where(present, value, tf.zeros_like(value))
        if feature.log1p:
            value = tf.math.log1p(tf.maximum(value, 0.0))
        std = feature.std if feature.std > 0 and math.isfinite(feature.std) else 1.0
        low, high = feature.standardized_range
        value = tf.clip_by_value((value - feature.mean) / std, low, high)
        return tf.where(present & ~tf.math.is_nan(value), value, tf.zeros_like(value))

    def _column(self, inputs, feature):
        if not isinstance(inputs, dict):
            raise TypeError(
                f"Features must be a dict of named columns {self.spec.names}; got {type(inputs)}."
            )
        if feature.name not in inputs:
            raise KeyError(
                f"Missing feature {feature.name!r} ({feature.dtype}); the model expects "
                f"{self.spec.names}, got {sorted(inputs)}."
            )
        value = inputs[feature.name]
        if not isinstance(value, tf.Tensor | tf.Variable):
            value = tf.convert_to_tensor(value)
        is_string = value.dtype == tf.string
        if feature.dtype == "string" and not is_string:
            if isinstance(feature, Hashed):
                value = tf.strings.as_string(value)
            else:
                raise TypeError(
                    f"Feature {feature.name!r} expects string values, got {value.dtype.name}."
                )
        elif feature.dtype != "string" and is_string:
            raise TypeError(
                f"Feature {feature.name!r} expects {feature.dtype} values, got strings."
            )
        if value.shape.rank == 2 and value.shape[-1] == 1:
            value = tf.squeeze(value, axis=-1)
        elif value.shape.rank != 1:
            raise ValueError(
                f"Feature {feature.name!r} must have shape [batch] or [batch, 1]; "
                f"got {value.shape}."
            )
        return value

    def get_config(self):
        config = super().get_config()
        config["features"] = self.spec.get_config()
        return config
