"""AITM (Xi et al., KDD'21): adaptive information transfer along conversion steps, calibrator."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import small_batch, small_model, small_spec
from tests.models.esmm_test import CLICK, PURCHASE, sigmoid
from tests.models.task_structure import (
    check_every_level_matches_autodiff,
    check_fresh_export,
    check_keras_round_trip,
    check_partition_covers_every_variable,
    check_trains_on_funnel,
    funnel,
    small_funnel_model,
)

ALPHA = 0.6
Y = {"click": CLICK, "purchase": np.nan_to_num(PURCHASE) * CLICK}  # end-to-end labels
Y["purchase"][14] = np.nan  # one missing label


def aitm_model(backbone="mmoe", alpha=ALPHA):
    return small_model(backbone, tasks=[km.Task("click"), km.Task("purchase")],
                       task_graph=km.layers.AITM(["click", "purchase"], calibrator_weight=alpha))


def half_active(model, x):
    """`model` with the purchase logit's bias moved so that p_purchase > p_click on about half
    of `x`'s rows: the calibrator's kink is then inside the batch."""
    logits = model.forward(x).logits
    shift = -np.median(logits[1].numpy() - logits[0].numpy())
    model.logit_layers[1].bias.assign_add([shift])
    return model


def bound(sequence=("click", "purchase"), alpha=ALPHA, width=3):
    layer = km.layers.AITM(list(sequence), calibrator_weight=alpha)
    layer.bind([km.Task(n) for n in ("click", "purchase", "other")], width)
    return layer


def test_calibrator_is_zero_when_each_step_is_below_the_previous():
    layer = bound()
    click = tf.Variable([2.0, 0.0, -1.0, 3.0])
    purchase = tf.Variable([1.0, -0.5, -1.0, -3.0])  # p_purchase <= p_click on every row
    with tf.GradientTape() as tape:
        terms = layer.row_terms([click, purchase, tf.zeros(4)])
        total = tf.add_n([tf.reduce_sum(t) for t in terms.values()])
    assert list(terms) == [1]  # the term belongs to the later step
    np.testing.assert_array_equal(terms[1], np.zeros(4))
    for g in tape.gradient(total, [click, purchase]):
        np.testing.assert_array_equal(g, np.zeros(4))


def test_calibrator_penalises_a_step_above_the_previous_with_the_right_gradient():
    layer = bound()
    click = tf.Variable([0.0, 2.0])
    purchase = tf.Variable([1.0, 0.0])  # row 0 violates, row 1 does not
    with tf.GradientTape() as tape:
        term = layer.row_terms([click, purchase, tf.zeros(2)])[1]
    d_click, d_purchase = tape.gradient(term, [click, purchase])
    ds = lambda z: sigmoid(z) * (1 - sigmoid(z))  # noqa: E731
    np.testing.assert_allclose(term, [ALPHA * (sigmoid(1.0) - 0.5), 0.0], rtol=1e-6)
    np.testing.assert_allclose(d_purchase, [ALPHA * ds(1.0), 0.0], rtol=1e-5)
    np.testing.assert_allclose(d_click, [-ALPHA * ds(0.0), 0.0], rtol=1e-5)


def test_three_steps_chain_one_term_per_transition():
    layer = bound(("click", "purchase", "other"))
    logits = [tf.constant([0.0]), tf.constant([1.0]), tf.constant([2.0])]
    terms = layer.row_terms(logits)
    np.testing.assert_allclose(terms[1], ALPHA * (sigmoid(1.0) - 0.5), rtol=1e-6)
    np.testing.assert_allclose(terms[2], ALPHA * (sigmoid(2.0) - sigmoid(1.0)), rtol=1e-6)


def test_ait_module_is_the_papers_attention():
    rng = np.random.default_rng(0)
    layer = bound(width=3)
    kernels = [rng.normal(size=(3, 3)).astype(np.float32) for _ in range(3)]
    for dense, kernel in zip(layer.attention, kernels, strict=True):
        dense.kernel.assign(kernel)
    q, p = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    z, w = layer.transfer_attention(tf.constant(q), tf.constant(p))
    u = np.stack([q, p], axis=1).astype(np.float64)  # [batch, {q_t, p_{t-1}}, k]
    h1, h2, h3 = (u @ k for k in kernels)
    scores = (h1 * h2).sum(-1) / np.sqrt(3)  # eq. 3
    expected_w = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)  # eq. 4
    np.testing.assert_allclose(w, expected_w, rtol=1e-5)
    np.testing.assert_allclose(z, (expected_w[:, :, None] * h3).sum(1), rtol=1e-4, atol=1e-6)


def test_first_step_reads_its_tower_and_the_next_reads_the_transfer():
    model = aitm_model()
    x, _ = small_batch()
    towers = [tower(r) for tower, r in zip(model.towers, model.backbone(model.encoder(x)),
                                           strict=True)]
    logits = model.forward(x).logits
    np.testing.assert_allclose(logits[0], model.logit_layers[0](towers[0])[:, 0], rtol=1e-6)
    transfer = model.task_graph.transfers[0](towers[0])  # p_1 = g_1(z_1), z_1 = q_1
    z, _ = model.task_graph.transfer_attention(towers[1], transfer)
    np.testing.assert_allclose(logits[1], model.logit_layers[1](z)[:, 0], rtol=1e-5, atol=1e-6)


def test_loss_is_cross_entropy_plus_the_calibrator_on_labelled_rows():
    model = aitm_model()
    x, _ = small_batch()
    forward = model.forward(x)
    losses = model.task_terms(Y, forward).stacked.numpy()
    p_click, p_buy = (sigmoid(np.asarray(z, np.float64)) for z in forward.logits)
    keep = ~np.isnan(Y["purchase"])
    y = np.nan_to_num(Y["purchase"])
    ce = -(y * np.log(p_buy) + (1 - y) * np.log(1 - p_buy))
    expected = (ce + ALPHA * np.maximum(p_buy - p_click, 0))[keep].mean()
    np.testing.assert_allclose(losses[1], expected, rtol=1e-5)
    ce_click = -(CLICK * np.log(p_click) + (1 - CLICK) * np.log(1 - p_click))
    np.testing.assert_allclose(losses[0], ce_click.mean(), rtol=1e-5)  # no term on step 1


@pytest.mark.parametrize("backbone", ["mmoe", "ple"])
def test_every_level_matches_autodiff(backbone):
    x, _ = small_batch()
    # A large α so that the calibrator is active on some rows at initialisation.
    check_every_level_matches_autodiff(lambda: half_active(aitm_model(backbone), x), x, Y)
    model = half_active(aitm_model(backbone), x)
    calibrator = model.task_graph.row_terms(model.forward(x).logits)[1].numpy()
    assert 4 <= np.count_nonzero(calibrator) <= 12, "the calibrator is active on some rows only"
    check_partition_covers_every_variable(model)
    graph = {id(v) for v in model.task_graph.trainable_variables}
    assert len(graph) == 5 and graph <= {id(v) for v in model.head_variables}


def test_the_click_head_learns_from_the_purchase_loss():
    model = aitm_model()
    x, _ = small_batch()
    with tf.GradientTape() as tape:
        purchase_loss = model.task_losses(x, Y).shares[1]
    grads = tape.gradient(purchase_loss, model.towers[0].trainable_variables)
    assert all(g is not None and np.any(g.numpy()) for g in grads)


def test_attention_weights_are_inspectable(tmp_path):
    model = aitm_model()
    x, _ = small_batch()
    weights = model.gate_weights(x)["ait_purchase"].numpy()
    assert weights.shape == (16, 2)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)


def test_round_trip_and_fresh_export(tmp_path):
    x, _ = small_batch()
    restored = check_keras_round_trip(aitm_model(), x, Y, tmp_path)
    assert isinstance(restored.task_graph, km.layers.AITM)
    assert restored.task_graph.calibrator_weight == ALPHA
    names = check_fresh_export(restored, tmp_path)
    assert [n for n in names if "transfer" in n]


def test_trains_on_the_funnel_with_every_level():
    data = funnel(end_to_end=True)
    check_trains_on_funnel(data, lambda d: small_funnel_model(
        d, task_graph=km.layers.AITM(["click", "purchase"], calibrator_weight=ALPHA)))


def test_invalid_sequences():
    with pytest.raises(ValueError, match="at least two"):
        km.layers.AITM(["click"])
    with pytest.raises(ValueError, match="not tasks"):
        aitm = km.layers.AITM(["click", "cart"])
        small_model(tasks=[km.Task("click"), km.Task("purchase")], task_graph=aitm)
    with pytest.raises(ValueError, match="end-to-end"):
        small_model(tasks=[km.Task("click"), km.Task("purchase", sample_space="click")],
                    task_graph=km.layers.AITM(["click", "purchase"]))
    with pytest.raises(ValueError, match="binary"):
        small_model(tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
                    task_graph=km.layers.AITM(["click", "watch_time"]))
    with pytest.raises(ValueError, match="tower_units"):
        km.MultiTaskModel(features=small_spec(),
                          tasks=[km.Task("click"), km.Task("purchase")],
                          backbone=km.layers.SharedBottom([4]), tower_units=[],
                          task_graph=km.layers.AITM(["click", "purchase"]))
