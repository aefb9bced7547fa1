"""Declarative feature specification.

A `FeatureSpec` lists the raw input columns of a ranking model and how each one becomes a dense
vector: categorical values by vocabulary or by hashing, integer ids straight into an embedding,
numeric values with normalisation, lists of ids (`Sequence`, `MultiValued`: padded with `PADDING`,
looked up in their own or a shared table, pooled by mean/sum/max or DIN target attention) and dense
vectors (`Vector`). The spec is plain data (it round-trips through `get_config`) so
that a saved model, an exported SavedModel and a data pipeline all agree on names and dtypes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
from collections import abc
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from keras_mtl.features.lists import (
    PADDING,
    id_list_array,
    is_list_cell,
    is_missing_cell,
    vector_array,
)

logger = logging.getLogger(__name__)

# The largest finite float32: the model computes in float32, so a larger magnitude becomes ±inf the
# moment it is cast (before any `log1p`), and one such value makes every loss in its batch non-finite.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# The suffix of a feature's looked-up table rows in the inputs ("country" → "country__row"), see
# `keras_mtl.features.lookups`; no feature name may end in it.
ROW_SUFFIX = "__row"


@dataclasses.dataclass(frozen=True)
class Feature:
    """Base class of one named raw input column."""

    name: str
    kind: ClassVar[str] = "feature"

    @property
    def dtype(self) -> str:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-row shape of the input: `()` for one value per row (the input is `[batch]`)."""
        return ()

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

    Values outside the vocabulary share `num_oov` out-of-vocabulary (OOV) rows of the table, so
    unseen ids at serving time are scored instead of rejected. `vocabulary=None` means "adapt me":
    `FeatureSpec.adapt` fills it from data.

    `min_count` (default 2): when adapting, values seen fewer times than this stay out of the
    vocabulary, so their training rows land on the OOV row. That is what trains the OOV row: with
    every training value in the vocabulary it would keep its random initial embedding, and an
    unseen value at serving would be scored through a vector the model never learned (one such
    value moved a click prediction from 0.12 to 0.38). With the default, an unseen value (and a
    missing one) is scored like the rare values of training data. A column without any rare value
    still leaves the OOV row untrained; `FeatureSpec.infer`'s report says how many values went to it.
    """

    vocabulary: tuple | None = None
    embedding_dim: int = 8
    num_oov: int = 1
    min_count: int = 2
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
    those of the transformed value; `FeatureSpec.adapt` computes them from training data, including
    `min`/`max`, the training range of the transformed value.

    In the model a missing or non-finite input (NaN, ±inf, or a float64 value beyond float32's range,
    which becomes inf when cast) counts as missing and sits at the mean (0 after standardisation),
    and every standardised value is clipped to the training range `[(min - mean) / std,
    (max - mean) / std]` (±`CLIP_STD` = 10 standard deviations when `min`/`max` are unknown, e.g. a
    spec written by hand or saved before they were recorded). So a stray `1e38` at serving scores
    like the largest training value instead of overflowing the network to `-inf` or a saturated
    score. Training data itself must be finite: `adapt` and `from_dataframe` refuse ±inf and
    values beyond float32's range.
    """

    mean: float = 0.0
    std: float = 1.0
    log1p: bool = False
    min: float | None = None
    max: float | None = None
    kind: ClassVar[str] = "numeric"
    CLIP_STD: ClassVar[float] = 10.0

    def __post_init__(self):
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Numeric feature {self.name!r} has min {self.min} > max {self.max}.")

    @property
    def standardized_range(self) -> tuple[float, float]:
        """The `[low, high]` the standardised value is clipped to (see the class docstring)."""
        std = self.std if self.std > 0 and math.isfinite(self.std) else 1.0
        low = -self.CLIP_STD if self.min is None else (self.min - self.mean) / std
        high = self.CLIP_STD if self.max is None else (self.max - self.mean) / std
        return float(low), float(high)

    @property
    def dtype(self) -> str:
        return "float32"


# How an id list is pooled into one vector per row (`IdList.pooling`).
POOLINGS = ("mean", "sum", "max", "attention")
DEFAULT_EMBEDDING_DIM = 8


@dataclasses.dataclass(frozen=True)
class IdList(Feature):
    """Base of `Sequence` and `MultiValued`: a variable-length list of integer ids per row, pooled
    into one `embedding_dim` vector.

    Input: int64 `[batch, L]`, each row padded with `PADDING` (-1) after its ids (a
    `tf.RaggedTensor` is padded by the model). Rows longer than `max_length` are truncated to their
    first `max_length` ids (`keras_mtl.data.from_dataframe` and the serving client truncate the
    same way). `PADDING` is masked: it selects no embedding row, contributes nothing to the pooled
    vector and receives no gradient; an all-padding row pools to zeros. Other ids outside
    `[0, num_ids)` (negative ones included) go to the table's out-of-range row, as for `IntegerId`.

    Args:
        max_length: the cap on ids per row.
        num_ids: rows of the feature's own table (plus one out-of-range row); `None` means "adapt
            me" (`FeatureSpec.adapt`: max id + 1). Leave `None` (or equal to the owner's) when
            sharing.
        embedding_dim: width of the feature's own table (default 8); when sharing, `None` or the
            shared table's width.
        shares_embedding_with: the name of an `IntegerId`, `Sequence` or `MultiValued` feature whose
            table this one looks its ids up in: the same `keras.layers.Embedding` variable (one
            entry in `FeatureEncoder.embedding_tables`), trained by both features, e.g. a click
            history sharing the candidate `item_id`'s table.
        pooling: `"mean"`, `"sum"` or `"max"` over the non-padded positions, or `"attention"`: DIN
            target attention against `query` (see `keras_mtl.features.pooling.TargetAttention`).
        query: for `"attention"`: the feature whose embedding is the attention query (an
            `IntegerId`, `Categorical` or `Hashed` feature with the same embedding width).
        attention_units, attention_activation: the activation unit's hidden layers (default
            `(80, 40)`, sigmoid, as DIN's released code).
    """

    max_length: int = 50
    num_ids: int | None = None
    embedding_dim: int | None = None
    shares_embedding_with: str | None = None
    pooling: str = "mean"
    query: str | None = None
    attention_units: tuple[int, ...] = (80, 40)
    attention_activation: str = "sigmoid"
    kind: ClassVar[str] = "id_list"

    def __post_init__(self):
        what = f"{type(self).__name__} feature {self.name!r}"
        if not isinstance(self.max_length, int | np.integer) or self.max_length < 1:
            raise ValueError(f"{what}: max_length must be a positive integer, got {self.max_length!r}.")
        object.__setattr__(self, "max_length", int(self.max_length))
        for field in ("num_ids", "embedding_dim"):
            value = getattr(self, field)
            if value is not None:
                if not isinstance(value, int | np.integer) or value < 1:
                    raise ValueError(f"{what}: {field} must be a positive integer, got {value!r}.")
                object.__setattr__(self, field, int(value))
        if self.shares_embedding_with is None and self.embedding_dim is None:
            object.__setattr__(self, "embedding_dim", DEFAULT_EMBEDDING_DIM)
        if self.shares_embedding_with == self.name:
            raise ValueError(f"{what} cannot share its own embedding table.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"{what}: pooling must be one of {list(POOLINGS)}, got {self.pooling!r}.")
        if self.pooling == "attention" and self.query is None:
            raise ValueError(f"{what}: pooling='attention' needs query=, the feature whose embedding "
                             "attends over the list (e.g. the candidate item id).")
        if self.pooling != "attention" and self.query is not None:
            raise ValueError(f"{what}: query={self.query!r} is only used with pooling='attention' "
                             f"(pooling is {self.pooling!r}).")
        units = tuple(int(u) for u in self.attention_units)
        if any(u < 1 for u in units):
            raise ValueError(f"{what}: attention_units must be positive, got {list(units)}.")
        object.__setattr__(self, "attention_units", units)

    @property
    def dtype(self) -> str:
        return "int64"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.max_length,)


@dataclasses.dataclass(frozen=True)
class Sequence(IdList):
    """An ordered list of ids, most recent first (e.g. the user's last clicked items).

    Truncation keeps the first `max_length` ids, i.e. the most recent ones: order a history
    newest-first before it reaches the model. See `IdList` for the arguments, padding and sharing.
    With `pooling="attention"` and `query="item_id"` this is DIN's user-interest vector.
    """

    max_length: int = 50
    kind: ClassVar[str] = "sequence"


@dataclasses.dataclass(frozen=True)
class MultiValued(IdList):
    """An unordered bag of ids (e.g. an item's tags), capped at `max_length` (default 20).

    Truncation keeps the first `max_length` ids as given. See `IdList` for the arguments.
    """

    max_length: int = 20
    kind: ClassVar[str] = "multi_valued"


@dataclasses.dataclass(frozen=True)
class Vector(Feature):
    """A dense float vector of width `dim` per row (e.g. a pretrained user embedding).

    Input: float32 `[batch, dim]` (a `[batch]` column when `dim == 1`); any other width is an error
    naming the feature. Used as is (no standardisation). In the model a non-finite component (NaN,
    ±inf, beyond float32's range) becomes 0, so one bad request cannot overflow the network;
    training data must be finite: `FeatureSpec.adapt` and `keras_mtl.data.from_dataframe` refuse
    such a value with the column and the row.
    """

    dim: int
    kind: ClassVar[str] = "vector"

    def __post_init__(self):
        if not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"Vector feature {self.name!r}: dim must be a positive integer, got "
                             f"{self.dim!r}.")
        object.__setattr__(self, "dim", int(self.dim))

    @property
    def dtype(self) -> str:
        return "float32"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.dim,)


# The TensorFlow dtype of each feature dtype name (`Feature.dtype`), for inputs and signatures.
TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}

_KINDS = {cls.kind: cls for cls in (Categorical, Hashed, IntegerId, Numeric, Sequence, MultiValued,
                                     Vector)}


def feature_from_config(config: dict[str, Any]) -> Feature:
    """The `Feature` a `Feature.get_config()` dict describes (its `kind` names the class)."""
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
        reserved = [n for n in names if n.endswith(ROW_SUFFIX)]
        if reserved:
            raise ValueError(
                f"Feature names may not end in {ROW_SUFFIX!r} (the input pipeline's key for a "
                f"feature's looked-up table rows, `keras_mtl.features.lookups`): {reserved}.")
        # Set by `FeatureSpec.infer`: what it decided for each column and why (else None).
        self.inference_report: InferenceReport | None = None
        for feature in self.features:
            if isinstance(feature, IdList):
                self._check_id_list(feature)

    def _check_id_list(self, feature: IdList) -> None:
        """Sharing and query references resolve, and the widths agree (clear errors otherwise)."""
        what = f"{type(feature).__name__} feature {feature.name!r}"
        if feature.shares_embedding_with is not None:
            owner = self.table_owner(feature.name)  # raises on a missing name or a cycle
            owner_dim = owner.embedding_dim
            if feature.embedding_dim is not None and feature.embedding_dim != owner_dim:
                raise ValueError(
                    f"{what} shares the embedding table of {owner.name!r} (width {owner_dim}) but "
                    f"has embedding_dim={feature.embedding_dim}: a shared table has one width. "
                    f"Leave embedding_dim unset or set it to {owner_dim}.")
            if feature.num_ids is not None and owner.num_ids is not None \
                    and feature.num_ids != owner.num_ids:
                raise ValueError(
                    f"{what} shares the embedding table of {owner.name!r} ({owner.num_ids} ids) but "
                    f"has num_ids={feature.num_ids}: a shared table has one size. Leave num_ids "
                    "unset.")
        if feature.query is not None:
            if feature.query not in self.names:
                raise ValueError(f"{what}: query {feature.query!r} is not a feature of the spec "
                                 f"{self.names}.")
            query = self[feature.query]
            if not isinstance(query, IntegerId | Categorical | Hashed):
                raise ValueError(
                    f"{what}: query {feature.query!r} is a {type(query).__name__} feature; the "
                    "query must be one embedding per row (IntegerId, Categorical or Hashed).")
            dim = self.embedding_dim(feature.name)
            if query.embedding_dim != dim:
                raise ValueError(
                    f"{what} has embedding width {dim} but its query {feature.query!r} has "
                    f"{query.embedding_dim}: DIN attention compares the two vectors element-wise, "
                    "so the widths must match.")

    def table_owner(self, name: str) -> IntegerId | IdList:
        """The feature whose embedding table `name` looks its ids up in (itself unless it shares).

        Raises:
            ValueError: naming the features, when `shares_embedding_with` names no feature, a
                feature without an id table (Categorical, Hashed, Numeric, Vector), or a cycle.
        """
        feature, seen = self[name], [name]
        while isinstance(feature, IdList) and feature.shares_embedding_with is not None:
            target = feature.shares_embedding_with
            if target not in self.names:
                raise ValueError(
                    f"{type(feature).__name__} feature {feature.name!r} shares the embedding table "
                    f"of {target!r}, which is not a feature of the spec {self.names}.")
            if target in seen:
                raise ValueError(f"Embedding sharing forms a cycle: {' -> '.join([*seen, target])}.")
            owner = self[target]
            if not isinstance(owner, IntegerId | IdList):
                raise ValueError(
                    f"{type(feature).__name__} feature {feature.name!r} shares the embedding table "
                    f"of {target!r}, a {type(owner).__name__} feature; only IntegerId, Sequence and "
                    "MultiValued tables (integer ids as rows) can be shared.")
            feature, seen = owner, [*seen, target]
        if not isinstance(feature, IntegerId | IdList):
            raise ValueError(f"Feature {name!r} ({type(feature).__name__}) has no id table.")
        return feature

    def embedding_dim(self, name: str) -> int:
        """The embedding width of feature `name` (a shared table's width when it shares)."""
        feature = self[name]
        if isinstance(feature, IdList):
            return int(self.table_owner(name).embedding_dim)
        return int(feature.embedding_dim)

    def encoded_layout(self) -> list[tuple[str, int, bool]]:
        """The encoder's output, column block by column block in spec order: `(name, width,
        embedded)`; embedded blocks (ids, categoricals, pooled lists) are `embedding_dim` wide,
        a `Vector` `dim`, a `Numeric` 1."""
        layout = []
        for feature in self.features:
            if isinstance(feature, Numeric):
                layout.append((feature.name, 1, False))
            elif isinstance(feature, Vector):
                layout.append((feature.name, int(feature.dim), False))
            else:
                layout.append((feature.name, self.embedding_dim(feature.name), True))
        return layout

    def example_inputs(self, batch: int = 2) -> dict[str, tf.Tensor]:
        """Placeholder inputs of every feature's dtype and shape, to build a model on.

        `""` for string features, 0 for integer and float scalars (`[batch]`), all-`PADDING` rows
        (`[batch, max_length]` int64) for `Sequence`/`MultiValued`, and zeros `[batch, dim]`
        float32 for `Vector`s. No lookup needs a real value: unknown strings and ids go to OOV rows.
        """
        inputs = {}
        for feature in self.features:
            shape = [batch, *feature.shape]
            if feature.dtype == "string":
                inputs[feature.name] = tf.fill(shape, "")
            elif isinstance(feature, IdList):
                inputs[feature.name] = tf.fill(shape, tf.constant(PADDING, tf.int64))
            else:
                inputs[feature.name] = tf.zeros(shape, TF_DTYPES[feature.dtype])
        return inputs

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

    def get_config(self) -> dict[str, Any]:
        return {"features": [f.get_config() for f in self.features]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeatureSpec:
        return cls(feature_from_config(c) for c in config["features"])

    def check_not_labels(self, tasks: Iterable) -> None:
        """Refuses a feature named like a task: the model would read that task's label as an input.

        A label column that slips into the features (e.g. through `FeatureSpec.infer` without
        `tasks=`) trains the head on its own answer: offline metrics look perfect (click AUC 0.866 →
        0.998 in one case) and the model is useless at serving, where the label does not exist.
        `MultiTaskModel` calls this when it is built.

        Args:
            tasks: `Task` objects or task names.

        Raises:
            ValueError: naming the feature and the task.
        """
        names = [getattr(task, "name", task) for task in tasks]
        leaked = [name for name in self.names if name in names]
        if leaked:
            raise ValueError(
                f"Feature {leaked[0]!r} has the same name as task {leaked[0]!r} (all such features: "
                f"{leaked}): the model would train on that task's label as an input (label leakage). "
                "Leave the label column out of the features (FeatureSpec.infer(frame, tasks=tasks) "
                "does), or rename the feature if it is a different quantity."
            )

    @classmethod
    def infer(
        cls,
        frame,
        exclude: abc.Sequence[str] = (),
        categorical: abc.Sequence[str] = (),
        numeric: abc.Sequence[str] = (),
        max_vocabulary: int = 10_000,
        min_count: int | None = None,
        tasks: abc.Sequence = (),
        verbose: bool = False,
    ) -> FeatureSpec:
        """A spec inferred from a DataFrame's dtypes and column names, adapted to it in one pass.

        Rules (override any column with `categorical=` / `numeric=`; leave columns out with
        `exclude=`, and label columns with `tasks=`, `Task` objects or names):
        - strings, objects, pandas categoricals and booleans-as-objects → `Categorical` with the
          column's vocabulary when it has at most `max_vocabulary` distinct values, else `Hashed`
          into 4× as many bins as distinct values (capped at 2²⁰);
        - integer columns whose *name* marks them as ids or codes → the same categorical rules over
          the integer values. The names: `id`, `*_id`, `*Id`, `categorical_*`, `cat_*`, and field
          ids made of digits and underscores (`101`, `109_14`), as Ali-CCP and AliExpress ship
          their categorical fields: integer codes whose magnitude means nothing;
        - other integers, floats and booleans → `Numeric`. The rule is by name, not by the number
          of distinct values, because small counts (`session_count` with 5 values) are
          quantities, and a large code field is still a code;
        - numeric columns that are non-negative and heavy-tailed (skewness > 2, e.g. counts,
          prices, durations) get `log1p`;
        - embedding width `6 · cardinality^¼` rounded, within [4, 64] (a common rule of thumb);
        - list-valued columns (list, tuple or 1-D array cells; a missing cell is an empty list):
          integer ids → `MultiValued` (mean pooling, `num_ids` = largest id + 1, `max_length` =
          the 95th percentile of the row lengths, so the few longest rows are truncated to their
          first ids; declare a `Sequence` yourself for an ordered history), floats of one
          constant length → `Vector`. Other lists are an error naming the column.

        What was decided for each column, and why, is on the result as `spec.inference_report`
        (an `InferenceReport`: `print(spec.inference_report)` shows a table of column, dtype,
        distinct values, decision and reason; `.to_frame()` gives a DataFrame); it is also logged
        at INFO level to `keras_mtl.features.spec`, and printed when `verbose=True`. Read it before
        training: a code column read as a number, or a label read as a feature, shows up there.
        """
        import pandas as pd

        frame = pd.DataFrame(frame)
        unknown = sorted((set(exclude) | set(categorical) | set(numeric)) - set(frame.columns),
                         key=str)
        if unknown:
            raise KeyError(f"Columns {unknown} are not in the DataFrame; columns: "
                           f"{list(frame.columns)}.")
        both = sorted(set(categorical) & set(numeric), key=str)
        if both:
            raise ValueError(f"Columns {both} are listed as both categorical and numeric.")
        task_names = [getattr(task, "name", task) for task in tasks]
        features, rows = [], []
        for name in frame.columns:
            column = frame[name]
            cells = _list_cells(column)  # list-valued cells: an id list or a vector
            distinct = (_distinct_elements(cells) if cells is not None
                        else int(column.nunique(dropna=True)))
            if name in task_names:
                rows.append(InferenceRow(str(name), str(column.dtype), distinct, "left out",
                                         f"label of task {name!r} (tasks=)"))
                continue
            if name in exclude:
                rows.append(InferenceRow(str(name), str(column.dtype), distinct, "left out",
                                         "listed in exclude="))
                continue
            if cells is not None:
                if name in categorical or name in numeric:
                    raise ValueError(f"Column {name!r} holds lists: it cannot be categorical= or "
                                     "numeric=; declare it as a Sequence, MultiValued or Vector.")
                feature, reason = _list_feature_for(str(name), column, cells)
                features.append(feature)
                rows.append(InferenceRow(str(name), str(column.dtype), distinct, "", reason))
                continue
            kind = column.dtype.kind
            is_text = (kind in "OSU" or isinstance(column.dtype, pd.CategoricalDtype)
                       or pd.api.types.is_string_dtype(column.dtype))
            code_pattern = _code_name_pattern(str(name))
            if name in categorical:
                reason = "listed in categorical="
            elif name in numeric:
                reason = None
            elif is_text:
                reason = f"{column.dtype} values are labels, not quantities"
            elif kind in "iu" and code_pattern:
                reason = f"integer, and the name matches {code_pattern}: an id/code"
            else:
                reason = None
            if reason is not None:
                feature = _categorical_for(name, column, max_vocabulary)
                if isinstance(feature, Hashed):
                    reason += f"; {distinct} distinct > max_vocabulary={max_vocabulary}, so hashed"
                features.append(feature)
            elif name in numeric or kind in "iufb":
                values = _numeric_column(Numeric(name), np.asarray(column, dtype=object)
                                         if is_text else column.to_numpy())
                heavy = _heavy_tailed(values)
                features.append(Numeric(name, log1p=heavy))
                if name in numeric:
                    reason = "listed in numeric="
                elif kind in "iu":
                    reason = ("integer, and the name is not an id/code pattern (pass categorical= "
                              "if it is a code)")
                elif kind == "b":
                    reason = "boolean"
                elif code_pattern:
                    reason = (f"float; the name matches {code_pattern} but the dtype is not integer "
                              "(pass categorical= if it is a code)")
                else:
                    reason = "float"
                if heavy:
                    reason += "; non-negative with skewness > 2, so log1p"
            else:
                raise ValueError(f"Column {name!r} has dtype {column.dtype}, which FeatureSpec.infer "
                                 "cannot map; exclude it or list it in categorical=/numeric=.")
            rows.append(InferenceRow(str(name), str(column.dtype), distinct, "", reason))
        spec = cls(features).adapt(frame, min_count=min_count)
        decisions = {f.name: _describe(f, frame[f.name]) for f in spec}
        spec.inference_report = InferenceReport(
            tuple(dataclasses.replace(row, decision=decisions[row.column]) if not row.decision
                  else row for row in rows))
        logger.info("FeatureSpec.infer decisions:\n%s", spec.inference_report)
        if verbose:
            print(spec.inference_report)
        return spec

    def adapt(self, frame, max_vocabulary: int | None = None,
              min_count: int | None = None) -> FeatureSpec:
        """Returns a copy with vocabularies and normalisation statistics computed from `frame`.

        Numeric columns must be finite: ±inf, and values beyond float32's range (which become inf
        in the model's float32), are refused with the column, the first offending row (the
        DataFrame's index label) and the number of such rows; stored as a mean they would leave
        the model unable to learn. NaN is a missing value and is left out of the statistics.

        `Sequence`/`MultiValued` columns (cells of integer-id lists, see `keras_mtl.features.lists`)
        get `num_ids` = largest id + 1 when it is `None`, over every column that shares the
        table; `Vector` columns are checked (width, finite values) and kept as they are.

        Args:
            frame: a pandas DataFrame (or a mapping of column name to array) of training rows.
            max_vocabulary: keep at most this many of the most frequent values per categorical.
            min_count: values of a categorical seen fewer times than this go to the OOV row
                (which that trains); `None` uses each `Categorical`'s own `min_count` (default 2).
        """
        index = getattr(frame, "index", None)
        for feature in self.features:
            if feature.name not in frame:
                raise KeyError(
                    f"Cannot adapt feature {feature.name!r}: no such column "
                    f"(columns: {sorted(frame.keys(), key=str)})."
                )
        # An id table sized from data covers the ids of every feature that looks ids up in it.
        largest_id: dict[str, int] = {}
        for feature in self.features:
            if isinstance(feature, IdList):
                ids = id_list_array(frame[feature.name], _what(feature), feature.max_length, index)
                owner = self.table_owner(feature.name).name
                largest_id[owner] = max(largest_id.get(owner, -1), int(ids.max(initial=-1)))
        adapted = []
        for feature in self.features:
            if isinstance(feature, Vector):
                vector_array(frame[feature.name], _what(feature), feature.dim, index)  # refuses
                adapted.append(feature)
                continue
            if isinstance(feature, IdList):
                if feature.shares_embedding_with is None and feature.num_ids is None:
                    # max id + 1; a column without any id still needs one row to be a table.
                    feature = dataclasses.replace(
                        feature, num_ids=max(largest_id.get(feature.name, -1) + 1, 1))
                adapted.append(feature)
                continue
            column = np.asarray(frame[feature.name])
            if isinstance(feature, Categorical):
                count = feature.min_count if min_count is None else int(min_count)
                feature = dataclasses.replace(
                    feature, min_count=count,
                    vocabulary=_vocabulary(column, max_vocabulary, count, feature.name),
                )
            elif isinstance(feature, Numeric):
                values = _numeric_column(feature, column)
                check_numeric_values(f"Numeric feature {feature.name!r}", values, index)
                if feature.log1p:
                    values = np.log1p(np.maximum(values, 0.0))
                present = values[~np.isnan(values)]
                if present.size:
                    std = float(np.std(present))
                    feature = dataclasses.replace(
                        feature, mean=float(np.mean(present)),
                        std=std if std > 0 and math.isfinite(std) else 1.0,
                        min=float(present.min()), max=float(present.max()),
                    )
                else:  # no value at all: every row sits at 0, the "missing" value
                    feature = dataclasses.replace(feature, mean=0.0, std=1.0, min=None, max=None)
            adapted.append(feature)
        return FeatureSpec(adapted)


@dataclasses.dataclass(frozen=True)
class InferenceRow:
    """What `FeatureSpec.infer` decided for one column, and why."""

    column: str
    dtype: str
    distinct: int
    decision: str
    reason: str


@dataclasses.dataclass(frozen=True)
class InferenceReport:
    """`FeatureSpec.infer`'s decisions, one row per DataFrame column; `str()` is a table."""

    rows: tuple[InferenceRow, ...]

    def __getitem__(self, column: str) -> InferenceRow:
        for row in self.rows:
            if row.column == str(column):
                return row
        raise KeyError(f"No column {column!r} in the report; columns: {[r.column for r in self.rows]}.")

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self):
        """The report as a pandas DataFrame (one row per column)."""
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(row) for row in self.rows])

    def __str__(self) -> str:
        header = ("column", "dtype", "distinct", "decision", "reason")
        table = [header] + [(r.column, r.dtype, str(r.distinct), r.decision, r.reason)
                            for r in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
            + "  " + line[-1] for line in table)


# Integer columns whose names mark them as ids or codes (`FeatureSpec.infer`), with the rule's name.
_CODE_NAMES = (
    (re.compile(r"^id$|_id$|Id$"), "id / *_id / *Id"),
    (re.compile(r"^(categorical|cat)_", re.IGNORECASE), "categorical_* / cat_*"),
    (re.compile(r"^\d+(_\d+)*$"), "a digit field id (101, 109_14)"),
)


def _what(feature: Feature) -> str:
    """How errors name a feature: "Sequence feature 'hist'"."""
    return f"{type(feature).__name__} feature {feature.name!r}"


def _code_name_pattern(name: str) -> str | None:
    for pattern, description in _CODE_NAMES:
        if pattern.search(name):
            return description
    return None


def _describe(feature: Feature, column) -> str:
    if isinstance(feature, Categorical):
        values = column.to_numpy() if column.dtype.kind in "iu" else string_values(column)
        distinct = len(np.unique(values if column.dtype.kind in "iu" else values[values != ""]))
        rare = distinct - len(feature.vocabulary)
        if rare <= 0:
            return (f"Categorical ({len(feature.vocabulary)} values; none rarer than "
                    f"min_count={feature.min_count}: OOV row untrained)")
        return (f"Categorical ({len(feature.vocabulary)} values; {rare} rarer than "
                f"min_count={feature.min_count} → OOV row)")
    if isinstance(feature, Hashed):
        return f"Hashed ({feature.num_bins} bins, {feature.input_dtype})"
    if isinstance(feature, Numeric):
        return "Numeric (log1p)" if feature.log1p else "Numeric"
    if isinstance(feature, IdList):
        return (f"{type(feature).__name__} ({feature.num_ids} ids, max_length={feature.max_length}, "
                f"{feature.embedding_dim}-dim, {feature.pooling} pooling)")
    if isinstance(feature, Vector):
        return f"Vector ({feature.dim} floats)"
    return type(feature).__name__


# `FeatureSpec.infer`: the quantile of row lengths an inferred id list is capped at.
LENGTH_QUANTILE = 0.95


def _list_cells(column) -> list | None:
    """The non-missing cells of a column of lists (None when no cell is a list).

    Raises:
        ValueError: naming the column and the row, when list cells and other values are mixed.
    """
    if column.dtype.kind != "O":
        return None
    values = column.to_numpy(dtype=object)
    is_list = [is_list_cell(v) for v in values]
    if not any(is_list):
        return None
    for i, (value, listed) in enumerate(zip(values, is_list, strict=True)):
        if not listed and not is_missing_cell(value):
            raise ValueError(
                f"Column {column.name!r} mixes lists and other values: row {column.index[i]!r} holds "
                f"{type(value).__name__} {value!r:.60}. A list-valued column (Sequence, MultiValued, "
                "Vector) needs a list in every row (None for an empty one).")
    return [v for v, listed in zip(values, is_list, strict=True) if listed]


def _distinct_elements(cells: list) -> int:
    present = [np.asarray(c).ravel() for c in cells if len(c)]
    return int(len(np.unique(np.concatenate(present)))) if present else 0


def _list_feature_for(name: str, column, cells: list) -> tuple[Feature, str]:
    """The `MultiValued` or `Vector` an inferred list column becomes, and why."""
    arrays = [np.asarray(c) for c in cells]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError(f"Column {name!r} holds nested lists; FeatureSpec.infer maps flat lists "
                         "only. Exclude it or declare the feature.")
    kinds = {a.dtype.kind for a in arrays if a.size}
    if not kinds:
        raise ValueError(f"Column {name!r}: every list is empty, so its kind cannot be inferred; "
                         "declare a Sequence/MultiValued/Vector or exclude it.")
    lengths = np.asarray([len(a) for a in arrays] + [0] * (len(column) - len(cells)))
    if kinds <= set("iu"):
        cap = max(1, math.ceil(float(np.quantile(lengths, LENGTH_QUANTILE))))
        distinct = _distinct_elements(cells)
        dim = int(min(64, max(4, round(6 * max(distinct, 1) ** 0.25))))
        reason = (f"lists of integer ids (lengths {lengths.min()}–{lengths.max()}); max_length={cap}, "
                  f"the {LENGTH_QUANTILE:.0%} quantile of the lengths (longer rows keep their first "
                  f"{cap} ids)")
        return MultiValued(name, max_length=cap, embedding_dim=dim), reason
    if kinds <= set("iuf"):
        present = lengths[:len(cells)]
        if present.min() != present.max() or len(cells) != len(column):
            raise ValueError(
                f"Column {name!r} holds float lists of lengths {present.min()}–{present.max()}"
                f"{' and missing rows' if len(cells) != len(column) else ''}: a Vector needs one "
                "constant width in every row. Fix the column or declare the feature.")
        return Vector(name, dim=int(present[0])), f"float arrays of constant length {present[0]}"
    raise ValueError(f"Column {name!r} holds lists of {sorted(kinds)} values; FeatureSpec.infer maps "
                     "integer lists to MultiValued and constant-length float lists to Vector. "
                     "Exclude it or declare the feature.")


def check_numeric_values(what: str, values: np.ndarray, index=None) -> None:
    """Refuses ±inf and magnitudes beyond float32's range in float64 `values` (NaN is allowed).

    The model computes in float32: a value past ±3.4e38 becomes ±inf when cast, before any
    `log1p`, so it is refused even for a `log1p` feature whose float64 `log1p` would be small.

    Args:
        what: how the error names the column, e.g. "Numeric feature 'age'".
        values: the column as float64.
        index: the DataFrame's index, to name the row by its label (else by position).
    """
    bad = np.abs(values) > FLOAT32_MAX  # False for NaN, True for ±inf
    if bad.any():
        first = int(np.argmax(bad))
        row = index[first] if index is not None else first
        raise ValueError(
            f"{what} has value {float(values[first])!r} at row {row!r} ({int(bad.sum())} of "
            f"{len(values)} rows are ±inf or beyond float32's range ±{FLOAT32_MAX:.3g}); expected "
            "finite numbers (NaN marks a missing value). Fix or drop those rows before training."
        )


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


def _vocabulary(column: np.ndarray, max_vocabulary: int | None, min_count: int,
                name: str = "") -> tuple:
    if column.dtype.kind not in "iu":
        column = string_values(column)
        column = column[column != ""]
    values, counts = np.unique(column, return_counts=True)
    order = np.lexsort((values, -counts))  # most frequent first, ties by value: deterministic
    kept = [values[i] for i in order if counts[i] >= min_count]
    if not kept and len(values):
        # An empty vocabulary would leave the column with no embedding but the OOV row (and an
        # integer column without its dtype): keep every value and say so.
        warnings.warn(
            f"Categorical feature {name!r}: no value is seen min_count={min_count} times in the "
            f"{len(column)} rows; keeping all {len(values)} values (its OOV row stays untrained). "
            "Consider Hashed for such a column.", UserWarning, stacklevel=4)
        kept = [values[i] for i in order]
    if max_vocabulary is not None:
        kept = kept[:max_vocabulary]
    if column.dtype.kind in "iu":
        return tuple(int(v) for v in kept)
    return tuple(str(v) for v in kept)


def as_feature_spec(features: FeatureSpec | abc.Sequence[Feature] | dict) -> FeatureSpec:
    if isinstance(features, FeatureSpec):
        return features
    if isinstance(features, dict):
        return FeatureSpec.from_config(features)
    return FeatureSpec(features)
