"""One small exported model per test module (exports take seconds)."""

import pytest
import tensorflow as tf

from keras_mtl import serving
from tests.helpers import small_model
from tests.serving.export_test import SCORE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_model("cgc")
    base = str(tmp_path_factory.mktemp("export") / "ranker")
    path = serving.export(model, base, score=SCORE)
    return model, path, tf.saved_model.load(path)
