"""Declarative feature specification.

A `FeatureSpec` lists the raw input columns of a ranking model and how each one becomes a dense
vector: categorical values by vocabulary or by hashing, integer ids straight into an embedding, and
numeric values with normalisation. The spec is plain data (it round-trips through `get_config`) so
that a saved model, an exported SavedModel and a data pipeline all agree on names and dtypes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Feature:
    """Base class of one named raw input column."""

    name: str
    kind: ClassVar[str] = "feature"

    @property
    def dtype(self) -> str:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        for key, value in config.items():
            if isinstance(value, tuple):
                config[key] = list(value)
        config["kind"] = self.kind
        return config


@dataclasses.dataclass(frozen=True)
class Categorical(Feature):
    """A categorical column mapped through a fixed vocabulary to an embedding.

    Values outside the vocabulary share `num_oov` out-of-vocabulary rows of the table, so unseen
    ids at serving time are scored instead of rejected. `vocabulary=None` means "adapt me":
    `FeatureSpec.adapt` fills it from data.
    """

    vocabulary: tuple | None = None
    embedding_dim: int = 8
    num_oov: int = 1
    kind: ClassVar[str] = "categorical"

    def __post_init__(self):
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))

    @property
    def dtype(self) -> str:
        if self.vocabulary and all(isinstance(v, int | np.integer) for v in self.vocabulary):
            return "int64"
        return "string"


@dataclasses.dataclass(frozen=True)
class Hashed(Feature):
    """A high-cardinality categorical column hashed into `num_bins` embedding rows."""

    num_bins: int = 1000
    embedding_dim: int = 8
    input_dtype: str = "string"
    kind: ClassVar[str] = "hashed"

    @property
    def dtype(self) -> str:
        return self.input_dtype


@dataclasses.dataclass(frozen=True)
class IntegerId(Feature):
    """Integer ids in `[0, num_ids)` used directly as embedding rows.

    Ids outside the range (including negative ones) go to one extra out-of-range row. This path uses
    no lookup table, so it compiles under XLA.
    """

    num_ids: int = 1000
    embedding_dim: int = 8
    kind: ClassVar[str] = "integer_id"

    @property
    def dtype(self) -> str:
        return "int64"


@dataclasses.dataclass(frozen=True)
class Numeric(Feature):
    """A numeric column, optionally `log1p`-transformed, then standardised with `mean`/`std`.

    `log1p` is applied to `max(x, 0)` and suits heavy-tailed counts and amounts. The statistics are
    those of the transformed value; `FeatureSpec.adapt` computes them from training data.
    """

    mean: float = 0.0
    std: float = 1.0
    log1p: bool = False
    kind: ClassVar[str] = "numeric"

    @property
    def dtype(self) -> str:
        return "float32"


# The TensorFlow dtype of each feature dtype name (`Feature.dtype`), for inputs and signatures.
TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}

_KINDS = {cls.kind: cls for cls in (Categorical, Hashed, IntegerId, Numeric)}


def feature_from_config(config: dict[str, Any]) -> Feature:
    config = dict(config)
    kind = config.pop("kind")
    if kind not in _KINDS:
        raise ValueError(f"Unknown feature kind {kind!r}; expected one of {sorted(_KINDS)}.")
    return _KINDS[kind](**config)


class FeatureSpec:
    """An ordered collection of `Feature`s: the model's raw input contract."""

    def __init__(self, features: Iterable[Feature]):
        self.features: tuple[Feature, ...] = tuple(features)
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Feature names must be unique; repeated: {duplicates}.")
        if not self.features:
            raise ValueError("A FeatureSpec needs at least one feature.")

    def __iter__(self):
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"No feature named {name!r}; the spec has {self.names}.")

    def __eq__(self, other) -> bool:
        return isinstance(other, FeatureSpec) and self.features == other.features

    def __repr__(self) -> str:
        return f"FeatureSpec({list(self.features)!r})"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def supports_xla(self) -> bool:
        """True when no feature needs a lookup table or string hashing (XLA cannot compile them)."""
        return all(isinstance(f, IntegerId | Numeric) for f in self.features)

    def get_config(self) -> dict[str, Any]:
        return {"features": [f.get_config() for f in self.features]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeatureSpec:
        return cls(feature_from_config(c) for c in config["features"])

    def adapt(self, frame, max_vocabulary: int | None = None, min_count: int = 1) -> FeatureSpec:
        """Returns a copy with vocabularies and normalisation statistics computed from `frame`.

        Args:
            frame: a pandas DataFrame (or a mapping of column name to array) of training rows.
            max_vocabulary: keep at most this many of the most frequent values per categorical.
            min_count: drop categorical values seen fewer times than this.
        """
        adapted = []
        for feature in self.features:
            if feature.name not in frame:
                raise KeyError(
                    f"Cannot adapt feature {feature.name!r}: no such column "
                    f"(columns: {sorted(frame.keys())})."
                )
            column = np.asarray(frame[feature.name])
            if isinstance(feature, Categorical):
                feature = dataclasses.replace(
                    feature, vocabulary=_vocabulary(column, max_vocabulary, min_count)
                )
            elif isinstance(feature, Numeric):
                values = _numeric_column(feature, column)
                if feature.log1p:
                    values = np.log1p(np.maximum(values, 0.0))
                std = float(np.nanstd(values))
                feature = dataclasses.replace(
                    feature,
                    mean=float(np.nanmean(values)),
                    std=std if std > 0 and math.isfinite(std) else 1.0,
                )
            adapted.append(feature)
        return FeatureSpec(adapted)


def _numeric_column(feature: Feature, column: np.ndarray) -> np.ndarray:
    try:
        return column.astype(np.float64)
    except (TypeError, ValueError):
        bad = next(v for v in column if not _is_number(v))
        raise ValueError(
            f"Numeric feature {feature.name!r} has a non-numeric value {bad!r}."
        ) from None


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def string_values(column) -> np.ndarray:
    """Values as an object array of `str`; missing values (None/NaN/NA) become "" (out of vocab)."""
    import pandas as pd

    series = pd.Series(np.asarray(column, dtype=object))
    return series.where(series.notna(), "").astype(str).to_numpy(dtype=object)


def _vocabulary(column: np.ndarray, max_vocabulary: int | None, min_count: int) -> tuple:
    if column.dtype.kind not in "iu":
        column = string_values(column)
        column = column[column != ""]
    values, counts = np.unique(column, return_counts=True)
    order = np.lexsort((values, -counts))  # most frequent first, ties by value: deterministic
    kept = [values[i] for i in order if counts[i] >= min_count]
    if max_vocabulary is not None:
        kept = kept[:max_vocabulary]
    if column.dtype.kind in "iu":
        return tuple(int(v) for v in kept)
    return tuple(str(v) for v in kept)


def as_feature_spec(features: FeatureSpec | Sequence[Feature] | dict) -> FeatureSpec:
    if isinstance(features, FeatureSpec):
        return features
    if isinstance(features, dict):
        return FeatureSpec.from_config(features)
    return FeatureSpec(features)
