"""`model.summary()` names the tasks and real shapes; Keras' `model.export()` writes our SavedModel."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import small_batch, small_model


def _summary(model, **kwargs) -> str:
    lines = []
    model.summary(print_fn=lines.append, **kwargs)
    return "\n".join(lines)


def test_summary_lists_layers_with_shapes_and_the_tasks():
    tasks = [km.Task("click", pos_weight=2.0), km.Task("purchase", sample_space="click"),
             km.Task("watch_time", kind="regression", loss="huber")]
    model = small_model(tasks=tasks, balancer="pcgrad")
    text = _summary(model)
    assert "?" not in text
    layers = text.split("Tasks")[0]
    assert "features (FeatureEncoder)  (None, 11)" in layers
    assert "click_tower (MLP)" in layers and "(None, 4)" in layers
    assert "pcgrad" not in layers  # the balancer is not a layer of the network...
    assert "Balancer: pcgrad (PCGrad) at the parameters level" in text  # ...it has its line
    rows = {line.split()[0]: line for line in text.split("Tasks")[1].splitlines()[3:6]}
    assert rows["click"].split()[1:4] == ["binary", "bce", "(pos_weight=2)"]
    assert "click = 1" in rows["purchase"]
    assert "huber" in rows["watch_time"] and "value (None,)" in rows["watch_time"]
    assert f"Total params: {model.count_params():,}" in text


def test_summary_of_an_esmm_child_and_nested_layers():
    model = small_model(tasks=[km.Task("click"), km.Task("buy", esmm_parent="click")],
                        backbone="ple")
    text = _summary(model, expand_nested=True)
    assert "ESMM under click" in text and "p(click)·p(buy)" in text
    assert "└ " in text  # PLE's experts and gates


def test_keras_export_writes_a_callable_saved_model(tmp_path):
    model = small_model()
    x, _ = small_batch(6)
    path = model.export(os.path.join(tmp_path, "exported"), verbose=False)
    assert path == os.path.join(tmp_path, "exported")
    signature = tf.saved_model.load(path).signatures["serving_default"]
    served = signature(**x)
    expected = model.predict(x, verbose=0)
    assert set(served) == {"click", "watch_time", "score"}
    for name in ("click", "watch_time"):
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-5, atol=1e-6)
    assert os.path.exists(os.path.join(path, "assets.extra", "keras_mtl_signature.json"))
    with pytest.raises(ValueError, match="tf_saved_model. only"):
        model.export(os.path.join(tmp_path, "other"), format="onnx")
