"""Export a `MultiTaskModel` as a versioned SavedModel for TensorFlow Serving."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.features.lists import PADDING, TRUNCATION
from keras_mtl.features.spec import (
    TF_DTYPES,
    Categorical,
    Hashed,
    IdList,
    IntegerId,
    Numeric,
    Vector,
)
from keras_mtl.optional import require
from keras_mtl.serving.contract import (
    CONTRACT_FILE,
    CONTRACT_FORMAT,
    DEFAULT_SIGNATURE,
    EXPONENTS_INPUT,
    EXPONENTS_SIGNATURE,
    MISSING_EMPTY_LIST,
    MISSING_EMPTY_STRING,
    MISSING_NAN,
    MISSING_REFUSED,
    SCORE_INPUT_KIND,
    WARMUP_FILE,
    read_contract,
)
from keras_mtl.serving.score import ScoreSpec


def input_contract(model, score: ScoreSpec | None = None) -> dict[str, str]:
    """Name → dtype of every input of the serving signature: the model's features, then any
    feature a score transform reads that the model does not."""
    contract = {f.name: f.dtype for f in model.spec}
    for transform in (score.transforms if score else ()):
        if transform.feature in contract:
            if contract[transform.feature] == "string":
                raise ValueError(f"Score transform of {transform.feature!r}: it is a string feature.")
            if model.spec[transform.feature].shape:
                raise ValueError(f"Score transform of {transform.feature!r}: it is a "
                                 f"{type(model.spec[transform.feature]).__name__} feature (one "
                                 "list or vector per row); a transform reads one number per row.")
        else:
            contract[transform.feature] = "float32"
    return contract


def input_shapes(model, score: ScoreSpec | None = None) -> dict[str, list[int]]:
    """Name → per-row shape of every input of the serving signature: `[]` for one value per row
    (the input is `[batch]`), `[max_length]` for id lists, `[dim]` for vectors."""
    return {name: list(model.spec[name].shape) if name in model.spec.names else []
            for name in input_contract(model, score)}


def feature_contract(model, score: ScoreSpec | None = None) -> dict[str, dict]:
    """Per input of the serving signature: dtype, feature kind, how a missing value is encoded
    and, for inputs with more than one value per row, `shape` (the per-row shape: `[max_length]`
    or `[dim]`; an entry without one is a `[batch]` input).

    Id lists (`Sequence`, `MultiValued`) also record `padding` (the value that fills a row after
    its ids, -1), `max_length` and `truncation` ("keep_first": a longer row keeps its first ids,
    the most recent of a newest-first history); a missing list is an empty one (all padding).
    Vectors record their width in `shape` and refuse a missing value.

    Written next to the SavedModel so that a client can encode a request exactly as
    `from_dataframe` encoded the training rows (a `None` user id must reach a `Hashed` feature as
    "", not as "None", or it lands in another embedding row). An input a score transform reads
    refuses missing values: the model would impute it, but the score would come out NaN.
    """
    read_by_score = {t.feature: t.kind for t in (score.transforms if score else ())}
    features = {}
    for name, dtype in input_contract(model, score).items():
        feature = model.spec[name] if name in model.spec.names else None
        kind = feature.kind if feature is not None else SCORE_INPUT_KIND
        if dtype == "string":
            missing = MISSING_EMPTY_STRING
        elif isinstance(feature, IdList):
            missing = MISSING_EMPTY_LIST
        elif kind == Numeric.kind and name not in read_by_score:
            missing = MISSING_NAN
        else:
            missing = MISSING_REFUSED
        entry = {"dtype": dtype, "kind": kind, "missing": missing}
        if feature is not None and feature.shape:  # absent: one value per row, as before
            entry["shape"] = list(feature.shape)
        if isinstance(feature, IdList):
            entry.update(padding=PADDING, max_length=feature.max_length, truncation=TRUNCATION)
        if name in read_by_score:
            entry["score_transform"] = read_by_score[name]
        features[name] = entry
    return features


def next_version(base_path: str) -> int:
    """The next free integer version folder under `base_path` (1 when there is none)."""
    if not os.path.isdir(base_path):
        return 1
    versions = [int(n) for n in os.listdir(base_path) if re.fullmatch(r"\d+", n)]
    return max(versions, default=0) + 1


def example_rows(model, num_rows: int = 3, score: ScoreSpec | None = None) -> dict[str, np.ndarray]:
    """Valid placeholder rows for warm-up and smoke tests: known vocabulary values, ids, zeros.

    Id lists are int64 `[num_rows, max_length]`: row `i` holds `i mod (max_length + 1)` ids and
    padding after them (so row 0 is an empty list, the all-padding path); vectors are zeros
    `[num_rows, dim]`.
    """
    rows = {}
    for feature in model.spec:
        if isinstance(feature, IdList):
            num_ids = model.spec.table_owner(feature.name).num_ids
            ids = np.full((num_rows, feature.max_length), PADDING, np.int64)
            for i in range(num_rows):
                length = i % (feature.max_length + 1)
                ids[i, :length] = (i + np.arange(length)) % num_ids
            rows[feature.name] = ids
            continue
        if isinstance(feature, Vector):
            rows[feature.name] = np.zeros((num_rows, feature.dim), np.float32)
            continue
        if isinstance(feature, Categorical):
            vocabulary = list(feature.vocabulary)
            values = [vocabulary[i % len(vocabulary)] for i in range(num_rows)]
            rows[feature.name] = np.asarray(values, dtype=np.int64 if feature.dtype == "int64"
                                            else object)
        elif isinstance(feature, Hashed):
            rows[feature.name] = (np.asarray([f"id_{i}" for i in range(num_rows)], dtype=object)
                                  if feature.dtype == "string" else np.arange(num_rows))
        elif isinstance(feature, IntegerId):
            rows[feature.name] = np.arange(num_rows, dtype=np.int64) % feature.num_ids
        elif isinstance(feature, Numeric):
            typical = np.expm1(feature.mean) if feature.log1p else feature.mean  # raw scale
            rows[feature.name] = np.full(num_rows, typical, np.float32)
    for name in input_contract(model, score):
        if name not in rows:
            rows[name] = np.ones(num_rows, np.float32)
    return rows


def export(
    model,
    base_path: str,
    score: ScoreSpec | Mapping | None = None,
    version: int | None = None,
    warmup_rows: Mapping[str, np.ndarray] | None = None,
    warmup: bool | None = None,
) -> str:
    """Writes `base_path/<version>/`, a SavedModel TF Serving loads from its model base path.

    Signatures:
    - `serving_default`: the named raw features in (the feature spec's names and dtypes, batch
      first: `[None]` per scalar feature, `[None, max_length]` int64 per `Sequence`/`MultiValued`,
      each row padded with -1 after its ids, and `[None, dim]` float32 per `Vector`), every task's
      prediction out (probability for binary tasks, value for regression,
      float32 `[batch]`) plus `score` (see `ScoreSpec`).
    - `score_with_exponents`: the same plus `score_exponents`, float32 `[batch or 1, K]` in task
      order, so a caller can tune the score's exponents per request without a re-export. They are
      checked in the graph (finite, non-negative, K columns, 1 or batch rows): a NaN or negative
      exponent would otherwise give a NaN score or one above 1, with no error.

    Only the layers used for inference are exported: no optimizer, balancer or training-loop
    state. String features keep their lookup tables. `warmup=True` (default: when
    `tensorflow-serving-api` is installed) writes `assets.extra/tf_serving_warmup_requests` from
    `warmup_rows` (default: placeholder rows built from the spec). The input contract (names,
    dtypes, feature kinds, per-row shapes, padding and truncation of id lists, missing-value
    encodings, signatures, outputs) is also written to
    `assets.extra/keras_mtl_signature.json`, which `ServingClient.from_export` applies to every
    request.

    Returns the version folder's path.
    """
    version = next_version(base_path) if version is None else int(version)
    path = os.path.join(base_path, str(version))
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; TF Serving versions are immutable. Pick another.")
    return write_saved_model(model, path, score=score, warmup_rows=warmup_rows, warmup=warmup,
                             model_name=os.path.basename(os.path.normpath(base_path)))


def write_saved_model(
    model,
    path: str,
    score: ScoreSpec | Mapping | None = None,
    warmup_rows: Mapping[str, np.ndarray] | None = None,
    warmup: bool | None = None,
    model_name: str | None = None,
) -> str:
    """`export`'s SavedModel written at `path` itself (no version folder): what
    `MultiTaskModel.export(path)` (Keras' `model.export`) writes. `model_name`: the name in the
    warm-up requests (default: the parent folder's name). Returns `path`."""
    if isinstance(score, Mapping):
        score = ScoreSpec.from_config(score)
    score = score or ScoreSpec()
    exponents = score.resolved_exponents(model.tasks)
    contract = input_contract(model, score)
    task_names = [t.name for t in model.tasks]
    extra_outputs = [f"{t.name}_ctcvr" for t in model.tasks if t.esmm_parent is not None]
    clash = sorted(set(contract) & ({"score", EXPONENTS_INPUT, *task_names, *extra_outputs}))
    if clash:
        raise ValueError(f"Input name(s) {clash} clash with the signature's output names.")
    if model_name is None:
        model_name = os.path.basename(os.path.dirname(os.path.abspath(path))) or "model"

    model_features = set(model.spec.names)

    def predict(features, task_exponents):
        outputs = model({k: v for k, v in features.items() if k in model_features},
                        training=False)
        result = {name: tf.cast(outputs[name], tf.float32) for name in task_names + extra_outputs}
        served = score.served_values(model.tasks, outputs)
        result["score"] = score.score(served, task_exponents, features)
        return result

    shapes = input_shapes(model, score)
    signature = {name: tf.TensorSpec([None, *shapes[name]], TF_DTYPES[dtype], name=name)
                 for name, dtype in contract.items()}
    fixed = tf.constant(exponents, tf.float32)

    def serve(features):
        return predict(features, fixed)

    def serve_with_exponents(features, score_exponents):
        batch = tf.shape(features[next(iter(contract))])[0]
        return predict(features, checked_exponents(score_exponents, batch, task_names))

    archive = keras.export.ExportArchive()
    for layer in model.inference_layers:
        archive.track(layer)
    archive.add_endpoint(DEFAULT_SIGNATURE, serve, input_signature=[signature])
    archive.add_endpoint(
        EXPONENTS_SIGNATURE, serve_with_exponents,
        # [None, None], not [None, K]: the column count is checked in the graph with a message
        # that names the input (TF Serving does not check fed shapes against the signature).
        input_signature=[signature, tf.TensorSpec([None, None], tf.float32, name=EXPONENTS_INPUT)],
    )
    archive.write_out(path, verbose=False)

    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, CONTRACT_FILE), "w") as handle:
        json.dump({"format": CONTRACT_FORMAT, "inputs": contract,
                   "features": feature_contract(model, score),
                   "signatures": {DEFAULT_SIGNATURE: {"inputs": list(contract)},
                                  EXPONENTS_SIGNATURE: {"inputs": [*contract, EXPONENTS_INPUT]}},
                   "exponents_input": EXPONENTS_INPUT,
                   "tasks": task_names, "extra_outputs": extra_outputs,
                   "task_kinds": {t.name: t.kind for t in model.tasks},
                   "output_shapes": {t.name: [t.num_classes] if t.kind == "multiclass" else []
                                     for t in model.tasks},
                   "outputs": [*task_names, *extra_outputs, "score"],
                   "exponents": exponents,
                   "score": score.get_config()}, handle, indent=2)
    if warmup is None:
        warmup = _serving_api_available()
    if warmup:
        write_warmup_requests(os.path.join(extra, WARMUP_FILE),
                              warmup_rows or example_rows(model, score=score), read_contract(path),
                              model_name=model_name)
    return path


def checked_exponents(score_exponents: tf.Tensor, batch: tf.Tensor,
                      task_names: list[str]) -> tf.Tensor:
    """`score_exponents` after in-graph checks that name it; traced without autograph, so no
    Python `if` on tensors: every check is a `tf.debugging` op the result depends on."""
    k = len(task_names)
    shape = tf.shape(score_exponents)
    what = f"{EXPONENTS_INPUT} (float32 [1 or batch, {k}], one column per task {task_names})"
    checks = [
        tf.debugging.assert_equal(shape[1], k, message=f"{what}: wrong number of columns"),
        tf.debugging.Assert(
            tf.logical_or(tf.equal(shape[0], 1), tf.equal(shape[0], batch)),
            [f"{what}: needs 1 row (one set for the request) or one row per candidate; rows:",
             shape[0], "batch size:", batch]),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.math.is_finite(score_exponents)), True,
            message=f"{what}: must be finite (NaN or inf would make the score NaN)"),
        tf.debugging.assert_greater_equal(
            score_exponents, tf.zeros_like(score_exponents),
            message=f"{what}: must be non-negative (a negative exponent pushes the score above 1)"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(score_exponents)


def write_warmup_requests(path: str, rows: Mapping[str, np.ndarray], contract: Mapping,
                          model_name: str, num_requests: int = 1) -> None:
    """TF Serving's warm-up file: a TFRecord of `PredictionLog`s built from `rows`, checked against
    `contract` (what `read_contract` returns, or its `["inputs"]`) like any client request."""
    prediction_log_pb2 = require("tensorflow_serving.apis.prediction_log_pb2", "serving",
                                 "A TF Serving warm-up file")

    from keras_mtl.serving.client import grpc_request

    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(num_requests):
            request = grpc_request(rows, model_name=model_name, contract=contract)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _serving_api_available() -> bool:
    try:
        import tensorflow_serving.apis  # noqa: F401
    except ImportError:
        return False
    return True


