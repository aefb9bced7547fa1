"""Client helpers: TF Serving REST bodies and gRPC requests from pandas, and responses back."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

_NUMPY = {"string": object, "int64": np.int64, "float32": np.float32}


def _columns(rows, contract: Mapping[str, str] | None) -> dict[str, np.ndarray]:
    """Columns as arrays, checked against the signature's input contract when given."""
    if isinstance(rows, pd.DataFrame):
        columns = {name: rows[name].to_numpy() for name in rows.columns}
    else:
        columns = {name: np.asarray(values) for name, values in rows.items()}
    if contract is None:
        return columns
    missing = [name for name in contract if name not in columns]
    if missing:
        raise KeyError(f"Missing input(s) {missing}; the signature takes {dict(contract)}.")
    checked = {}
    for name, dtype in contract.items():
        values = columns[name]
        if dtype == "string":
            if values.dtype.kind not in "OUS":
                raise TypeError(f"Input {name!r} must be strings, got {values.dtype}.")
            checked[name] = np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                                        for v in values], dtype=object)
        else:
            if values.dtype.kind not in "iufb":
                raise TypeError(f"Input {name!r} must be {dtype}, got {values.dtype} "
                                f"(e.g. {values[0]!r}).")
            if dtype == "int64" and values.dtype.kind == "f":
                raise TypeError(f"Input {name!r} must be int64, got floats.")
            checked[name] = values.astype(_NUMPY[dtype])
    return checked


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def rest_body(rows, format: str = "instances", signature_name: str | None = None,
              contract: Mapping[str, str] | None = None, extra: Mapping | None = None) -> dict:
    """The JSON body of a TF Serving REST `:predict` call.

    `format="instances"` is the row format (one object per candidate), `"inputs"` the columnar one.
    `extra` adds inputs that are not per row in the columnar format (e.g. `score_exponents`).
    """
    columns = _columns(rows, contract)
    body: dict = {}
    if signature_name:
        body["signature_name"] = signature_name
    if format == "instances":
        if extra:
            raise ValueError("Per-request inputs need format='inputs' (columnar).")
        length = len(next(iter(columns.values())))
        body["instances"] = [{name: _json_value(values[i]) for name, values in columns.items()}
                             for i in range(length)]
    elif format == "inputs":
        body["inputs"] = {name: [_json_value(v) for v in values] for name, values in columns.items()}
        for name, value in (extra or {}).items():
            body["inputs"][name] = np.asarray(value).tolist()
    else:
        raise ValueError(f"format must be 'instances' or 'inputs', got {format!r}.")
    return body


def parse_rest_response(response: Mapping) -> pd.DataFrame:
    """A `:predict` response (row `predictions` or columnar `outputs`) as a DataFrame."""
    if "predictions" in response:
        predictions = response["predictions"]
        if predictions and not isinstance(predictions[0], Mapping):
            return pd.DataFrame({"prediction": predictions})
        return pd.DataFrame(predictions)
    if "outputs" in response:
        outputs = response["outputs"]
        return pd.DataFrame(outputs if isinstance(outputs, Mapping) else {"output": outputs})
    raise ValueError(f"Not a TF Serving predict response: keys {sorted(response)}.")


def grpc_request(rows, model_name: str, signature_name: str = "serving_default",
                 version: int | None = None, contract: Mapping[str, str] | None = None,
                 extra: Mapping | None = None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` (needs `keras_mtl[serving]`)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, values in _columns(rows, contract).items():
        if values.dtype == object:
            proto = tf.make_tensor_proto([str(v).encode() for v in values], dtype=tf.string)
        else:
            proto = tf.make_tensor_proto(values)
        request.inputs[name].CopyFrom(proto)
    for name, value in (extra or {}).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))
    return request


def parse_grpc_response(response) -> pd.DataFrame:
    """A `PredictResponse` as a DataFrame with one column per output."""
    import tensorflow as tf

    return pd.DataFrame({name: tf.make_ndarray(proto).reshape(-1)
                         for name, proto in response.outputs.items()})
