"""`ServingClient`: requests built from the exported contract score like training-time rows."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl import serving
from tests.helpers import small_model
from tests.serving.export_test import SCORE, expected, rest_to_tensors, rows

SIGNATURE_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def frame_with_missing_values(n=7) -> pd.DataFrame:
    """Rows as a caller holds them: pandas dtypes (float64, int32), missing values, labels."""
    x = rows(n)
    frame = pd.DataFrame({
        "price": x["price"].astype(np.float64),
        "views": x["views"].astype(np.float64),
        "item_id": x["item_id"].astype(np.int32),
        "country": x["country"],
        "user": x["user"],
        "video_length": x["video_length"].astype(np.float64),
        "click": np.ones(n), "watch_time": np.zeros(n),  # labels: not inputs
    })
    frame.loc[[1, 4], "views"] = np.nan
    frame.loc[2, "country"] = None
    frame.loc[3, "country"] = np.nan
    frame.loc[1, "user"] = None
    frame.loc[5, "user"] = np.nan
    return frame


def training_expected(model, frame):
    """What the model predicts for these rows encoded the way training encodes them."""
    x = km.data.feature_arrays(frame, model.spec)
    x["video_length"] = frame["video_length"].to_numpy(np.float32)
    return expected(model, x)


def assert_matches(outputs, wanted):
    for key, value in wanted.items():
        np.testing.assert_allclose(np.asarray(outputs[key]), value, atol=1e-5, rtol=1e-5,
                                   err_msg=key)


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_body_with_missing_values_scores_like_training(exported, fmt):
    model, path, loaded = exported
    client = serving.ServingClient.from_export(path)
    frame = frame_with_missing_values()
    with pytest.warns(UserWarning, match=r"\['click', 'watch_time'\]"):
        body = client.rest_body(frame, format=fmt)
    body = json.loads(json.dumps(body))  # NaN travels as JSON `NaN`, which TF Serving parses
    rows_out = body["instances"] if fmt == "instances" else [body["inputs"]]
    assert all("click" not in r and "watch_time" not in r for r in rows_out)
    signature = loaded.signatures["serving_default"]
    assert_matches(signature(**rest_to_tensors(body, signature)), training_expected(model, frame))


def test_grpc_request_with_missing_values_scores_like_training(exported):
    model, path, loaded = exported
    client = serving.ServingClient.from_export(path)
    frame = frame_with_missing_values()
    with pytest.warns(UserWarning, match="click"):
        request = client.grpc_request(frame)
    assert request.model_spec.name == "ranker"
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert set(request.inputs) == set(specs)
    for name, proto in request.inputs.items():  # DT_FLOAT / DT_INT64, never DT_DOUBLE / DT_INT32
        assert tf.dtypes.as_dtype(proto.dtype) == specs[name].dtype, name
        assert len(proto.tensor_shape.dim) == 1, name
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    assert_matches(signature(**inputs), training_expected(model, frame))


def test_missing_strings_are_sent_as_training_encodes_them(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    frame = frame_with_missing_values().drop(columns=["click", "watch_time"])
    columns = client.prepare(frame)
    assert columns["user"][1] == "" and columns["user"][5] == ""
    assert list(columns["country"][2:4]) == ["", ""]
    assert np.isnan(columns["views"][[1, 4]]).all()
    spec = small_model("cgc").spec
    training = km.data.feature_arrays(frame, spec)
    for name in spec.names:
        np.testing.assert_array_equal(columns[name], training[name], err_msg=name)
        assert columns[name].dtype == training[name].dtype, name


def test_safe_casts_and_column_shapes(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    x = rows(3)
    columns = client.prepare({
        **x,
        "price": x["price"].astype(np.float64),
        "item_id": x["item_id"].astype(np.float64),  # integral floats
        "views": x["views"].astype(np.int32),
        "country": np.asarray([["de"], ["fr"], ["us"]]),  # [B, 1]
        "user": [b"u1", "u2", "u3"],
    })
    assert {k: v.dtype for k, v in columns.items()} == {
        "price": np.float32, "views": np.float32, "item_id": np.int64, "country": object,
        "user": object, "video_length": np.float32}
    assert list(columns["country"]) == ["de", "fr", "us"]  # not "['de']"
    assert list(columns["user"]) == ["u1", "u2", "u3"]
    np.testing.assert_array_equal(columns["item_id"], x["item_id"])


@pytest.mark.parametrize("change, error, pattern", [
    (lambda x: dict(x, price=np.asarray(["1.5"] * 7)), TypeError, r"'price'.*row 0"),
    (lambda x: dict(x, price=np.asarray([1.0, "a", 2, 3, 4, 5, 6], dtype=object)), TypeError,
     r"'price'.*row 1.*'a'"),
    (lambda x: dict(x, item_id=np.asarray([1, 2, 7.5, 4, 5, 6, 7])), ValueError,
     r"'item_id'.*row 2.*7\.5"),
    (lambda x: dict(x, item_id=np.asarray([1, 2, 3, np.nan, 5, 6, 7])), ValueError,
     r"'item_id'.*row 3.*missing"),
    (lambda x: dict(x, video_length=np.asarray([1, 2, 3, 4, np.nan, 6, 7.0])), ValueError,
     r"'video_length'.*row 4.*missing"),
    (lambda x: dict(x, price=np.asarray([1, 2, 3, 4, 5, np.nan, 7.0])), ValueError,
     r"'price'.*row 5.*score transform 'clip'"),
    (lambda x: dict(x, views=np.asarray([1, 2, 3, 4, 5, np.inf, 7.0])), ValueError,
     r"'views'.*row 5.*finite"),
    (lambda x: dict(x, country=np.zeros(7)), TypeError, "'country' must be strings"),
    (lambda x: dict(x, country=np.asarray([["de", "fr"]] * 7)), ValueError,
     r"'country' must have shape \[batch\] or \[batch, 1\], got \[7, 2\]"),
    (lambda x: dict(x, user=x["user"][:5]), ValueError, r"different lengths.*'user': 5.*'price': 7|"
     r"different lengths.*'price': 7.*'user': 5"),
    (lambda x: {k: v for k, v in x.items() if k not in ("user", "views")}, KeyError,
     r"\['views', 'user'\]"),
])
def test_wrong_requests_are_refused_naming_the_feature(exported, change, error, pattern):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    bad = change(rows())
    with pytest.raises(error, match=pattern):
        client.rest_body(bad)
    with pytest.raises(error, match=pattern):
        client.grpc_request(bad)


def test_from_export_picks_the_newest_version_of_a_base_path(exported, tmp_path):
    _, path, _ = exported
    base = tmp_path / "ranker"
    for version in ("3", "12"):  # 12 > 3 numerically, not as text
        shutil.copytree(path, base / version)
    (base / "notes").mkdir()
    client = serving.ServingClient.from_export(str(base))
    assert client.version == 12 and client.path == str(base / "12")
    assert client.model_name == "ranker"
    assert serving.ServingClient.from_export(str(base / "3")).version == 3
    with pytest.raises(FileNotFoundError, match="version folders"):
        serving.ServingClient.from_export(str(base / "notes"))


def test_contract_holds_kinds_missing_encodings_and_signatures(exported):
    _, path, _ = exported
    contract = serving.read_contract(path)
    assert contract["features"]["user"] == {"dtype": "string", "kind": "hashed",
                                            "missing": "empty_string"}
    assert contract["features"]["views"]["missing"] == "nan"
    assert contract["features"]["item_id"]["missing"] == "refuse"
    assert contract["features"]["price"]["missing"] == "refuse"  # the score's clip reads it
    assert contract["features"]["video_length"]["kind"] == "score_input"
    assert contract["signatures"][serving.EXPONENTS_SIGNATURE]["inputs"][-1] == "score_exponents"
    assert contract["outputs"] == ["click", "watch_time", "score"]


def test_module_functions_accept_the_client_and_both_contract_dicts(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    contract = serving.read_contract(path)
    frame = frame_with_missing_values().drop(columns=["click", "watch_time"])
    body = client.rest_body(frame, format="inputs")
    for form in (client, contract, contract["inputs"]):
        assert json.dumps(serving.rest_body(frame, format="inputs", contract=form)) == json.dumps(body)
        request = serving.grpc_request(frame, model_name="ranker", contract=form)
        assert request == client.grpc_request(frame)


def test_module_functions_without_contract_still_fix_shapes_and_missing_strings():
    x = {"country": np.asarray([["de"], [None]], dtype=object), "price": np.float64([1.5, np.nan]),
         "item_id": np.int32([1, 2])}
    body = serving.rest_body(x, format="inputs")
    assert body["inputs"]["country"] == ["de", ""]
    request = serving.grpc_request(x, model_name="m")
    assert {k: tf.dtypes.as_dtype(v.dtype) for k, v in request.inputs.items()} == {
        "country": tf.string, "price": tf.float32, "item_id": tf.int64}
    with pytest.raises(ValueError, match="different lengths"):
        serving.rest_body(dict(x, price=np.zeros(3)))


BAD_EXPONENTS = {
    "nan": [[np.nan, 0.0]],
    "inf": [[np.inf, 0.0]],
    "negative": [[-0.5, 0.0]],
    "too_many": [[1.0, 0.0, 1.0]],
    "too_few": [[1.0]],
    "wrong_rows": [[1.0, 0.0]] * 3,
}


@pytest.mark.parametrize("case", sorted(BAD_EXPONENTS))
def test_exponent_signature_checks_score_exponents(exported, case):
    _, _, loaded = exported
    signature = loaded.signatures[serving.EXPONENTS_SIGNATURE]
    x = rows()
    inputs = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in x.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="score_exponents"):
        signature(**inputs, score_exponents=tf.constant(BAD_EXPONENTS[case], tf.float32))


@pytest.mark.parametrize("case", sorted(BAD_EXPONENTS))
def test_client_checks_score_exponents(exported, case):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    with pytest.raises(ValueError, match="score_exponents"):
        client.rest_body(rows(), score_exponents=BAD_EXPONENTS[case])
    with pytest.raises(ValueError, match="score_exponents"):
        client.grpc_request(rows(), score_exponents=BAD_EXPONENTS[case])
    with pytest.raises(ValueError, match="score_exponents"):
        serving.rest_body(rows(), format="inputs", contract=client,
                          extra={"score_exponents": BAD_EXPONENTS[case]})


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_client_score_exponents_reach_the_exponent_signature(exported, fmt):
    model, path, loaded = exported
    client = serving.ServingClient.from_export(path)
    x = rows()
    body = json.loads(json.dumps(client.rest_body(x, format=fmt, score_exponents={"click": 0.5})))
    assert body["signature_name"] == serving.EXPONENTS_SIGNATURE
    signature = loaded.signatures[serving.EXPONENTS_SIGNATURE]
    outputs = signature(**rest_to_tensors(body, signature))
    tuned = {"click": 0.5, "watch_time": 0.0}  # watch_time keeps the exported exponent
    np.testing.assert_allclose(outputs["score"], expected(model, x, tuned)["score"], rtol=1e-5)
    request = client.grpc_request(x, score_exponents=[0.5, 0.0])
    assert request.model_spec.signature_name == serving.EXPONENTS_SIGNATURE
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    np.testing.assert_allclose(signature(**inputs)["score"], outputs["score"], rtol=1e-6)
    with pytest.raises(ValueError, match="takes score_exponents"):
        client.rest_body(x, signature_name=serving.EXPONENTS_SIGNATURE)


def test_client_parses_answers_in_contract_order(exported):
    _, path, _ = exported
    client = serving.ServingClient.from_export(path)
    frame = client.parse_rest_response({"outputs": {"score": [0.5], "watch_time": [1.0],
                                                    "click": [0.2]}})
    assert list(frame.columns) == ["click", "watch_time", "score"]
    with pytest.raises(RuntimeError, match="Missing feature"):
        client.parse_rest_response({"error": "Missing feature user"})
    with pytest.raises(ValueError, match=r"lacks output\(s\) \['watch_time'\]"):
        client.parse_rest_response({"predictions": [{"click": 0.2, "score": 0.5}]})


def test_cli_style_example_request_is_valid(exported, tmp_path):
    model, path, _ = exported
    body = serving.ServingClient.from_export(os.path.dirname(path)).rest_body(
        serving.example_rows(model, num_rows=2, score=SCORE))
    assert len(body["instances"]) == 2 and set(body["instances"][0]) == set(
        serving.read_contract(path)["inputs"])
