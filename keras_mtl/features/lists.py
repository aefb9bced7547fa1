"""Rows of lists: padded id lists (`Sequence`, `MultiValued`) and fixed-width vectors (`Vector`).

The one place that turns DataFrame cells (lists, tuples, 1-D arrays), nested Python lists or 2-D
arrays into the arrays a model takes, shared by `FeatureSpec.adapt`, `keras_mtl.data` (training)
and `keras_mtl.serving.ServingClient` (requests), so that training rows and serving requests are
padded, truncated and refused by the same rules. Pure numpy: nothing here touches TensorFlow.

Layout of an id list input: int64 `[batch, max_length]`; row `i` holds the row's first
`max_length` ids (for a `Sequence`: the most recent first, so truncation keeps the most recent),
then `PADDING` (-1) up to `max_length`. `PADDING` is never an id: the model masks it, so it reaches
no embedding row. A missing cell (None, NaN, pd.NA) is an empty list: no history.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

# The padding value of id lists: masked in the model, so it never selects (or trains) a row.
PADDING = -1
# What a truncated id list keeps: its first `max_length` ids (the most recent, for a `Sequence`).
TRUNCATION = "keep_first"

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_LIMIT = 2 ** 63


def is_missing_cell(value: Any) -> bool:
    """None, NaN, pd.NA or NaT: a cell with no value (not a list holding NaN)."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return value is pd.NA or value is pd.NaT


def is_list_cell(value: Any) -> bool:
    """A list, tuple or 1-D numpy array: what an id-list or vector cell may be."""
    return isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _rows(values) -> tuple[np.ndarray | None, list | None]:
    """`values` as a 2-D array (already rectangular) or as a list of cells, never both."""
    if hasattr(values, "to_numpy"):  # a pandas Series: its cells
        values = values.to_numpy(dtype=object) if values.dtype.kind == "O" else values.to_numpy()
    if isinstance(values, np.ndarray):
        if values.ndim == 2:
            return values, None
        return (None, list(values)) if values.ndim == 1 else (None, None)
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return None, list(values)
    return None, None


def _row_label(index: Sequence | None, i: int):
    """Row `i`'s label (the DataFrame's index label), as a plain Python value for messages."""
    label = index[i] if index is not None and i < len(index) else i
    return label.item() if isinstance(label, np.generic) else label


def id_list_array(values, what: str, max_length: int, index: Sequence | None = None) -> np.ndarray:
    """Rows of integer ids as int64 `[rows, max_length]`, padded with `PADDING`, truncated to the
    first `max_length` ids.

    Args:
        values: a pandas Series of list cells, a list of lists, an object array of cells, or a 2-D
            integer array (rows already padded with `PADDING`; wider ones are truncated).
        what: how errors name the input, e.g. "Sequence feature 'hist_item_ids'".
        max_length: the feature's cap.
        index: row labels for errors (the DataFrame's index); positions otherwise.

    Raises:
        ValueError: naming `what`, the row and what was expected, for a cell that is not a list (a
            scalar, a string, a nested list), an id that is not an integer, or one beyond int64.
    """
    expected = (f"a list (or 1-D array) of integer ids, at most {max_length} kept (the first ones), "
                f"{PADDING} marks padding")
    matrix, cells = _rows(values)
    if matrix is not None:
        return _id_matrix(matrix, what, max_length, index, expected)
    if cells is None:
        raise ValueError(f"{what}: expected one cell per row, each {expected}; got "
                         f"{type(values).__name__} {values!r:.80}.")
    out = np.full((len(cells), max_length), PADDING, np.int64)
    for i, cell in enumerate(cells):
        if is_missing_cell(cell):
            continue  # no ids: an all-padding row, which pools to zeros
        if not is_list_cell(cell):
            raise ValueError(f"{what} at row {_row_label(index, i)!r}: got {type(cell).__name__} "
                             f"{cell!r:.80}; expected {expected}.")
        ids = _integer_ids(cell, what, _row_label(index, i), expected)
        kept = ids[:max_length]
        out[i, :len(kept)] = kept
    return out


def _integer_ids(cell, what: str, row, expected: str) -> np.ndarray:
    array = cell if isinstance(cell, np.ndarray) else np.asarray(cell)
    if array.dtype.kind not in "iuf" and not isinstance(cell, np.ndarray):
        array = np.asarray(cell, dtype=object)  # keep each element's own type for the message
    if array.ndim != 1:
        raise ValueError(f"{what} at row {row!r}: got a nested list of shape {list(array.shape)}; "
                         f"expected {expected}.")
    kind = array.dtype.kind
    if kind in "iu":
        if kind == "u" and len(array) and array.max() >= _INT64_LIMIT:
            raise ValueError(f"{what} at row {row!r}: id {int(array.max())} is beyond int64.")
        return array.astype(np.int64)
    if kind == "f":
        integral = np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < _INT64_LIMIT)
        if not integral.all():
            bad = float(array[np.argmax(~integral)])
            raise ValueError(f"{what} at row {row!r}: id {bad!r} is not an integer; expected "
                             f"{expected} (ids are not rounded).")
        return array.astype(np.int64)
    ids = []
    for value in array:
        value = value.item() if isinstance(value, np.generic) else value
        integral = (isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)) \
            or (isinstance(value, float | np.floating) and math.isfinite(value)
                and float(value).is_integer())
        if not integral:
            raise ValueError(f"{what} at row {row!r}: id {value!r} ({type(value).__name__}) is not "
                             f"an integer; expected {expected}.")
        if abs(int(value)) >= _INT64_LIMIT:
            raise ValueError(f"{what} at row {row!r}: id {value!r} is beyond int64.")
        ids.append(int(value))
    return np.asarray(ids, dtype=np.int64)


def _id_matrix(matrix: np.ndarray, what: str, max_length: int, index, expected: str) -> np.ndarray:
    if matrix.dtype.kind == "O":  # a 2-D object array: check each row as a cell
        return id_list_array(list(matrix), what, max_length, index)
    if matrix.dtype.kind not in "iuf":
        raise ValueError(f"{what}: got a {matrix.dtype} array; expected {expected}.")
    if matrix.dtype.kind == "i":
        values = matrix.astype(np.int64)
    elif len(matrix):  # unsigned or float: checked row by row (beyond int64, non-integral)
        values = np.stack([_integer_ids(row, what, _row_label(index, i), expected)
                           for i, row in enumerate(matrix)])
    else:
        values = np.zeros((0, matrix.shape[1]), np.int64)
    out = np.full((len(matrix), max_length), PADDING, np.int64)
    width = min(max_length, values.shape[1])
    out[:, :width] = values[:, :width]
    return out


def vector_array(values, what: str, dim: int, index: Sequence | None = None) -> np.ndarray:
    """Rows of `dim` floats as float32 `[rows, dim]`; every value must be finite.

    Non-finite values are refused rather than zeroed: in the model a NaN or inf component is
    replaced by 0 (so one bad request cannot poison a score), but in training data it would train
    the layers on a value the row never had.

    Args:
        values: a pandas Series of list/array cells, a list of lists, or a 2-D float array.
        what: how errors name the input, e.g. "Vector feature 'user_vec'".
        dim: the width every row must have.
        index: row labels for errors.

    Raises:
        ValueError: naming `what`, the row and the expected width, for a missing or non-list cell,
            a row of the wrong length, a non-numeric value, or a non-finite one (NaN, ±inf, or a
            magnitude beyond float32's range, which becomes inf once cast).
    """
    expected = f"a list (or 1-D array) of {dim} finite floats"
    matrix, cells = _rows(values)
    if matrix is None:
        if cells is None:
            raise ValueError(f"{what}: expected one cell per row, each {expected}; got "
                             f"{type(values).__name__} {values!r:.80}.")
        if dim == 1 and all(not is_list_cell(c) and not is_missing_cell(c) for c in cells):
            cells = [[c] for c in cells]  # a plain column is a width-1 vector
        matrix = np.zeros((len(cells), dim), np.float64)
        for i, cell in enumerate(cells):
            row = _row_label(index, i)
            if is_missing_cell(cell) or not is_list_cell(cell):
                raise ValueError(f"{what} at row {row!r}: got {type(cell).__name__} {cell!r:.80}; "
                                 f"expected {expected}.")
            if len(cell) != dim:
                raise ValueError(f"{what} at row {row!r}: got {len(cell)} values; expected {expected}.")
            try:
                matrix[i] = np.asarray(cell, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{what} at row {row!r}: got non-numeric values {cell!r:.80}; "
                                 f"expected {expected}.") from None
    else:
        if matrix.shape[1] != dim:
            raise ValueError(f"{what}: got rows of {matrix.shape[1]} values; expected {expected}.")
        try:
            matrix = matrix.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: got non-numeric values; expected {expected}.") from None
    bad = ~np.isfinite(matrix) | (np.abs(matrix) > _FLOAT32_MAX)
    if bad.any():
        rows = bad.any(axis=1)
        first = int(np.argmax(rows))
        column = int(np.argmax(bad[first]))
        raise ValueError(
            f"{what} at row {_row_label(index, first)!r}: value {float(matrix[first, column])!r} at "
            f"position {column} ({int(rows.sum())} of {len(matrix)} rows have non-finite values or "
            f"values beyond float32's range); expected {expected}. Fix or drop those rows.")
    return matrix.astype(np.float32)
