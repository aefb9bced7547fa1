"""pandas DataFrame → `tf.data` pipelines of `(features, labels)`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_mtl.features.lists import id_list_array, vector_array
from keras_mtl.features.lookups import LookupStage
from keras_mtl.features.spec import (
    FeatureSpec,
    IdList,
    Numeric,
    Vector,
    as_feature_spec,
    check_numeric_values,
    string_values,
)
from keras_mtl.tasks import Task, kinds, validate_tasks


def feature_arrays(frame: pd.DataFrame, features,
                   converted: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The columns of `frame` named by the spec, as arrays of the spec's dtypes and shapes.

    Scalar features are `[rows]`. `Sequence`/`MultiValued` columns hold a list, tuple or 1-D
    array of integer ids per row (None/NaN: no ids) and become int64 `[rows, max_length]`, padded
    with `keras_mtl.features.PADDING` (-1) and truncated to each row's first `max_length` ids.
    `Vector` columns hold `dim` finite floats per row and become float32 `[rows, dim]`. A cell that
    is not a list, an id that is not an integer, or a vector of the wrong width or with a
    non-finite value is an error naming the feature, the row (index label) and what was expected.
    `converted`: columns already in that form, used as they are.
    """
    spec = as_feature_spec(features)
    arrays = {}
    for feature in spec:
        if converted and feature.name in converted:  # e.g. id lists padded straight from Arrow
            arrays[feature.name] = converted[feature.name]
            continue
        if feature.name not in frame.columns:
            raise KeyError(
                f"Feature {feature.name!r} ({feature.dtype}) is not a column of the DataFrame; "
                f"columns: {list(frame.columns)}."
            )
        column = frame[feature.name]
        if feature.dtype == "string":
            arrays[feature.name] = string_values(column)
        elif isinstance(feature, IdList):
            arrays[feature.name] = id_list_array(
                column, f"{type(feature).__name__} feature {feature.name!r}", feature.max_length,
                column.index)
        elif isinstance(feature, Vector):
            arrays[feature.name] = vector_array(column, f"Vector feature {feature.name!r}",
                                                feature.dim, column.index)
        elif isinstance(feature, Numeric):
            arrays[feature.name] = _float_column(column, f"Numeric feature {feature.name!r}",
                                                 finite=True)
        else:
            arrays[feature.name] = _integer_column(column, f"Integer feature {feature.name!r}")
    return arrays


def label_arrays(frame: pd.DataFrame, tasks: Sequence[Task],
                 warn_unlabelled: bool = True) -> dict[str, np.ndarray]:
    """Each task's label column as float32; missing labels stay NaN (they are masked in training).
    `warn_unlabelled`: warn when a task has no label in any row (off for a streamed file's chunks,
    where that is ordinary)."""
    arrays = {}
    for task in validate_tasks(tasks):
        if task.name not in frame.columns:
            raise KeyError(
                f"Task {task.name!r} has no label column in the DataFrame; columns: "
                f"{list(frame.columns)}."
            )
        values = _float_column(frame[task.name], f"Label column {task.name!r}")
        present = ~np.isnan(values)
        if task.missing_value is not None:
            present &= values != task.missing_value
        if warn_unlabelled and len(values) and not present.any():
            warnings.warn(
                f"Task {task.name!r} has no label in any of the {len(values)} rows (every value is "
                "missing): it contributes nothing to training on these data.",
                UserWarning, stacklevel=3,
            )
        invalid = kinds.invalid_labels(task, tf.constant(values), tf.constant(present)).numpy()
        if invalid.any():
            row = frame.index[np.argmax(invalid)]
            raise ValueError(
                f"{task.kind.capitalize()} task {task.name!r} has label "
                f"{float(values[invalid][0])!r} at row {row!r}; expected "
                f"{kinds.label_expectation(task)} (NaN marks a missing label)."
            )
        arrays[task.name] = values
    return arrays


def from_dataframe(
    frame: pd.DataFrame,
    features: FeatureSpec | Sequence,
    tasks: Sequence[Task],
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int | None = None,
    sample_weight: str | None = None,
    lookups: bool = True,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(features, labels[, sample_weight])` from a DataFrame.

    Columns are checked against the spec and tasks first, so a typo fails here with the column's
    name rather than deep inside a traced step. `shuffle=True` reshuffles every epoch with `seed`.

    `lookups=True` (default): categorical and hashed features arrive as table rows under
    `row_key(name)` (`keras_mtl.features.lookups`), looked up once for the whole frame, so the
    model's training step has no lookup table in it and compiles with XLA. `False` keeps the raw
    values (e.g. to feed an exported serving signature); the model looks them up itself then.
    """
    columns = dataframe_columns(frame, features, tasks, sample_weight, lookups=lookups)
    return batched_columns(columns, batch_size, shuffle=shuffle, seed=seed)


def dataframe_columns(frame: pd.DataFrame, features: FeatureSpec | Sequence,
                      tasks: Sequence[Task], sample_weight: str | None = None,
                      lookups: bool = True) -> tuple:
    """`(features, labels[, sample_weight])` of a whole DataFrame as tensors, checked as in
    `from_dataframe` (and with its `lookups`); `batched_columns` batches them. Callers that build
    many datasets from one frame convert it once (about a second on Census-Income)."""
    arrays = feature_arrays(frame, features)
    if lookups:
        arrays = LookupStage(features)(arrays)
    elements = (arrays, label_arrays(frame, tasks))
    if sample_weight is not None:
        if sample_weight not in frame.columns:
            raise KeyError(f"Sample weight column {sample_weight!r} is not in the DataFrame.")
        elements += (frame[sample_weight].to_numpy(dtype=np.float32),)
    return tf.nest.map_structure(tf.convert_to_tensor, elements)


def batched_columns(columns, batch_size: int, shuffle: bool = False,
                    seed: int | None = None) -> tf.data.Dataset:
    """`from_dataframe`'s batching of `dataframe_columns` output (a nest of tensors with the rows
    along axis 0)."""
    # Shuffle row indices and gather whole batches: shuffling the rows themselves copies every
    # string feature through the shuffle buffer one row at a time, which on Census-Income took
    # longer than the training step it fed.
    num_rows = int(tf.nest.flatten(columns)[0].shape[0])
    indices = tf.data.Dataset.range(num_rows)
    if shuffle:
        indices = indices.shuffle(num_rows, seed=seed, reshuffle_each_iteration=True)
    dataset = indices.batch(batch_size).map(
        lambda rows: tf.nest.map_structure(lambda column: tf.gather(column, rows), columns),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _float_column(column: pd.Series, what: str, finite: bool = False) -> np.ndarray:
    """float32 values; missing ones stay NaN; anything else non-numeric is an error naming it.

    `finite=True` also refuses ±inf and values beyond float32's range (checked in float64, before
    the cast would turn them into inf): one of them makes its whole batch's loss non-finite, and the
    step is skipped every epoch.
    """
    if column.dtype.kind in "fiub":  # already numbers (NaN: missing): nothing to parse
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numeric = pd.to_numeric(column, errors="coerce")
        bad = column[numeric.isna() & column.notna()]
        if len(bad):
            raise ValueError(f"{what} has non-numeric value {bad.iloc[0]!r} (row {bad.index[0]!r}).")
        values = numeric.to_numpy(dtype=np.float64)
    if finite:
        check_numeric_values(what, values, column.index)
    return values.astype(np.float32)


def _integer_column(column: pd.Series, what: str) -> np.ndarray:
    """int64 values of an id/code column; a missing, non-numeric or non-integral value is an error.

    A float such as 7.9 is refused rather than truncated to 7: it would silently share an embedding
    row with id 7, and usually means the column is not what the spec says.
    """
    if column.isna().any():
        row = column.index[column.isna()][0]
        raise ValueError(f"{what} has a missing value (row {row!r}).")
    if column.dtype.kind in "iub":
        return column.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(column, errors="coerce")
    bad = column[numeric.isna()]
    if len(bad):
        raise ValueError(f"{what} has non-integer value {bad.iloc[0]!r} (row {bad.index[0]!r}).")
    if numeric.dtype.kind in "iu":
        return numeric.to_numpy(dtype=np.int64)
    values = numeric.to_numpy(dtype=np.float64)
    integral = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0 ** 63)
    if not integral.all():
        first = int(np.argmax(~integral))
        raise ValueError(
            f"{what} has non-integral value {float(values[first])!r} at row {column.index[first]!r} "
            f"({int((~integral).sum())} of {len(values)} rows); expected whole numbers (ids are not "
            "rounded or truncated: fix the column, or declare it Numeric if it is a quantity)."
        )
    return values.astype(np.int64)
