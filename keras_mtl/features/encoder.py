"""`FeatureEncoder`: raw named features -> one dense vector per row."""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

from keras_mtl.features.lists import PADDING
from keras_mtl.features.lookups import LookupStage, lookup_layer, needs_lookup, raw_scalar, row_key
from keras_mtl.features.pooling import TargetAttention, masked_pool
from keras_mtl.features.spec import (
    FeatureSpec,
    Hashed,
    IdList,
    IntegerId,
    Numeric,
    Vector,
    as_feature_spec,
)


@keras.saving.register_keras_serializable(package="keras_mtl")
class FeatureEncoder(keras.layers.Layer):
    """Turns a dict of raw features into the concatenation of their embeddings and scaled numerics.

    Categorical features use `StringLookup`/`IntegerLookup`, hashed ones `Hashing`: lookup tables
    that XLA cannot compile. They run in the input pipeline (`lookup_stage`, see
    `keras_mtl.features.lookups`), which hands the encoder table rows under `row_key(name)`; raw
    values are looked up here only outside a compiled step (serving, `model(raw)`). `IntegerId`,
    `Sequence`, `MultiValued`, `Vector` and `Numeric` features are plain arithmetic (`tf.where`,
    `tf.gather`) and compile; their embedding gradients arrive as `tf.IndexedSlices`. A numeric
    input that is missing or non-finite sits at the training mean (0), and standardised numerics
    are clipped to the training range (`Numeric`), so a stray value cannot overflow; a non-finite
    `Vector` component is 0.

    Id lists (`Sequence`, `MultiValued`) are `[batch, L]` int64 padded with `PADDING` (-1); rows
    longer than `max_length` are cut to their first `max_length` ids, and a `tf.RaggedTensor` is
    padded here. Each list is looked up in its table (its own, or the `shares_embedding_with`
    feature's: one `keras.layers.Embedding`, one entry of `embedding_tables`), padding masked out,
    and pooled (`keras_mtl.features.pooling`) into `[batch, embedding_dim]`.

    Output: `[batch, output_dim]`, in the spec's feature order: `embedding_dim` columns per
    embedded feature (pooled lists included), `dim` per `Vector`, 1 per `Numeric`.
    """

    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.spec: FeatureSpec = as_feature_spec(features)
        self.lookups: dict[str, keras.layers.Layer] = {}
        # One Embedding per table, keyed by the feature that owns it (`FeatureSpec.table_owner`).
        self.embeddings: dict[str, keras.layers.Embedding] = {}
        # DIN activation units of the attention-pooled id lists, keyed by feature name.
        self.attention: dict[str, TargetAttention] = {}
        for feature in self.spec:
            if needs_lookup(feature):
                layer = lookup_layer(feature)
                # Lookups run in the input pipeline (`LookupStage`, which `MultiTaskModel.fit`,
                # `evaluate` and `predict` put there), never inside a compiled step, so they must
                # not make Keras turn XLA off for the whole model; a raw value that reaches a
                # compiled step anyway is refused by name (`MultiTaskModel`).
                layer.supports_jit = True
                self.lookups[feature.name] = layer
                rows = (feature.num_bins if isinstance(feature, Hashed)
                        else len(feature.vocabulary) + feature.num_oov)
            elif isinstance(feature, IntegerId):
                rows = feature.num_ids + 1  # the last row takes out-of-range ids
            elif isinstance(feature, IdList):
                if feature.pooling == "attention":
                    self.attention[feature.name] = TargetAttention(
                        feature.attention_units, feature.attention_activation,
                        name=f"{feature.name}_attention")
                if feature.shares_embedding_with is not None:
                    continue  # looked up in the owner's table, which the owner creates
                if feature.num_ids is None:
                    raise ValueError(
                        f"{type(feature).__name__} feature {feature.name!r} has no num_ids: pass "
                        "one, share a table (shares_embedding_with=), or call "
                        "FeatureSpec.adapt(train_frame) first.")
                rows = feature.num_ids + 1  # the last row takes out-of-range ids
            else:
                continue
            self.embeddings[feature.name] = keras.layers.Embedding(
                rows, feature.embedding_dim, name=f"{feature.name}_embedding"
            )

    @property
    def output_dim(self) -> int:
        return sum(width for _, width, _ in self.spec.encoded_layout())

    @property
    def embedding_tables(self) -> list:
        """The embedding variables, one per table (a shared table once): their gradients arrive
        as `tf.IndexedSlices`."""
        return [layer.embeddings for layer in self.embeddings.values()]

    def build(self, input_shape=None):
        for layer in self.embeddings.values():
            layer.build((None,))
        for name, layer in self.attention.items():
            feature = self.spec[name]
            layer.build((None, feature.max_length, self.spec.embedding_dim(name)))
        self.built = True

    def call(self, inputs):
        numerics = [f for f in self.spec if isinstance(f, Numeric)]
        outputs = self._numerics(numerics, [self._column(inputs, f) for f in numerics])
        # Id lists last: an attention-pooled list reads its query's embedding.
        ordered = sorted(self.spec, key=lambda f: isinstance(f, IdList))
        for feature in ordered:
            if isinstance(feature, Numeric):
                continue
            value = self._column(inputs, feature)
            if isinstance(feature, Vector):
                outputs[feature.name] = tf.where(tf.math.is_finite(value), value,
                                                 tf.zeros_like(value))
            elif isinstance(feature, IdList):
                outputs[feature.name] = self._pooled(feature, value, outputs)
            else:
                if isinstance(feature, IntegerId):
                    index = self._row_index(value, feature.num_ids)
                elif row_key(feature.name) in inputs:
                    index = tf.reshape(tf.cast(value, tf.int64), [-1])
                else:
                    index = self.lookups[feature.name](value)
                outputs[feature.name] = self.embeddings[feature.name](index)
        # Numerics are standardised in float32; under a mixed precision policy everything then
        # joins the layer's compute dtype (Keras feeds float inputs in it, embeddings output it).
        return tf.concat([tf.cast(outputs[f.name], self.compute_dtype) for f in self.spec], axis=-1)

    @staticmethod
    def _row_index(ids: tf.Tensor, num_ids: int) -> tf.Tensor:
        """Table rows of integer ids: ids outside `[0, num_ids)` take the last row. Computed here
        rather than left to the gather: Keras' `take` wraps negative indices (-1 → a real row)."""
        in_range = (ids >= 0) & (ids < num_ids)
        return tf.where(in_range, ids, tf.constant(num_ids, tf.int64))

    def _pooled(self, feature: IdList, ids: tf.Tensor, outputs: dict) -> tf.Tensor:
        """`[batch, embedding_dim]`: the feature's ids looked up, padding masked, pooled."""
        owner = self.spec.table_owner(feature.name)
        present = ids != PADDING
        # Padding gathers the out-of-range row, then is replaced by zeros: `tf.where` passes no
        # gradient to the unselected branch, so that row gets exactly 0 from padded positions.
        vectors = self.embeddings[owner.name](self._row_index(ids, owner.num_ids))
        vectors = tf.where(present[:, :, None], vectors, tf.zeros_like(vectors))
        if feature.pooling == "attention":
            return self.attention[feature.name](vectors, outputs[feature.query], present)
        return masked_pool(vectors, present, feature.pooling)

    @staticmethod
    def _numerics(features: list[Numeric], values: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        """Each numeric feature's standardised float32 `[batch, 1]` column: non-finite inputs are
        missing, the rest clipped.

        A missing value (NaN), ±inf, or a value too large for float32 (inf once cast) sits at the
        mean, 0 after standardisation; every other value is clipped to `feature.standardized_range`
        (the training range, see `Numeric`), so no input can overflow the layers above into
        `-inf` or a saturated score. Only `tf.where`/clip: XLA compiles it.

        All numerics are transformed as one `[batch, N]` block with per-column constants and split
        once: a per-feature transform put ~10 ops per feature into every traced step (a 100-column
        spec spent most of its first step tracing and optimising them).
        """
        if not features:
            return {}
        value = tf.stack([tf.cast(v, tf.float32) for v in values], axis=1)
        present = tf.math.is_finite(value)
        value = tf.where(present, value, tf.zeros_like(value))
        log1p = [f.log1p for f in features]
        if all(log1p):
            value = tf.math.log1p(tf.maximum(value, 0.0))
        elif any(log1p):
            value = tf.where(tf.constant(log1p), tf.math.log1p(tf.maximum(value, 0.0)), value)
        std = [f.std if f.std > 0 and math.isfinite(f.std) else 1.0 for f in features]
        low, high = zip(*(f.standardized_range for f in features), strict=True)
        value = tf.clip_by_value((value - tf.constant([f.mean for f in features], tf.float32))
                                 / tf.constant(std, tf.float32),
                                 tf.constant(low, tf.float32), tf.constant(high, tf.float32))
        value = tf.where(present & ~tf.math.is_nan(value), value, tf.zeros_like(value))
        columns = tf.split(value, len(features), axis=1) if len(features) > 1 else [value]
        return {f.name: c for f, c in zip(features, columns, strict=True)}

    @functools.cached_property
    def lookup_stage(self) -> LookupStage:
        """This encoder's lookups as an input-pipeline stage (`keras_mtl.features.lookups`)."""
        return LookupStage(self.spec, self.lookups)

    def _column(self, inputs, feature):
        if not isinstance(inputs, dict):
            raise TypeError(
                f"Features must be a dict of named columns {self.spec.names}; got {type(inputs)}."
            )
        if feature.name in self.lookups and row_key(feature.name) in inputs:
            return inputs[row_key(feature.name)]  # looked up in the pipeline: table rows
        if feature.name not in inputs:
            raise KeyError(
                f"Missing feature {feature.name!r} ({feature.dtype}); the model expects "
                f"{self.spec.names}, got {sorted(inputs)}."
            )
        value = inputs[feature.name]
        if isinstance(feature, IdList):
            return self._id_list(feature, value)
        if isinstance(feature, Vector):
            return self._vector(feature, tf.convert_to_tensor(value))
        return raw_scalar(feature, value)

    @staticmethod
    def _id_list(feature: IdList, value) -> tf.Tensor:
        """int64 `[batch, L ≤ max_length]`: ragged rows padded, longer rows cut to their first ids."""
        what = f"{type(feature).__name__} feature {feature.name!r}"
        if isinstance(value, tf.RaggedTensor):
            if value.dtype == tf.string:
                raise TypeError(f"{what} expects integer ids, got strings.")
            value = tf.cast(value, tf.int64).to_tensor(
                default_value=tf.constant(PADDING, tf.int64), shape=[None, feature.max_length])
        elif not isinstance(value, tf.Tensor | tf.Variable):
            value = tf.convert_to_tensor(value)
        if value.dtype == tf.string:
            raise TypeError(f"{what} expects integer ids, got strings.")
        if value.dtype.is_floating:
            raise TypeError(f"{what} expects integer ids, got {value.dtype.name} (ids are not "
                            "rounded); cast them, padding with -1.")
        if value.shape.rank != 2:
            raise ValueError(
                f"{what} must have shape [batch, length] (ids padded with {PADDING} up to at most "
                f"max_length={feature.max_length}); got {value.shape}.")
        # Keep the first max_length ids: most recent first for a Sequence (documented truncation).
        return tf.cast(value, tf.int64)[:, :feature.max_length]

    @staticmethod
    def _vector(feature: Vector, value: tf.Tensor) -> tf.Tensor:
        value = tf.cast(value, tf.float32)
        if value.shape.rank == 1 and feature.dim == 1:
            value = value[:, None]
        if value.shape.rank != 2 or (value.shape[-1] is not None
                                     and value.shape[-1] != feature.dim):
            raise ValueError(
                f"Vector feature {feature.name!r} must have shape [batch, {feature.dim}]; got "
                f"{value.shape}.")
        if value.shape[-1] is None:  # width known only at run time: checked in the graph
            tf.debugging.assert_equal(
                tf.shape(value)[-1], feature.dim,
                message=f"Vector feature {feature.name!r} must have shape [batch, {feature.dim}]")
            value = tf.ensure_shape(value, [None, feature.dim])
        return value

    def get_config(self):
        config = super().get_config()
        config["features"] = self.spec.get_config()
        return config
