"""The exported contract: the names a SavedModel's signatures take and how a request encodes
them (`assets.extra/keras_mtl_signature.json`), shared by `export`, which writes it, and the
client, which applies it."""

from __future__ import annotations

import json
import os
import re

DEFAULT_SIGNATURE = "serving_default"
EXPONENTS_SIGNATURE = "score_with_exponents"
EXPONENTS_INPUT = "score_exponents"
CONTRACT_FILE = "keras_mtl_signature.json"
CONTRACT_FORMAT = 2
WARMUP_FILE = "tf_serving_warmup_requests"

# Format 2 entries of `features` (per input): `dtype`, `kind`, `missing` and, for an input with
# more than one value per row, `shape`, the per-row shape ([max_length] for an id list, [dim] for a
# vector; an entry without `shape` is a [batch] input, so older contracts read unchanged). Id lists
# also record `padding` (-1, the value after a row's ids), `max_length` and `truncation`
# ("keep_first": a longer row keeps its first ids).

# How a missing value of an input is sent, mirroring `keras_mtl.data.feature_arrays` (training):
# strings become "" (`string_values`), numerics stay NaN (the encoder puts NaN at the training mean),
# and integer inputs, which training refuses to read with a missing value, have no encoding.
MISSING_EMPTY_STRING = "empty_string"
MISSING_NAN = "nan"
MISSING_REFUSED = "refuse"
# An id list (`Sequence`, `MultiValued`) with no value is an empty list: a row of padding only, as
# `feature_arrays` pads a None cell in training.
MISSING_EMPTY_LIST = "empty_list"
SCORE_INPUT_KIND = "score_input"


def resolve_version_path(path: str) -> tuple[str, int | None]:
    """`(version folder, version)` for a version folder or a model base path; a base path resolves
    to its newest integer version, the one TF Serving serves by default."""
    if (os.path.exists(os.path.join(path, "saved_model.pb"))
            or os.path.exists(os.path.join(path, "assets.extra", CONTRACT_FILE))):
        name = os.path.basename(os.path.normpath(path))
        return path, int(name) if re.fullmatch(r"\d+", name) else None
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No exported model at {path!r}: not a folder.")
    versions = [int(n) for n in os.listdir(path)
                if re.fullmatch(r"\d+", n) and os.path.isdir(os.path.join(path, n))]
    if not versions:
        raise FileNotFoundError(f"{path!r} holds neither a SavedModel (saved_model.pb) nor integer "
                                "version folders (1/, 2/, ...); pass what keras_mtl.serving.export "
                                "wrote.")
    return os.path.join(path, str(max(versions))), max(versions)


def read_contract(path: str) -> dict:
    """The contract `export` wrote (`assets.extra/keras_mtl_signature.json`) of a version folder, or
    of the newest version under a model base path."""
    version_path, _ = resolve_version_path(path)
    file = os.path.join(version_path, "assets.extra", CONTRACT_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} is missing: {version_path!r} was not exported by "
                                "keras_mtl.serving.export, or its assets.extra was not copied.")
    with open(file) as handle:
        return json.load(handle)
