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

    @classmethod
    def infer(
        cls,
        frame,
        exclude: Sequence[str] = (),
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        max_vocabulary: int = 10_000,
        min_count: int = 1,
    ) -> FeatureSpec:
        """A spec inferred from a DataFrame's dtypes and adapted to it in one pass.

        Rules (override any column with `categorical=` / `numeric=`; leave labels out with
        `exclude=`):
        - strings, objects, pandas categoricals and booleans-as-objects → `Categorical` with the
          column's vocabulary when it has at most `max_vocabulary` distinct values, else `Hashed`
          into 4× as many bins as distinct values (capped at 2²⁰);
        - integer columns named like ids (`id`, `*_id`, `*Id`) → the same categorical rules over
          the integer values; other integers, floats and booleans → `Numeric`;
        - numeric columns that are non-negative and heavy-tailed (skewness > 2, e.g. counts,
          prices, durations) get `log1p`;
        - embedding width `6 · cardinality^¼` rounded, within [4, 64] (a common rule of thumb).
        """
        import pandas as pd

        frame = pd.DataFrame(frame)
        unknown = sorted((set(exclude) | set(categorical) | set(numeric)) - set(frame.columns))
        if unknown:
            raise KeyError(f"Columns {unknown} are not in the DataFrame; columns: "
                           f"{list(frame.columns)}.")
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise ValueError(f"Columns {both} are listed as both categorical and numeric.")
        features = []
        for name in frame.columns:
            if name in exclude:
                continue
            column = frame[name]
            kind = column.dtype.kind
            is_text = (kind in "OSU" or isinstance(column.dtype, pd.CategoricalDtype)
                       or pd.api.types.is_string_dtype(column.dtype))
            is_id = name == "id" or name.endswith("_id") or name.endswith("Id")
            if name in categorical or (name not in numeric and (is_text or (kind in "iu" and is_id))):
                features.append(_categorical_for(name, column, max_vocabulary))
            elif name in numeric or kind in "iufb":
                values = _numeric_column(Numeric(name), np.asarray(column, dtype=object)
                                         if is_text else column.to_numpy())
                features.append(Numeric(name, log1p=_heavy_tailed(values)))
            else:
                raise ValueError(f"Column {name!r} has dtype {column.dtype}, which FeatureSpec.infer "
                                 "cannot map; exclude it or list it in categorical=/numeric=.")
        return cls(features).adapt(frame, min_count=min_count)

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


def _categorical_for(name: str, column, max_vocabulary: int) -> Feature:
    """A `Categorical` (its vocabulary left to `adapt`) or, past `max_vocabulary`, a `Hashed`."""
    integers = column.dtype.kind in "iu"
    values = column.to_numpy() if integers else string_values(column)
    distinct = len(np.unique(values if integers else values[values != ""]))
    dim = int(min(64, max(4, round(6 * max(distinct, 1) ** 0.25))))
    if distinct <= max_vocabulary:
        return Categorical(name, embedding_dim=dim)
    return Hashed(name, num_bins=int(min(4 * distinct, 2 ** 20)), embedding_dim=dim,
                  input_dtype="int64" if integers else "string")


def _heavy_tailed(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    if values.size < 3 or values.min() < 0:
        return False
    spread = values.std()
    if spread == 0:
        return False
    return float(np.mean(((values - values.mean()) / spread) ** 3)) > 2.0


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
