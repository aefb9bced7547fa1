"""Exported SavedModels, checked in a fresh process that never imports keras_mtl."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl import serving
from tests.helpers import BACKBONES, small_batch, small_model

EXPONENTS = {"click": 2.0, "watch_time": 0.0}
SCORE = serving.ScoreSpec(exponents=EXPONENTS, transforms=[
    serving.FeatureTransform("video_length", kind="log1p"),  # not a model feature: extra input
    serving.FeatureTransform("price", kind="clip", low=0.5, high=2.0),
])


def rows(n=7, seed=0):
    x, _ = small_batch(n, seed)
    x = {k: v.numpy() for k, v in x.items()}
    x["country"] = np.asarray([c.decode() for c in x["country"]], dtype=object)
    x["country"][0] = "never-seen"  # out of vocabulary
    x["user"] = np.asarray([u.decode() for u in x["user"]], dtype=object)
    x["video_length"] = np.linspace(0.0, 600.0, n).astype(np.float32)
    return x


def expected(model, x, exponents=EXPONENTS):
    predictions = model.predict({k: v for k, v in x.items() if k != "video_length"}, verbose=0)
    score = np.ones(len(x["price"]))
    for task, w in exponents.items():
        score = score * np.maximum(predictions[task], 1e-7) ** w
    score = score * np.log1p(x["video_length"]) * np.clip(x["price"], 0.5, 2.0)
    return {**{k: np.asarray(v) for k, v in predictions.items()}, "score": score}


def run_fresh(script: str, **paths) -> None:
    code = textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **paths, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


FRESH_LOAD = """
    import os, sys
    import numpy as np
    import tensorflow as tf
    data = dict(np.load(os.environ["INPUTS"], allow_pickle=True))
    loaded = tf.saved_model.load(os.environ["MODEL"])
    signature = loaded.signatures["serving_default"]
    inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in data.items()}
    outputs = {k: v.numpy() for k, v in signature(**inputs).items()}
    names = [v.name for v in loaded.variables]
    assert "keras_mtl" not in sys.modules
    np.savez(os.environ["OUTPUTS"], **outputs, variable_names=np.asarray(names))
"""


@pytest.fixture(scope="module")
def trained():
    model = small_model("ple", balancer=km.balancers.get("metabalance"))
    model.compile(optimizer="adam")
    x, y = small_batch(64, seed=1)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    return model


FRESH_LOAD_EACH = """
    import json, os
    import numpy as np
    import tensorflow as tf
    data = dict(np.load(os.environ["INPUTS"], allow_pickle=True))
    inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in data.items()}
    for name, path in json.loads(os.environ["MODELS"]).items():
        signature = tf.saved_model.load(path).signatures["serving_default"]
        outputs = {k: v.numpy() for k, v in signature(**inputs).items()}
        np.savez(os.path.join(os.environ["OUTPUTS"], name + ".npz"), **outputs)
"""


@pytest.fixture(scope="module")
def every_backbone_served(tmp_path_factory):
    """Every backbone's model exported, then all loaded in one fresh process (one TensorFlow
    start-up for all of them, not one per backbone)."""
    root = tmp_path_factory.mktemp("every_backbone")
    models, paths = {}, {}
    for backbone in sorted(BACKBONES):
        models[backbone] = small_model(backbone)
        paths[backbone] = serving.export(models[backbone], str(root / backbone / "ranker"),
                                         score=SCORE)
    x = rows()
    np.savez(root / "inputs.npz", **x)
    run_fresh(FRESH_LOAD_EACH, MODELS=json.dumps(paths), INPUTS=str(root / "inputs.npz"),
              OUTPUTS=str(root))
    return models, paths, x, root


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_fresh_process_predictions_match_model_predict(backbone, every_backbone_served):
    models, paths, x, root = every_backbone_served
    assert paths[backbone].endswith(os.path.join("ranker", "1"))
    outputs = np.load(root / f"{backbone}.npz")
    for key, value in expected(models[backbone], x).items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
        assert outputs[key].dtype == np.float32


def test_no_training_state_leaks_into_the_serving_graph(trained, tmp_path):
    path = serving.export(trained, str(tmp_path / "ranker"), score=SCORE)
    x = rows()
    np.savez(tmp_path / "inputs.npz", **x)
    run_fresh(FRESH_LOAD, MODEL=path, INPUTS=str(tmp_path / "inputs.npz"),
              OUTPUTS=str(tmp_path / "outputs.npz"))
    names = list(np.load(tmp_path / "outputs.npz")["variable_names"])
    inference = [v for layer in (trained.encoder, trained.backbone, *trained.towers,
                                 *trained.logit_layers) for v in layer.weights]
    assert len(names) == len(inference)
    assert not [n for n in names if any(s in n for s in ("magnitudes", "metabalance", "epoch",
                                                         "iteration", "adam", "momentum"))]
    assert len(trained.balancer.weights) == 1  # the state exists, it is just not exported


@pytest.mark.parametrize("name", [n for n in km.balancers.available() if not n.startswith("_")])
def test_export_with_any_balancer_holds_only_inference_variables(name, tmp_path):
    if name == "krum":
        pytest.skip("Krum needs at least 3 tasks (n_byzantine + 3); this model has 2")
    hparams = {"static": {"weights": [1.0, 0.5]}, "trimmed_mean": {"trim": 0}}.get(name, {})
    model = small_model("mmoe", balancer=km.balancers.get(name, **hparams))
    # The balancer's state exists from the model's build and the optimizer's from compile (Keras
    # locks a model's state then, so training adds none): no training needed to export both.
    model.compile(optimizer="adam")
    assert model.optimizer.variables
    loaded = tf.saved_model.load(serving.export(model, str(tmp_path / "ranker"), warmup=False))
    inference = {v.path for layer in (model.encoder, model.backbone, *model.towers,
                                      *model.logit_layers) for v in layer.weights}
    assert sorted(v.name.removesuffix(":0") for v in loaded.variables) == sorted(inference)


# The command-line tool reads the same SavedModel format for every architecture (the fresh-process
# test above covers them all): one plain, one multi-level and one with several encoders.
@pytest.mark.parametrize("backbone", ["mmoe", "ple", "stem"])
def test_saved_model_cli_run_agrees(backbone, tmp_path):
    if shutil.which("saved_model_cli") is None:
        pytest.skip("saved_model_cli is not on PATH")
    model = small_model(backbone)
    path = serving.export(model, str(tmp_path / "ranker"), score=SCORE)
    x = rows(3)
    npz = tmp_path / "cli_inputs.npz"
    np.savez(npz, **{k: v.astype(str) if v.dtype == object else v for k, v in x.items()})
    out = tmp_path / "cli"
    result = subprocess.run(
        ["saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
         "--signature_def", "serving_default",
         "--inputs", ";".join(f"{k}={npz}[{k}]" for k in x), "--outdir", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for key, value in expected(model, x).items():
        np.testing.assert_allclose(np.load(out / f"{key}.npy"), value, atol=1e-5, rtol=1e-5)


def rest_to_tensors(body, signature):
    """What TF Serving does with a JSON body: one tensor per input of the signature."""
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        columns = {name: [row[name] for row in body["instances"]] for name in specs}
    else:
        columns = body["inputs"]
    return {name: tf.constant(columns[name], dtype=specs[name].dtype) for name in specs}


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_bodies_give_the_same_numbers(exported, fmt):
    model, path, loaded = exported
    x = rows()
    contract = serving.read_contract(path)["inputs"]
    body = json.loads(json.dumps(serving.rest_body(x, format=fmt, contract=contract)))
    signature = loaded.signatures["serving_default"]
    outputs = signature(**rest_to_tensors(body, signature))
    for key, value in expected(model, x).items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5, rtol=1e-5)
    # And the response parser gives a DataFrame with one column per output.
    response = {"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}
    frame = serving.parse_rest_response(response)
    assert set(frame.columns) == {"click", "watch_time", "score"} and len(frame) == 7
    rows_response = {"predictions": [dict(zip(frame.columns, r, strict=True))
                                      for r in frame.itertuples(index=False)]}
    assert serving.parse_rest_response(rows_response).equals(frame)


def test_grpc_request_and_response(exported):
    from tensorflow_serving.apis import predict_pb2

    model, path, loaded = exported
    x = rows()
    request = serving.grpc_request(x, model_name="ranker", version=1,
                                   contract=serving.read_contract(path)["inputs"])
    assert request.model_spec.name == "ranker" and request.model_spec.version.value == 1
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = loaded.signatures["serving_default"](**inputs)
    response = predict_pb2.PredictResponse()
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    frame = serving.parse_grpc_response(response)
    np.testing.assert_allclose(frame["score"], expected(model, x)["score"], atol=1e-5, rtol=1e-5)


def test_per_request_exponents(exported):
    model, _, loaded = exported
    x = rows()
    signature = loaded.signatures[serving.EXPONENTS_SIGNATURE]
    inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in x.items()}
    tuned = {"click": 0.5, "watch_time": 0.0}
    one_row = signature(**inputs, score_exponents=tf.constant([[0.5, 0.0]]))  # broadcast
    np.testing.assert_allclose(one_row["score"], expected(model, x, tuned)["score"], rtol=1e-5)
    per_row = signature(**inputs, score_exponents=tf.constant([[0.5, 0.0]] * 7))
    np.testing.assert_allclose(per_row["score"], one_row["score"], rtol=1e-6)


def test_empty_batch_and_bad_inputs(exported):
    _, path, loaded = exported
    signature = loaded.signatures["serving_default"]
    contract = serving.read_contract(path)["inputs"]
    empty = {k: tf.zeros([0], {"string": tf.string, "int64": tf.int64,
                               "float32": tf.float32}[d]) for k, d in contract.items()}
    assert signature(**empty)["score"].shape == (0,)
    x = rows()
    inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in x.items()}
    with pytest.raises(TypeError, match="price"):
        signature(**{k: v for k, v in inputs.items() if k != "price"})
    with pytest.raises(tf.errors.InvalidArgumentError):
        signature(**dict(inputs, price=tf.constant(np.arange(7), tf.int32)))
    # The client helpers name the feature before anything is sent.
    with pytest.raises(KeyError, match="video_length"):
        serving.rest_body({k: v for k, v in x.items() if k != "video_length"}, contract=contract)
    with pytest.raises(TypeError, match="'country' must be strings"):
        serving.rest_body(dict(x, country=np.zeros(7)), contract=contract)


def test_versions_and_warmup(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    model = small_model("mmoe")
    base = str(tmp_path / "ranker")
    first = serving.export(model, base)
    second = serving.export(model, base)
    assert [os.path.basename(p) for p in (first, second)] == ["1", "2"]
    with pytest.raises(FileExistsError):
        serving.export(model, base, version=2)
    warmup = os.path.join(second, "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(warmup))
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert set(log.predict_log.request.inputs) == set(model.spec.names)
    assert log.predict_log.request.model_spec.name == "ranker"


def test_score_spec_validation():
    with pytest.raises(ValueError, match="unknown task"):
        serving.export(small_model("mmoe"), "/tmp/never", score={"exponents": {"clik": 1.0}})
    with pytest.raises(ValueError, match="kind must be one of"):
        serving.FeatureTransform("x", kind="sqrt")


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (not installable from PyPI)")
def test_real_tensorflow_model_server(exported, tmp_path):  # pragma: no cover - needs the server
    import socket
    import time
    import urllib.request

    model, path, _ = exported
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["tensorflow_model_server", f"--rest_api_port={port}",
                               "--model_name=ranker",
                               f"--model_base_path={os.path.dirname(path)}"])
    try:
        x = rows()
        body = json.dumps(serving.rest_body(x)).encode()
        url = f"http://127.0.0.1:{port}/v1/models/ranker:predict"
        for _ in range(60):
            try:
                with urllib.request.urlopen(url, data=body) as response:
                    frame = serving.parse_rest_response(json.load(response))
                break
            except OSError:
                time.sleep(1)
        np.testing.assert_allclose(frame["score"], expected(model, x)["score"], rtol=1e-5)
    finally:
        server.kill()
