"""What `MultiTaskModel.fit` / `evaluate` / `predict` do to the data they are given.

Two things, both so that the compiled step sees only what XLA compiles and the user can pass
plain inputs:

- lookups move into the pipeline (`keras_mtl.features.lookups.LookupStage`): a `tf.data.Dataset`
  gets a `map` that replaces raw categorical values with table rows; a dict of arrays is looked up
  once, up front; a dataset or dict already looked up (`from_dataframe`'s) passes unchanged;
- a pandas DataFrame becomes the feature arrays of the spec (`feature_arrays`, with its checks
  naming column and row) and, when no labels are given and it holds every task's column, the
  labels too (`label_arrays`).

Anything else (a generator, a `keras.utils.PyDataset`) passes unchanged; a raw categorical value
that reaches a compiled step from there is refused by the model with the feature's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import tensorflow as tf

from keras_mtl.data.dataframe import feature_arrays, label_arrays
from keras_mtl.features.lookups import LookupStage
from keras_mtl.tasks import Task


def with_lookups(data, stage: LookupStage):
    """`data` (a dataset, a dict of feature arrays, or a tuple `(x, y[, w])` whose `x` is one)
    with the stage's lookups applied to its features; other inputs unchanged (DataFrames are
    `plain_inputs`' and `validation_inputs`')."""
    if isinstance(data, tf.data.Dataset):
        return _mapped(data, stage)
    if isinstance(data, Mapping):
        return stage(data) if stage.pending(data) else data
    if isinstance(data, tuple | list) and data and isinstance(data[0], Mapping):
        return (with_lookups(data[0], stage), *data[1:])
    return data


def _mapped(dataset: tf.data.Dataset, stage: LookupStage) -> tf.data.Dataset:
    spec = dataset.element_spec
    features = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(features, Mapping) or not stage.pending(features):
        return dataset

    def look_up(*element):
        if len(element) == 1:
            return stage(element[0])
        return (stage(element[0]), *element[1:])

    # Batch-wise, in parallel with the step; deterministic so that a seeded pipeline stays seeded.
    return dataset.map(look_up, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def validation_inputs(data, stage: LookupStage, tasks: Sequence[Task]):
    """`fit(validation_data=...)`: a DataFrame becomes `(features, labels)` (its task columns), a
    `(DataFrame, y[, w])` tuple its features, and lookups move out of the step as for the
    training data."""
    if isinstance(data, pd.DataFrame):
        return plain_inputs(data, None, stage, tasks)
    if isinstance(data, tuple | list) and data and isinstance(data[0], pd.DataFrame):
        x, y = plain_inputs(data[0], data[1] if len(data) > 1 else None, stage, tasks)
        return (x, y, *data[2:])
    return with_lookups(data, stage)


def plain_inputs(x, y, stage: LookupStage, tasks: Sequence[Task]):
    """`(x, y)` for Keras: a DataFrame `x` as the spec's feature arrays (and, with `y=None` and
    every task's column present, its labels), then lookups moved out of the step."""
    if isinstance(x, pd.DataFrame):
        frame = x
        x = feature_arrays(frame, stage.spec)
        if y is None and tasks and all(task.name in frame.columns for task in tasks):
            y = label_arrays(frame, tasks)
    return with_lookups(x, stage), y
