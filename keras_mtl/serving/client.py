"""Client side of an export: TF Serving REST bodies and gRPC requests from pandas, answers back.

`ServingClient.from_export(path)` reads the contract `export` wrote next to the SavedModel and
applies it to every request, so that what reaches the server is what the model was trained on:
the signature's names and dtypes, `[batch]` columns of one length, no label columns, and missing
values encoded the way `keras_mtl.data.from_dataframe` encoded them in training (a missing string
is "", a missing numeric NaN). TF Serving itself checks little of this — a `None` user id sent as
"None" is a valid string that hashes to another embedding row — so the client refuses or fixes
each case before anything is sent, and its errors name the feature.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from keras_mtl.features.lists import (
    PADDING,
    TRUNCATION,
    id_list_array,
    is_list_cell,
    is_missing_cell,
    vector_array,
)
from keras_mtl.optional import require
from keras_mtl.serving.contract import (
    DEFAULT_SIGNATURE,
    EXPONENTS_INPUT,
    EXPONENTS_SIGNATURE,
    MISSING_EMPTY_LIST,
    MISSING_EMPTY_STRING,
    MISSING_NAN,
    MISSING_REFUSED,
    read_contract,
    resolve_version_path,
)

# What a request's rows may be: a DataFrame, a mapping of feature name → column, or row mappings.
Rows = pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]
# Per-request score exponents: task → exponent, K values in task order, or a [1 or batch, K] array.
Exponents = Mapping[str, float] | Sequence[float] | Sequence[Sequence[float]] | np.ndarray
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_LIMIT = 2.0 ** 63


class ServingClient:
    """Builds TF Serving requests for one exported model and reads its answers.

    Every request goes through the exported contract (`assets.extra/keras_mtl_signature.json`):

    - names: missing required features are an error naming them; other columns (labels, ids kept
      for joining) are dropped with a warning naming them;
    - dtypes: safe casts only (float64 → float32, int32 → int64, integral floats → int64); strings
      into a numeric input, numbers into a string input, or 7.5 into an integer input are errors
      naming the feature and the row;
    - shapes: `[batch]` columns, `[batch, 1]` squeezed, anything else refused; all columns of one
      length; id lists (`Sequence`, `MultiValued`: a list of integer ids per row, or a 2-D array)
      padded with the contract's `padding` (-1) and cut to their first `max_length` ids, a missing
      list sent as an empty one; vectors (a list of `dim` floats per row, or a `[batch, dim]`
      array) of any other width, or with a non-finite value, refused naming the feature and row;
    - missing values (None, NaN, pd.NA): "" for string features and NaN for numeric ones, as in
      training; integer inputs and inputs a score transform reads refuse them.
    - `score_exponents` (the `score_with_exponents` signature): finite, non-negative, one per task.

    Use `ServingClient.from_export(path)`; the constructor takes a contract dict as `read_contract`
    returns it.
    """

    def __init__(self, contract: Mapping[str, Any], model_name: str | None = None,
                 version: int | None = None, path: str | None = None):
        if "inputs" not in contract or not isinstance(contract["inputs"], Mapping):
            raise ValueError("A serving contract needs an 'inputs' mapping of name → dtype (what "
                             "keras_mtl.serving.read_contract returns).")
        self.contract: dict[str, Any] = dict(contract)
        self.model_name = model_name
        self.version = version
        self.path = path
        self.features: dict[str, dict] = _feature_entries(contract)
        self.tasks: list[str] = list(contract.get("tasks", []))
        self.exponents: list[float] = [float(w) for w in contract.get("exponents", [])]
        self.outputs: list[str] = list(contract.get(
            "outputs", [*self.tasks, *contract.get("extra_outputs", []), "score"]))
        self.signatures: dict[str, list[str]] = {
            name: list(entry["inputs"]) for name, entry in contract.get("signatures", {
                DEFAULT_SIGNATURE: {"inputs": list(self.features)},
                EXPONENTS_SIGNATURE: {"inputs": [*self.features, EXPONENTS_INPUT]},
            }).items()}

    @classmethod
    def from_export(cls, path: str, model_name: str | None = None) -> ServingClient:
        """The client of what `keras_mtl.serving.export` wrote.

        `path` is a version folder (`saved_models/census/3`) or a model base path
        (`saved_models/census`, resolved to its newest version, the one TF Serving serves by
        default). `model_name` (for gRPC requests) defaults to the base folder's name, which is
        what `--model_name` usually is.
        """
        version_path, version = resolve_version_path(path)
        if model_name is None and version is not None:
            model_name = _basename(_dirname(version_path))
        return cls(read_contract(version_path), model_name=model_name, version=version,
                   path=version_path)

    def __repr__(self) -> str:
        return (f"ServingClient(model_name={self.model_name!r}, version={self.version!r}, "
                f"inputs={ {n: e['dtype'] for n, e in self.features.items()} })")

    @property
    def input_names(self) -> list[str]:
        return list(self.features)

    def prepare(self, rows: Rows) -> dict[str, np.ndarray]:
        """The checked, encoded columns a request will carry: one array per input, in the
        contract's order, with the signature's dtype (`object` arrays of `str` for strings) and
        shape (`[batch]`; `[batch, max_length]` int64 for id lists, `[batch, dim]` for vectors)."""
        columns, index = _raw_columns(rows)
        missing = [name for name in self.features if name not in columns]
        if missing:
            raise KeyError(f"Missing required feature(s) {missing}; the model's serving signature "
                           f"takes {self._dtypes()}.")
        dropped = [name for name in columns if name not in self.features]
        if dropped:
            warnings.warn(f"Dropping column(s) {dropped}: not inputs of the serving signature "
                          f"(labels or other columns); it takes {list(self.features)}.",
                          UserWarning, stacklevel=3)
        # Lists and vectors are checked and encoded as they are shaped (their cells are the rows).
        arrays = {name: _list_encoded(name, columns[name], self.features[name], index)
                  if self.features[name].get("shape") else _shaped(name, columns[name])
                  for name in self.features}
        lengths = {name: len(values) for name, values in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Input columns have different lengths {lengths}; every feature needs "
                             "one value per row.")
        if index is None or len(index) != next(iter(lengths.values()), 0):
            index = range(next(iter(lengths.values()), 0))
        return {name: arrays[name] if entry.get("shape") else
                _encoded(name, arrays[name], entry, index)
                for name, entry in self.features.items()}

    def score_exponents(self, exponents: Exponents, num_rows: int) -> np.ndarray:
        """`score_exponents` as the signature takes them, float32 `[1 or num_rows, K]`.

        Accepts a mapping task → exponent (tasks left out keep the exported exponent), K values in
        task order, or a `[1 or num_rows, K]` array.
        """
        k = len(self.tasks)
        what = f"{EXPONENTS_INPUT} (one exponent per task {self.tasks}, [1 or {num_rows}, {k}])"
        if isinstance(exponents, Mapping):
            unknown = sorted(set(exponents) - set(self.tasks))
            if unknown:
                raise ValueError(f"{what}: unknown task(s) {unknown}.")
            defaults = self.exponents or [1.0] * k
            exponents = [[exponents.get(t, defaults[i]) for i, t in enumerate(self.tasks)]]
        try:
            values = np.asarray(exponents, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: must be numbers, got {exponents!r}.") from None
        if values.ndim == 1:
            values = values[None, :]
        if values.ndim != 2 or values.shape[1] != k or values.shape[0] not in (1, num_rows):
            raise ValueError(f"{what}: got shape {list(np.shape(exponents))}.")
        if not np.isfinite(values).all():
            raise ValueError(f"{what}: must be finite, got {values.tolist()} (NaN or inf would "
                             "make the score NaN).")
        if (values < 0).any():
            raise ValueError(f"{what}: must be non-negative, got {values.tolist()} (a negative "
                             "exponent pushes the score above 1).")
        return values.astype(np.float32)

    def _signature(self, signature_name: str | None, score_exponents: Exponents | None) -> str:
        if signature_name is None:
            signature_name = DEFAULT_SIGNATURE if score_exponents is None else EXPONENTS_SIGNATURE
        if signature_name not in self.signatures:
            raise ValueError(f"Unknown signature {signature_name!r}; the export has "
                             f"{sorted(self.signatures)}.")
        takes_exponents = EXPONENTS_INPUT in self.signatures[signature_name]
        if takes_exponents and score_exponents is None:
            raise ValueError(f"Signature {signature_name!r} takes {EXPONENTS_INPUT}: pass "
                             "score_exponents=.")
        if score_exponents is not None and not takes_exponents:
            raise ValueError(f"Signature {signature_name!r} takes no {EXPONENTS_INPUT}; use "
                             f"{EXPONENTS_SIGNATURE!r}.")
        return signature_name

    def rest_body(self, rows: Rows, format: str = "instances", signature_name: str | None = None,
                  score_exponents: Exponents | None = None) -> dict:
        """The JSON body of a TF Serving REST `:predict` call.

        `format="instances"` is the row format (one object per candidate), `"inputs"` the columnar
        one. `score_exponents` (see `score_exponents`) selects the `score_with_exponents`
        signature. A missing numeric value is sent as NaN, which `json.dumps` writes as `NaN`:
        TF Serving's JSON parser accepts it (strict encoders, e.g. `allow_nan=False`, do not).
        """
        if format not in ("instances", "inputs"):
            raise ValueError(f"format must be 'instances' or 'inputs', got {format!r}.")
        signature_name = self._signature(signature_name, score_exponents)
        columns = self.prepare(rows)
        num_rows = len(next(iter(columns.values())))
        lists = {name: values.tolist() for name, values in columns.items()}
        if score_exponents is not None:
            exponents = self.score_exponents(score_exponents, num_rows)
            if format == "instances":
                exponents = np.broadcast_to(exponents, (num_rows, exponents.shape[1]))
            lists[EXPONENTS_INPUT] = exponents.tolist()
        body: dict = {}
        if signature_name != DEFAULT_SIGNATURE:
            body["signature_name"] = signature_name
        if format == "instances":
            if num_rows == 0:
                raise ValueError("No rows: the row format cannot carry an empty batch.")
            body["instances"] = [{name: values[i] for name, values in lists.items()}
                                 for i in range(num_rows)]
        else:
            body["inputs"] = lists
        return body

    def grpc_request(self, rows: Rows, model_name: str | None = None,
                     signature_name: str | None = None, version: int | None = None,
                     score_exponents: Exponents | None = None):
        """A `tensorflow_serving.apis.predict_pb2.PredictRequest` (needs `keras_mtl[serving]`).

        `model_name` defaults to the export's base folder name; `version` pins a version (default:
        whatever the server serves).
        """
        import tensorflow as tf

        predict_pb2 = require("tensorflow_serving.apis.predict_pb2", "serving",
                              "ServingClient.grpc_request")

        model_name = model_name or self.model_name
        if not model_name:
            raise ValueError("grpc_request needs model_name= (the server's --model_name).")
        signature_name = self._signature(signature_name, score_exponents)
        columns = self.prepare(rows)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, values in columns.items():
            if self.features[name]["dtype"] == "string":
                proto = tf.make_tensor_proto([v.encode() for v in values], dtype=tf.string,
                                             shape=[len(values)])
            else:
                proto = tf.make_tensor_proto(values)
            request.inputs[name].CopyFrom(proto)
        if score_exponents is not None:
            num_rows = len(next(iter(columns.values())))
            request.inputs[EXPONENTS_INPUT].CopyFrom(
                tf.make_tensor_proto(self.score_exponents(score_exponents, num_rows)))
        return request

    def parse_rest_response(self, response: Mapping) -> pd.DataFrame:
        """A `:predict` answer as a DataFrame with one column per output, in the contract's order;
        an `{"error": ...}` answer raises with the server's message."""
        return self._checked_outputs(parse_rest_response(response))

    def parse_grpc_response(self, response) -> pd.DataFrame:
        """A `PredictResponse` as a DataFrame with one column per output, in the contract's order."""
        return self._checked_outputs(parse_grpc_response(response))

    def _checked_outputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [name for name in self.outputs if name not in frame.columns]
        if missing:
            raise ValueError(f"The answer lacks output(s) {missing}: expected {self.outputs}, got "
                             f"{list(frame.columns)} (another model or version?).")
        return frame[self.outputs]

    def _dtypes(self) -> dict[str, str]:
        return {name: entry["dtype"] for name, entry in self.features.items()}


def _feature_entries(contract: Mapping[str, Any]) -> dict[str, dict]:
    """Per-input entries; a contract written before per-feature entries existed gets the
    encodings training uses for its dtypes."""
    if "features" in contract:
        return {name: dict(entry) for name, entry in contract["features"].items()}
    defaults = {"string": MISSING_EMPTY_STRING, "float32": MISSING_NAN, "int64": MISSING_REFUSED}
    return {name: {"dtype": dtype, "kind": "unknown", "missing": defaults[dtype]}
            for name, dtype in contract["inputs"].items()}


def _basename(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def _dirname(path: str) -> str:
    return os.path.dirname(os.path.normpath(path))


def _raw_columns(rows: Rows) -> tuple[dict[str, Any], Sequence | None]:
    """Columns of a DataFrame, a mapping of name → values, or a list of row mappings, and the row
    labels to name in errors."""
    if isinstance(rows, Sequence) and not isinstance(rows, str) and rows \
            and all(isinstance(r, Mapping) for r in rows):
        rows = pd.DataFrame(list(rows))
    if isinstance(rows, pd.DataFrame):
        return {name: rows[name] for name in rows.columns}, list(rows.index)
    if isinstance(rows, Mapping):
        return dict(rows), None
    raise TypeError(f"Rows must be a DataFrame, a mapping of feature name → column, or a list of "
                    f"row mappings; got {type(rows).__name__}.")


def _shaped(name: str, values) -> np.ndarray:
    """`values` as a 1-D array: `[batch, 1]` squeezed; scalars and other shapes refused."""
    if isinstance(values, pd.Series):
        # Extension dtypes (nullable Int64, pandas' str, category) go through object arrays so
        # that pd.NA and NaN stay recognisable as missing.
        plain = isinstance(values.dtype, np.dtype) and values.dtype.kind in "iufbUS"
        array = values.to_numpy() if plain else values.to_numpy(dtype=object)
    else:
        try:
            array = np.asarray(values)
        except ValueError:
            raise ValueError(f"Input {name!r} must be a [batch] column; got ragged nested "
                             "values.") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"Input {name!r} must have shape [batch] or [batch, 1], got "
                         f"{list(array.shape)}.")
    return array


def _list_encoded(name: str, values, entry: Mapping, index: Sequence | None) -> np.ndarray:
    """An id-list or vector input as the signature takes it (see `keras_mtl.features.lists`)."""
    shape = list(entry["shape"])
    what = (f"Input {name!r} ({entry.get('kind', 'unknown')} feature, {entry['dtype']} "
            f"[batch, {shape[0]}])")
    if len(shape) != 1:
        raise ValueError(f"{what}: the contract's shape {shape} is not one list per row.")
    if "padding" in entry:
        if int(entry["padding"]) != PADDING or entry.get("truncation", TRUNCATION) != TRUNCATION:
            raise ValueError(f"{what}: the contract pads with {entry['padding']!r} and truncates "
                             f"{entry.get('truncation')!r}; this client pads with {PADDING} and "
                             f"keeps the first ids ({TRUNCATION!r}). Use a matching keras_mtl.")
        return id_list_array(values, what, int(entry.get("max_length", shape[0])), index)
    return vector_array(values, what, int(shape[0]), index)


def _plain(value):
    """A numpy scalar as the Python value it holds, for readable messages."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real | np.bool_) and not isinstance(value, str | bytes)


def _encoded(name: str, values: np.ndarray, entry: Mapping, index: Sequence) -> np.ndarray:
    """One column in the signature's dtype, missing values encoded as the contract says."""
    dtype, missing = entry["dtype"], entry.get("missing", MISSING_REFUSED)
    what = f"{name!r} ({entry.get('kind', 'unknown')} feature, {dtype})"

    def fail(i: int, problem: str, error: type[Exception] = ValueError):
        raise error(f"Input {what} at row {index[i]!r}: {problem}.")

    def refuse_missing(i: int):
        why = (f"the score transform {entry['score_transform']!r} would make the score NaN"
               if "score_transform" in entry else
               "training has no encoding for a missing value here")
        fail(i, f"missing value ({_plain(values[i])!r}); {why}")

    kind = values.dtype.kind
    if dtype == "string":
        if kind == "f" and np.isnan(values).all():
            values = values.astype(object)  # an all-missing column: pandas makes it float NaN
        elif kind not in "OUS":
            raise TypeError(f"Input {name!r} must be strings ({entry.get('kind', 'unknown')} "
                            f"feature), got {values.dtype} (row {index[0]!r}: {_plain(values[0])!r}); "
                            "convert explicitly.")
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            if _is_missing(value):
                if missing != MISSING_EMPTY_STRING:
                    refuse_missing(i)
                out[i] = ""
            elif isinstance(value, bytes | np.bytes_):
                out[i] = bytes(value).decode()
            elif isinstance(value, str | np.str_) or _is_number(value):
                out[i] = str(value)  # what training's `string_values` does with a number
            else:
                fail(i, f"expected a string, got {type(value).__name__} {value!r}")
        return out

    if kind not in "iufbO":
        fail(0, f"expected {dtype} numbers, got {values.dtype} values such as {_plain(values[0])!r}",
             TypeError)
    if kind == "O" and dtype == "int64":
        integers = []
        for i, value in enumerate(values):
            if _is_missing(value):
                refuse_missing(i)
            integral = isinstance(value, numbers.Integral | np.bool_) or (
                _is_number(value) and math.isfinite(value) and float(value).is_integer())
            if not integral:
                fail(i, f"expected an integer, got {type(value).__name__} {value!r}")
            if abs(int(value)) >= 2 ** 63:
                fail(i, f"{value!r} is out of the int64 range")
            integers.append(int(value))
        return np.asarray(integers, dtype=np.int64)
    if kind == "O":
        floats = np.empty(len(values), dtype=np.float64)
        for i, value in enumerate(values):
            if _is_missing(value):
                floats[i] = np.nan
            elif _is_number(value):
                floats[i] = float(value)
            else:
                fail(i, f"expected a number, got {type(value).__name__} {value!r}", TypeError)
        values, kind = floats, "f"
    if dtype == "int64":
        if kind in "iub":
            if kind == "u" and len(values) and values.max() >= 2 ** 63:
                fail(int(np.argmax(values)), "out of the int64 range")
            return values.astype(np.int64)
        for i in np.flatnonzero(np.isnan(values)):
            refuse_missing(int(i))
        bad = np.flatnonzero((values != np.round(values)) | (np.abs(values) >= _INT64_LIMIT))
        if len(bad):
            fail(int(bad[0]), f"expected an integer, got {float(values[bad[0]])!r}")
        return values.astype(np.int64)
    # float32
    values = values.astype(np.float64)
    if missing != MISSING_NAN:
        for i in np.flatnonzero(np.isnan(values)):
            refuse_missing(int(i))
    infinite = np.flatnonzero(np.isinf(values) | (np.abs(values) > _FLOAT32_MAX))
    if len(infinite):
        fail(int(infinite[0]), f"{float(values[infinite[0]])!r} is not a finite float32")
    return values.astype(np.float32)


def as_client(contract: ServingClient | Mapping[str, Any]) -> ServingClient:
    """A `ServingClient` from a client, a contract dict (`read_contract`) or its `["inputs"]`."""
    if isinstance(contract, ServingClient):
        return contract
    if isinstance(contract, Mapping):
        if isinstance(contract.get("inputs"), Mapping):
            return ServingClient(contract)
        return ServingClient({"inputs": dict(contract)})
    raise TypeError(f"contract must be a ServingClient, the dict read_contract returns, or its "
                    f"['inputs']; got {type(contract).__name__}.")


def _inferred_client(rows) -> ServingClient:
    """A client for rows without a contract: dtypes from the values (every keras_mtl signature
    input is string, int64 or float32), so the shape, length and missing-value rules still apply;
    names and labels cannot be checked."""
    columns, _ = _raw_columns(rows)
    inputs, lists = {}, {}
    for name, values in columns.items():
        entry = _inferred_list_entry(values)
        if entry is not None:
            lists[name] = entry
            inputs[name] = entry["dtype"]
            continue
        array = _shaped(name, values)
        kind = array.dtype.kind
        if kind == "O":
            present = [v for v in array if not _is_missing(v)]
            if present and all(_is_number(v) for v in present):
                kind = "i" if all(isinstance(v, numbers.Integral) for v in present) else "f"
        inputs[name] = {"i": "int64", "u": "int64", "b": "int64", "f": "float32"}.get(kind, "string")
    features = _feature_entries({"inputs": inputs})
    features.update(lists)
    return ServingClient({"inputs": inputs, "features": features})


def _inferred_list_entry(values) -> dict | None:
    """Without a contract: a `[batch, n]` array or a column of list cells is an id list (integer
    values, padded to the longest row) or a vector (floats, width of the first row); else None."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object) if values.dtype.kind == "O" else values.to_numpy()
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[1] != 1 \
            and values.dtype.kind in "iuf":
        integer = values.dtype.kind in "iu"
        width = int(values.shape[1])
    else:
        if isinstance(values, np.ndarray) and values.ndim != 1:
            return None
        if not isinstance(values, Sequence | np.ndarray) or isinstance(values, str | bytes):
            return None
        cells = [v for v in values if not is_missing_cell(v)]
        if not cells or not all(is_list_cell(c) for c in cells):
            return None
        arrays = [np.asarray(c) for c in cells]
        integer = all(a.dtype.kind in "iu" for a in arrays if a.size)
        width = max(len(a) for a in arrays) if integer else len(arrays[0])
    if integer:
        return {"dtype": "int64", "kind": "id_list", "missing": MISSING_EMPTY_LIST,
                "shape": [max(width, 1)], "padding": PADDING, "max_length": max(width, 1),
                "truncation": TRUNCATION}
    return {"dtype": "float32", "kind": "vector", "missing": MISSING_REFUSED, "shape": [width]}


def _client_and_exponents(rows, contract, extra: Mapping | None):
    client = _inferred_client(rows) if contract is None else as_client(contract)
    extra = dict(extra or {})
    exponents = extra.pop(EXPONENTS_INPUT, None)
    if extra:
        raise ValueError(f"Unknown per-request input(s) {sorted(extra)}; the only one is "
                         f"{EXPONENTS_INPUT!r}.")
    if exponents is not None and not client.tasks and not isinstance(contract, ServingClient):
        # A contract without task names (an `["inputs"]` dict): K comes from the exponents.
        client.tasks = [f"task_{i}" for i in range(np.shape(exponents)[-1])]
    return client, exponents


def rest_body(rows: Rows, format: str = "instances", signature_name: str | None = None,
              contract: ServingClient | Mapping | None = None, extra: Mapping | None = None) -> dict:
    """`ServingClient.rest_body` for callers that hold a contract rather than a client.

    `contract` is a `ServingClient`, the dict `read_contract` returns, or its `["inputs"]`. Without
    one only shapes, lengths, dtypes inferred from the values and missing strings are handled:
    prefer `ServingClient.from_export(path).rest_body(rows)`. `extra` may hold `score_exponents`.
    """
    client, exponents = _client_and_exponents(rows, contract, extra)
    return client.rest_body(rows, format=format, signature_name=signature_name,
                            score_exponents=exponents)


def grpc_request(rows: Rows, model_name: str, signature_name: str | None = None,
                 version: int | None = None, contract: ServingClient | Mapping | None = None,
                 extra: Mapping | None = None):
    """`ServingClient.grpc_request` for callers that hold a contract rather than a client (see
    `rest_body` for `contract=` and `extra=`)."""
    client, exponents = _client_and_exponents(rows, contract, extra)
    return client.grpc_request(rows, model_name=model_name, signature_name=signature_name,
                               version=version, score_exponents=exponents)


def parse_rest_response(response: Mapping) -> pd.DataFrame:
    """A `:predict` response (row `predictions` or columnar `outputs`) as a DataFrame; an
    `{"error": ...}` answer raises with the server's message."""
    if "error" in response:
        raise RuntimeError(f"TF Serving answered with an error: {response['error']}")
    if "predictions" in response:
        predictions = response["predictions"]
        if predictions and not isinstance(predictions[0], Mapping):
            return pd.DataFrame({"prediction": predictions})
        return pd.DataFrame(predictions)
    if "outputs" in response:
        outputs = response["outputs"]
        return pd.DataFrame(outputs if isinstance(outputs, Mapping) else {"output": outputs})
    raise ValueError(f"Not a TF Serving predict response: keys {sorted(response)}.")


def parse_grpc_response(response) -> pd.DataFrame:
    """A `PredictResponse` as a DataFrame with one column per output; an output with several
    values per row (a multiclass task's probabilities) is a column of per-row arrays."""
    import tensorflow as tf

    columns = {}
    for name, proto in response.outputs.items():
        array = tf.make_ndarray(proto)
        columns[name] = list(array) if array.ndim > 1 else array.reshape(-1)
    return pd.DataFrame(columns)
