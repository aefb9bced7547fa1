"""Export to TensorFlow Serving and talk to it."""

from keras_mtl.serving.client import (
    ServingClient,
    grpc_request,
    parse_grpc_response,
    parse_rest_response,
    rest_body,
)
from keras_mtl.serving.contract import (
    DEFAULT_SIGNATURE,
    EXPONENTS_INPUT,
    EXPONENTS_SIGNATURE,
    read_contract,
    resolve_version_path,
)
from keras_mtl.serving.export import (
    example_rows,
    export,
    input_contract,
    next_version,
    write_saved_model,
)
from keras_mtl.serving.score import FeatureTransform, ScoreSpec

__all__ = [
    "DEFAULT_SIGNATURE", "EXPONENTS_INPUT", "EXPONENTS_SIGNATURE", "FeatureTransform", "ScoreSpec",
    "example_rows", "export", "grpc_request", "input_contract", "next_version",
    "parse_grpc_response", "parse_rest_response", "read_contract", "resolve_version_path",
    "rest_body", "ServingClient", "write_saved_model",
]
