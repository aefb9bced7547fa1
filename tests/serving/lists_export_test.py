"""Exported models with id lists and vectors: signature shapes, the contract, the client, and a
fresh process that never imports keras_mtl."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from keras_mtl import serving
from keras_mtl.features import PADDING
from tests.features.list_helpers import as_tensors, list_batch, list_model
from tests.serving.export_test import FRESH_LOAD, rest_to_tensors, run_fresh

P = PADDING
SCORE = serving.ScoreSpec(exponents={"click": 1.0, "like": 0.5},
                          transforms=[serving.FeatureTransform("price", kind="log1p")])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = list_model()
    model.compile(optimizer="adam")
    x, y = list_batch(32, seed=4)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    path = serving.export(model, str(tmp_path_factory.mktemp("lists") / "ranker"), score=SCORE)
    return model, path, tf.saved_model.load(path)


def caller_rows(n: int = 6) -> pd.DataFrame:
    """Rows as a caller holds them: ragged id lists (some longer than the cap, some empty or None),
    vectors as arrays."""
    x, _ = list_batch(n, seed=9)
    hist = [[int(i) for i in row if i != P] for row in x["hist_item_ids"]]
    hist[1] = list(range(1, 12))  # longer than max_length=5: keeps 1..5
    if n > 2:
        hist[2] = None  # no history
    return pd.DataFrame({
        "item_id": x["item_id"], "hist_item_ids": hist,
        "tags": [row[row != P].tolist() for row in x["tags"]],
        "user_vec": list(x["user_vec"]), "country": x["country"], "price": x["price"],
    })


def expected(model, columns):
    predictions = model.predict(as_tensors(columns), verbose=0)
    score = predictions["click"] * np.maximum(predictions["like"], 1e-7) ** 0.5
    return {**predictions, "score": score * np.log1p(columns["price"])}


def test_signature_takes_padded_lists_and_vectors(exported):
    model, path, loaded = exported
    specs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert specs["hist_item_ids"].shape.as_list() == [None, 5]
    assert specs["hist_item_ids"].dtype == tf.int64
    assert specs["tags"].shape.as_list() == [None, 4]
    assert specs["user_vec"].shape.as_list() == [None, 4] and specs["user_vec"].dtype == tf.float32
    assert specs["item_id"].shape.as_list() == [None]
    features = serving.read_contract(path)["features"]
    assert features["hist_item_ids"] == {
        "dtype": "int64", "kind": "sequence", "missing": "empty_list", "shape": [5],
        "padding": -1, "max_length": 5, "truncation": "keep_first"}
    assert features["user_vec"] == {"dtype": "float32", "kind": "vector", "missing": "refuse",
                                    "shape": [4]}
    assert "shape" not in features["price"]  # a [batch] input, as in scalar-only contracts


def test_client_pads_and_truncates_lists(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    columns = client.prepare(caller_rows())
    hist = columns["hist_item_ids"]
    assert hist.dtype == np.int64 and hist.shape == (6, 5)
    np.testing.assert_array_equal(hist[1], [1, 2, 3, 4, 5])  # the first (most recent) ids kept
    np.testing.assert_array_equal(hist[2], [P] * 5)  # None: an empty list
    assert columns["user_vec"].dtype == np.float32 and columns["user_vec"].shape == (6, 4)
    # A 2-D array is padded or cut to max_length too.
    wide = client.prepare(dict(caller_rows(2), hist_item_ids=np.arange(14).reshape(2, 7)))
    assert wide["hist_item_ids"].shape == (2, 5)
    np.testing.assert_array_equal(wide["hist_item_ids"], [[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    narrow = client.prepare(dict(caller_rows(2), hist_item_ids=np.asarray([[3], [4]])))
    np.testing.assert_array_equal(narrow["hist_item_ids"], [[3, P, P, P, P], [4, P, P, P, P]])


def test_client_refuses_wrong_lists_and_vectors_naming_the_feature(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    rows = caller_rows(3)
    short = rows.copy()
    short["user_vec"] = [np.zeros(4), np.zeros(3), np.zeros(4)]
    with pytest.raises(ValueError, match=r"Input 'user_vec' \(vector feature, float32 \[batch, 4\]\) "
                                         "at row 1: got 3 values; expected a list .* of 4"):
        client.prepare(short)
    with pytest.raises(ValueError, match=r"'user_vec' .*: got rows of 5 values"):
        client.prepare(dict(rows, user_vec=np.zeros((3, 5))))
    with pytest.raises(ValueError, match="'user_vec' .* at row 2: value nan"):
        client.prepare(dict(rows, user_vec=np.asarray([[0.0] * 4, [1.0] * 4, [np.nan] * 4])))
    with pytest.raises(ValueError, match="Input 'hist_item_ids' .* at row 0: got int 7; expected a "
                                         "list"):
        client.prepare(dict(rows, hist_item_ids=[7, [1], [2]]))
    with pytest.raises(ValueError, match="'tags' .* at row 1: id 1.5 is not an integer"):
        client.prepare(dict(rows, tags=[[1], [1.5], []]))


def test_fresh_process_predictions_match_model_predict(exported, tmp_path):
    model, path, _ = exported
    columns = serving.ServingClient.from_export(path).prepare(caller_rows())
    np.savez(tmp_path / "inputs.npz", **columns)
    run_fresh(FRESH_LOAD, MODEL=path, INPUTS=str(tmp_path / "inputs.npz"),
              OUTPUTS=str(tmp_path / "outputs.npz"))
    outputs = np.load(tmp_path / "outputs.npz")
    for key, value in expected(model, columns).items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
        assert outputs[key].dtype == np.float32


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_bodies_carry_lists_and_score_the_same(exported, fmt):
    model, path, loaded = exported
    client = serving.ServingClient.from_export(path)
    rows = caller_rows()
    body = json.loads(json.dumps(client.rest_body(rows, format=fmt)))
    if fmt == "instances":
        assert body["instances"][1]["hist_item_ids"] == [1, 2, 3, 4, 5]
        assert len(body["instances"][0]["user_vec"]) == 4
    signature = loaded.signatures["serving_default"]
    outputs = signature(**rest_to_tensors(body, signature))
    for key, value in expected(model, client.prepare(rows)).items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5, rtol=1e-5, err_msg=key)


def test_grpc_request_and_warmup_carry_list_shapes(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path, loaded = exported
    client = serving.ServingClient.from_export(path)
    request = client.grpc_request(caller_rows(4))
    assert tf.make_ndarray(request.inputs["hist_item_ids"]).shape == (4, 5)
    assert tf.make_ndarray(request.inputs["user_vec"]).shape == (4, 4)
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    log = prediction_log_pb2.PredictionLog.FromString(
        next(iter(tf.data.TFRecordDataset(warmup))).numpy())
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in log.predict_log.request.inputs.items()}
    assert inputs["hist_item_ids"].shape == (3, 5) and inputs["tags"].shape == (3, 4)
    np.testing.assert_array_equal(inputs["hist_item_ids"][0], [P] * 5)  # an empty history
    assert inputs["user_vec"].shape == (3, 4)
    outputs = loaded.signatures["serving_default"](**inputs)
    assert np.isfinite(outputs["score"].numpy()).all()


def test_example_rows_and_contractless_requests(exported):
    model, _, loaded = exported
    rows = serving.example_rows(model, num_rows=3)
    np.testing.assert_array_equal(rows["hist_item_ids"], [[P] * 5, [1, P, P, P, P],
                                                          [2, 3, P, P, P]])
    np.testing.assert_array_equal(rows["user_vec"], np.zeros((3, 4)))
    # Without a contract, list cells and 2-D arrays are still sent as lists.
    body = serving.rest_body({"hist": [[1, 2], [3]], "vec": np.ones((2, 3), np.float32),
                              "price": [1.0, 2.0]}, format="inputs")
    assert body["inputs"]["hist"] == [[1, 2], [3, P]] and body["inputs"]["vec"] == [[1.0] * 3] * 2


def test_score_transforms_of_lists_or_vectors_are_refused(exported):
    model, _, _ = exported
    with pytest.raises(ValueError, match="'user_vec': it is a Vector feature"):
        serving.export(model, "/tmp/never", score={"transforms": [
            {"feature": "user_vec", "kind": "log1p"}]})
