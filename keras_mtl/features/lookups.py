"""Lookups: raw categorical values → embedding rows, run as a stage of the input pipeline.

`StringLookup`, `IntegerLookup` and `Hashing` are hash-table (or string) ops that XLA cannot
compile: a model that ran them inside its training step would train without XLA (Keras turns
`jit_compile` off by itself as soon as one of them is in the model). So they run *before* the
step, in the `tf.data` pipeline: `LookupStage` replaces each `Categorical`/`Hashed` feature's raw
value `name` with its row index under `row_key(name)` (int64 `[batch]`), and the model's encoder
reads that index straight into the embedding table. Everything left in the step is arithmetic and
gathers, which compile.

The stage is built from the spec alone, so a pipeline made without the model (`from_dataframe`)
and the model's own encoder agree row for row: both build their layers with `lookup_layer`, and a
vocabulary lookup or a hash is a pure function of the spec's vocabulary / bin count. The model
keeps its lookups too, for raw inputs outside a compiled step (the exported serving function,
which takes raw strings, and `model(raw_features)`); `MultiTaskModel.fit`/`evaluate`/`predict`
move them into the pipeline for every input they are given (`keras_mtl.data.with_lookups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras
import tensorflow as tf

from keras_mtl.features.spec import (
    ROW_SUFFIX,
    Categorical,
    Feature,
    FeatureSpec,
    Hashed,
    as_feature_spec,
)


def row_key(name: str) -> str:
    """The input key under which feature `name`'s table rows (already looked up) arrive."""
    return f"{name}{ROW_SUFFIX}"


def needs_lookup(feature: Feature) -> bool:
    """True for features whose raw values pass through a lookup table or a hash."""
    return isinstance(feature, Categorical | Hashed)


def lookup_layer(feature: Feature) -> keras.layers.Layer:
    """The layer mapping `feature`'s raw values to rows of its embedding table.

    `Categorical`: a `StringLookup`/`IntegerLookup` over its vocabulary with `num_oov` OOV rows
    first; `Hashed`: `Hashing(num_bins)` of the value's string form (an integer input is hashed
    as its decimal string, so `7` and `"7"` share a row).
    """
    if isinstance(feature, Categorical):
        if feature.vocabulary is None:
            raise ValueError(
                f"Categorical feature {feature.name!r} has no vocabulary: pass one, or call "
                "FeatureSpec.adapt(train_frame) first.")
        lookup_cls = (keras.layers.IntegerLookup if feature.dtype == "int64"
                      else keras.layers.StringLookup)
        return lookup_cls(vocabulary=list(feature.vocabulary), num_oov_indices=feature.num_oov,
                          name=f"{feature.name}_lookup")
    if isinstance(feature, Hashed):
        return keras.layers.Hashing(num_bins=feature.num_bins, name=f"{feature.name}_hashing")
    raise TypeError(f"Feature {feature.name!r} ({type(feature).__name__}) needs no lookup.")


def raw_scalar(feature: Feature, value) -> tf.Tensor:
    """A scalar feature's raw input as a `[batch]` tensor of the spec's dtype, or an error naming it.

    `[batch, 1]` is squeezed; a numeric input to a string-hashed feature is hashed as its string.
    """
    if not isinstance(value, tf.Tensor | tf.Variable):
        value = tf.convert_to_tensor(value)
    is_string = value.dtype == tf.string
    if feature.dtype == "string" and not is_string:
        if not isinstance(feature, Hashed):
            raise TypeError(
                f"Feature {feature.name!r} expects string values, got {value.dtype.name}.")
        value = tf.strings.as_string(value)
    elif feature.dtype != "string" and is_string:
        raise TypeError(f"Feature {feature.name!r} expects {feature.dtype} values, got strings.")
    if value.shape.rank == 2 and value.shape[-1] == 1:
        value = tf.squeeze(value, axis=-1)
    elif value.shape.rank != 1:
        raise ValueError(
            f"Feature {feature.name!r} must have shape [batch] or [batch, 1]; got {value.shape}.")
    return value


class LookupStage:
    """`features → features` with every raw `Categorical`/`Hashed` value replaced by its table row.

    Use it in a `tf.data` pipeline (`dataset.map(stage)`, on batches or on whole columns) or
    eagerly on a dict of arrays. Inputs that are not raw lookup features (numerics, id lists,
    vectors, rows already looked up) pass through unchanged, so applying it twice is harmless.

    Args:
        features: the model's `FeatureSpec`.
        layers: the lookup layers to use, keyed by feature name (the encoder passes its own);
            by default new ones from `lookup_layer`, which give the same rows.
    """

    def __init__(self, features, layers: Mapping[str, keras.layers.Layer] | None = None):
        self.spec: FeatureSpec = as_feature_spec(features)
        looked_up = [f for f in self.spec if needs_lookup(f)]
        self.layers = dict(layers) if layers is not None else {
            f.name: lookup_layer(f) for f in looked_up}
        missing = [f.name for f in looked_up if f.name not in self.layers]
        if missing:
            raise ValueError(f"LookupStage: no lookup layer for {missing}.")

    def pending(self, names: Iterable[str]) -> list[str]:
        """The features among input keys `names` that still arrive raw (need this stage)."""
        names = set(names)
        return [name for name in self.layers if name in names and row_key(name) not in names]

    def __call__(self, features: Mapping) -> dict:
        if not isinstance(features, Mapping):
            raise TypeError(f"Features must be a dict of named columns {self.spec.names}; got "
                            f"{type(features).__name__}.")
        out = dict(features)
        for name in self.pending(out):
            rows = self.layers[name](raw_scalar(self.spec[name], out.pop(name)))
            out[row_key(name)] = tf.cast(rows, tf.int64)
        return out
