"""Export a `MultiTaskModel` as a versioned SavedModel for TensorFlow Serving."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.features.spec import TF_DTYPES, Categorical, Hashed, IntegerId, Numeric
from keras_mtl.serving.score import ScoreSpec

DEFAULT_SIGNATURE = "serving_default"
EXPONENTS_SIGNATURE = "score_with_exponents"
EXPONENTS_INPUT = "score_exponents"
CONTRACT_FILE = "keras_mtl_signature.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def input_contract(model, score: ScoreSpec | None = None) -> dict[str, str]:
    """Name → dtype of every input of the serving signature: the model's features, then any
    feature a score transform reads that the model does not."""
    contract = {f.name: f.dtype for f in model.spec}
    for transform in (score.transforms if score else ()):
        if transform.feature in contract:
            if contract[transform.feature] == "string":
                raise ValueError(f"Score transform of {transform.feature!r}: it is a string feature.")
        else:
            contract[transform.feature] = "float32"
    return contract


def next_version(base_path: str) -> int:
    """The next free integer version folder under `base_path` (1 when there is none)."""
    if not os.path.isdir(base_path):
        return 1
    versions = [int(n) for n in os.listdir(base_path) if re.fullmatch(r"\d+", n)]
    return max(versions, default=0) + 1


def example_rows(model, num_rows: int = 3, score: ScoreSpec | None = None) -> dict[str, np.ndarray]:
    """Valid placeholder rows for warm-up and smoke tests: known vocabulary values, ids, zeros."""
    rows = {}
    for feature in model.spec:
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
      first), every task's prediction out (probability for binary tasks, value for regression,
      float32 `[batch]`) plus `score` (see `ScoreSpec`).
    - `score_with_exponents`: the same plus `score_exponents`, float32 `[batch or 1, K]` in task
      order, so a caller can tune the score's exponents per request without a re-export.

    Only the layers used for inference are exported: no optimizer, balancer or training-loop
    state. String features keep their lookup tables. `warmup=True` (default: when
    `tensorflow-serving-api` is installed) writes `assets.extra/tf_serving_warmup_requests` from
    `warmup_rows` (default: placeholder rows built from the spec). The input contract is also
    written to `assets.extra/keras_mtl_signature.json` for the client helpers.

    Returns the version folder's path.
    """
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

    version = next_version(base_path) if version is None else int(version)
    path = os.path.join(base_path, str(version))
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; TF Serving versions are immutable. Pick another.")

    model_features = set(model.spec.names)

    def predict(features, task_exponents):
        outputs = model({k: v for k, v in features.items() if k in model_features},
                        training=False)
        predictions = [tf.cast(outputs[name], tf.float32) for name in task_names]
        result = dict(zip(task_names, predictions, strict=True))
        result.update({name: tf.cast(outputs[name], tf.float32) for name in extra_outputs})
        result["score"] = score.score(predictions, task_exponents, features)
        return result

    signature = {name: tf.TensorSpec([None], TF_DTYPES[dtype], name=name)
                 for name, dtype in contract.items()}
    fixed = tf.constant(exponents, tf.float32)

    def serve(features):
        return predict(features, fixed)

    def serve_with_exponents(features, score_exponents):
        return predict(features, score_exponents)

    archive = keras.export.ExportArchive()
    for layer in (model.encoder, model.backbone, *model.towers, *model.logit_layers):
        archive.track(layer)
    archive.add_endpoint(DEFAULT_SIGNATURE, serve, input_signature=[signature])
    archive.add_endpoint(
        EXPONENTS_SIGNATURE, serve_with_exponents,
        input_signature=[signature, tf.TensorSpec([None, len(task_names)], tf.float32,
                                                  name=EXPONENTS_INPUT)],
    )
    archive.write_out(path, verbose=False)

    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, CONTRACT_FILE), "w") as handle:
        json.dump({"inputs": contract, "tasks": task_names, "extra_outputs": extra_outputs,
                   "exponents": exponents,
                   "score": score.get_config()}, handle, indent=2)
    if warmup is None:
        warmup = _serving_api_available()
    if warmup:
        write_warmup_requests(os.path.join(extra, WARMUP_FILE),
                              warmup_rows or example_rows(model, score=score), contract,
                              model_name=os.path.basename(os.path.normpath(base_path)))
    return path


def write_warmup_requests(path: str, rows: Mapping[str, np.ndarray], contract: Mapping[str, str],
                          model_name: str, num_requests: int = 1) -> None:
    """TF Serving's warm-up file: a TFRecord of `PredictionLog`s built from `rows`."""
    from tensorflow_serving.apis import prediction_log_pb2

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


def read_contract(version_path: str) -> dict:
    with open(os.path.join(version_path, "assets.extra", CONTRACT_FILE)) as handle:
        return json.load(handle)
