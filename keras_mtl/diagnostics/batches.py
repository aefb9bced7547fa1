"""Labelled batches for the diagnostics, from whatever `fit` takes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.data import plain_inputs


def labelled_batches(model, x, y, sample_weight, caller: str,
                     rows: Callable[[int], Iterable[np.ndarray]],
                     max_batches: int | None = None) -> Iterator[tuple]:
    """`(x, y, sample_weight)` batches: a `tf.data.Dataset`'s own `(x, y[, sample_weight])`
    batches (its first `max_batches` when given); from a DataFrame (labels from its task columns
    when `y` is None) or arrays with `y`, one batch per index array that `rows(number of rows)`
    yields. `caller` names the function in the error for missing labels."""
    if isinstance(x, tf.data.Dataset):
        for batch in x if max_batches is None else x.take(max_batches):
            yield keras.utils.unpack_x_y_sample_weight(batch)
        return
    x, y = plain_inputs(x, y, model.encoder.lookup_stage, model.tasks)
    if y is None:
        raise ValueError(f"{caller} needs labels: y, or a DataFrame with the task columns.")
    for index in rows(len(next(iter(tf.nest.flatten(x))))):
        def pick(value, index=index):
            return None if value is None else tf.gather(tf.convert_to_tensor(value), index)

        weights = None if sample_weight is None else tf.nest.map_structure(pick, sample_weight)
        yield tf.nest.map_structure(pick, x), tf.nest.map_structure(pick, y), weights
