"""ESCM² (Wang et al., SIGIR'22): ESMM plus the counterfactual CVR risk, IPS and DR variants."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.models.losses import MAX_INVERSE_PROPENSITY, counterfactual_risk
from tests.helpers import small_batch, small_model
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

Y = {"click": CLICK, "purchase": PURCHASE}
LAMBDA = 0.7


def escm2_model(variant, backbone="mmoe", weight=LAMBDA):
    return small_model(backbone, tasks=[
        km.Task("click"),
        km.Task("purchase", esmm_parent="click", counterfactual=variant,
                counterfactual_weight=weight)])


def by_hand(logits, imputed=None):
    """The purchase task's loss from the paper's formulas, in float64."""
    z_ctr, z_cvr = (np.asarray(z, np.float64) for z in logits)
    p_ctr, p_cvr = sigmoid(z_ctr), sigmoid(z_cvr)
    o = CLICK.astype(np.float64)
    conversion = o * np.nan_to_num(PURCHASE)
    ctcvr = p_ctr * p_cvr
    global_risk = -(conversion * np.log(ctcvr) + (1 - conversion) * np.log(1 - ctcvr))
    error = -(conversion * np.log(p_cvr) + (1 - conversion) * np.log(1 - p_cvr))
    propensity = np.maximum(p_ctr, 1 / MAX_INVERSE_PROPENSITY)
    if imputed is None:
        risk = o * error / propensity
    else:
        delta = error - imputed
        risk = imputed + o * delta / propensity + o * delta ** 2 / propensity
    keep = np.ones(16, bool)
    keep[14] = False  # clicked, purchase unknown: masked like ESMM
    return (global_risk + LAMBDA * risk)[keep].mean()


def test_ips_loss_is_the_hand_computation():
    model = escm2_model("ips")
    x, _ = small_batch()
    forward = model.forward(x)
    assert forward.imputations is None
    loss = model.task_terms(Y, forward).stacked[1]
    np.testing.assert_allclose(loss, by_hand(forward.logits), rtol=1e-5)


def test_dr_loss_is_the_hand_computation():
    model = escm2_model("dr")
    x, _ = small_batch()
    forward = model.forward(x)
    imputed = forward.imputations[1].numpy().astype(np.float64)
    assert forward.imputations[0] is None and np.all(imputed > 0)  # softplus
    loss = model.task_terms(Y, forward).stacked[1]
    np.testing.assert_allclose(loss, by_hand(forward.logits, imputed), rtol=1e-5)
    with pytest.raises(ValueError, match="imputation"):
        model.task_loss_function(Y, forward.logits)


def test_regulariser_gradients_are_analytic_and_the_propensity_is_a_constant():
    clicked = tf.constant([True, True, False, True])
    labels = tf.constant([1.0, 0.0, 0.0, 1.0])
    parent = tf.Variable([0.3, -1.0, 2.0, -4.0])  # the last row's pCTR is clipped at 1/15
    child = tf.Variable([0.5, 1.5, -0.2, 0.1])
    imputed = tf.Variable([0.4, 0.2, 0.9, 0.6])
    for variant in ("ips", "dr"):
        with tf.GradientTape(persistent=True) as tape:
            risk = counterfactual_risk(variant, clicked, labels, parent, child,
                                       imputed if variant == "dr" else None)
        o = clicked.numpy().astype(np.float64)
        t = np.maximum(sigmoid(parent.numpy().astype(np.float64)), 1 / MAX_INVERSE_PROPENSITY)
        p = sigmoid(child.numpy().astype(np.float64))
        y = labels.numpy()
        e = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        de = p - y  # ∂e/∂z
        if variant == "ips":
            np.testing.assert_allclose(risk, o * e / t, rtol=1e-5)
            np.testing.assert_allclose(tape.gradient(risk, child), o * de / t, rtol=1e-5)
        else:
            d = e - imputed.numpy()
            np.testing.assert_allclose(risk, imputed.numpy() + o * d / t + o * d ** 2 / t,
                                       rtol=1e-5)
            np.testing.assert_allclose(tape.gradient(risk, child), o * de * (1 + 2 * d) / t,
                                       rtol=1e-5)
            np.testing.assert_allclose(tape.gradient(risk, imputed), 1 - o / t - 2 * o * d / t,
                                       rtol=1e-5)
        # The propensity weighs the risk; the regulariser does not train the CTR head.
        assert tape.gradient(risk, parent) is None
        del tape


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_every_level_matches_autodiff(variant):
    x, _ = small_batch()
    check_every_level_matches_autodiff(lambda: escm2_model(variant), x, Y)
    check_partition_covers_every_variable(escm2_model(variant))


def test_imputation_head_is_a_head_of_the_conversion_task():
    model = escm2_model("dr")
    imputation = {id(v) for layer in (*model.imputation_towers, *model.imputation_logits)
                  for v in layer.trainable_variables}
    assert len(imputation) == 4 and imputation <= {id(v) for v in model.head_variables}
    x, _ = small_batch()
    with tf.GradientTape() as tape:
        click_loss = model.task_losses(x, Y).shares[0]
    grads = tape.gradient(click_loss, [v for v in model.trainable_variables
                                       if id(v) in imputation])
    assert all(g is None for g in grads)  # only the conversion task reads it


def test_round_trip_and_fresh_export_leave_the_imputation_head_out_of_serving(tmp_path):
    model = escm2_model("dr")
    x, _ = small_batch()
    restored = check_keras_round_trip(model, x, Y, tmp_path)
    assert restored.tasks[1].counterfactual == "dr"
    assert restored.tasks[1].counterfactual_weight == LAMBDA
    names = check_fresh_export(restored, tmp_path)
    assert not [n for n in names if "imputation" in n]
    assert "purchase_ctcvr" in restored.predict(x, verbose=0)


def test_trains_on_the_funnel_with_every_level():
    data = funnel(esmm=True)  # DR: the IPS loss plus the imputation head
    tasks = [km.Task("click"), km.Task("purchase", esmm_parent="click", counterfactual="dr")]
    check_trains_on_funnel(data, lambda d: small_funnel_model(d, tasks=tasks))


def test_invalid_counterfactual_definitions():
    with pytest.raises(ValueError, match="set esmm_parent"):
        km.Task("purchase", sample_space="click", counterfactual="ips")
    with pytest.raises(ValueError, match="one of"):
        km.Task("purchase", esmm_parent="click", counterfactual="snips")
    with pytest.raises(ValueError, match="applies with"):
        km.Task("purchase", esmm_parent="click", counterfactual_weight=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        km.Task("purchase", esmm_parent="click", counterfactual="dr", counterfactual_weight=-1)
