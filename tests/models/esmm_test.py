"""ESMM (Ma et al., SIGIR 2018): pCTCVR = pCTR · pCVR trained over the entire impression space."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.models.losses import esmm_cross_entropy
from tests.helpers import small_batch, small_model
from tests.models.multi_task_model_test import assert_gradients_close, plain_autodiff_gradients

CLICK = np.array([1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0], np.float32)
PURCHASE = np.array([1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, np.nan, 0], np.float32)


def esmm_model(**kwargs):
    return small_model("mmoe", tasks=[km.Task("click"), km.Task("purchase", esmm_parent="click")],
                       **kwargs)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_loss_is_ctcvr_cross_entropy_over_all_impressions():
    model = esmm_model()
    x, _ = small_batch()
    logits = model.forward(x, training=False).logits
    terms = model.task_loss_function({"click": CLICK, "purchase": PURCHASE}, logits)
    losses, weights = terms.stacked, terms.row_weights
    p = sigmoid(logits[0].numpy().astype(np.float64)) * sigmoid(logits[1].numpy())
    label = CLICK * np.nan_to_num(PURCHASE)
    # Row 14 is clicked with an unknown purchase: masked. Every other impression counts.
    keep = np.ones(16, bool)
    keep[14] = False
    expected = -(label * np.log(p) + (1 - label) * np.log(1 - p))[keep].mean()
    np.testing.assert_allclose(losses[1], expected, rtol=1e-5)
    np.testing.assert_array_equal(weights[1].numpy(), keep.astype(np.float32))


def test_conversion_labels_on_unclicked_rows_never_matter():
    model = esmm_model(balancer=km.balancers.get("ew", level="representation"))
    x, _ = small_batch()
    noisy = np.where(CLICK > 0, PURCHASE, np.where(np.arange(16) % 2, 1.0, np.nan))
    a, variables, terms_a, _, *_ = model.compute_gradients(x, {"click": CLICK, "purchase": PURCHASE})
    b, _, terms_b, _, *_ = model.compute_gradients(x, {"click": CLICK, "purchase": noisy})
    np.testing.assert_allclose(terms_a, terms_b, rtol=1e-6)
    assert_gradients_close(a, b, variables, rtol=1e-6)


def test_cross_entropy_is_stable_for_extreme_logits():
    parent = tf.constant([30.0, -30.0, 0.0, 15.0], tf.float32)
    child = tf.constant([30.0, 5.0, -40.0, 15.0], tf.float32)
    labels = tf.constant([1.0, 0.0, 1.0, 0.0])
    ours = esmm_cross_entropy(labels, parent, child).numpy()
    p = sigmoid(parent.numpy().astype(np.float64)) * sigmoid(child.numpy().astype(np.float64))
    reference = -(labels.numpy() * np.log(p) + (1 - labels.numpy()) * np.log1p(-p))
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours[:3], reference[:3], rtol=1e-4, atol=1e-6)
    assert ours[3] > 10  # p ≈ 1 with label 0: large but finite


@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
def test_every_level_matches_autodiff(level):
    model = esmm_model(balancer=km.balancers.get("ew", level=level))
    x, _ = small_batch()
    y = {"click": CLICK, "purchase": PURCHASE}
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    assert_gradients_close(grads, plain_autodiff_gradients(model, x, y), variables)


def test_outputs_metrics_and_export(tmp_path):
    model = esmm_model()
    model.compile(optimizer="adam")
    x, _ = small_batch()
    y = {"click": CLICK, "purchase": PURCHASE}
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["purchase_ctcvr"], out["click"] * out["purchase"], rtol=1e-6)
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    auc = keras.metrics.AUC(num_thresholds=1000)
    clicked = (CLICK > 0) & ~np.isnan(PURCHASE)
    auc.update_state(PURCHASE[clicked], out["purchase"][clicked])
    np.testing.assert_allclose(logs["purchase_auc"], auc.result(), rtol=1e-5)

    path = km.serving.export(model, str(tmp_path / "esmm"), warmup=False)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    served = signature(**{k: tf.constant(v) for k, v in x.items()})
    assert set(served) == {"click", "purchase", "purchase_ctcvr", "score"}
    np.testing.assert_allclose(served["purchase_ctcvr"], served["click"] * served["purchase"],
                               rtol=1e-6)
    np.testing.assert_allclose(served["score"], served["purchase_ctcvr"], rtol=1e-5)  # w = 1, 1


def test_invalid_esmm_definitions():
    with pytest.raises(ValueError, match="use one"):
        km.Task("purchase", esmm_parent="click", sample_space="click")
    with pytest.raises(ValueError, match="must be binary"):
        km.Task("value", kind="regression", esmm_parent="click")
    with pytest.raises(ValueError, match="esmm_parent 'click' must be a binary task"):
        small_model(tasks=[km.Task("click", kind="regression"),
                           km.Task("purchase", esmm_parent="click")])
    with pytest.raises(ValueError, match="chains are not supported"):
        small_model(tasks=[km.Task("a"), km.Task("b", esmm_parent="a"),
                           km.Task("c", esmm_parent="b")])
