"""DBMTL (Wang et al., arXiv 1902.09154; EasyRec's dbmtl): towers that read their parents' heads."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import small_batch, small_model
from tests.models.esmm_test import CLICK, PURCHASE
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
TASKS = [km.Task("click"), km.Task("purchase", sample_space="click")]


def dbmtl_model(backbone="mmoe", tasks=TASKS):
    return small_model(backbone, tasks=tasks, task_graph=km.layers.DBMTL(
        {"purchase": ["click"]}, relation_units=[3]))


def bound(depends_on, names=("click", "purchase"), width=2, units=(1,), activation="linear"):
    layer = km.layers.DBMTL(depends_on, relation_units=list(units), activation=activation)
    layer.bind([km.Task(n) for n in names], width)
    return layer


def test_a_child_reads_its_parents_relation_output():
    layer = bound({"purchase": ["click"]}, units=(2,))
    rng = np.random.default_rng(0)
    q = [rng.normal(size=(4, 2)).astype(np.float32) for _ in range(2)]
    out, weights = layer.apply([tf.constant(v) for v in q])
    assert weights == {}

    def dense(mlp, v):
        kernel, bias = (w.numpy() for w in mlp.trainable_variables)
        return v @ kernel + bias

    r_click = dense(layer.relations[0], q[0])
    np.testing.assert_allclose(out[0], r_click, rtol=1e-5)
    np.testing.assert_allclose(out[1], dense(layer.relations[1], np.concatenate([q[1], r_click], 1)),
                               rtol=1e-5, atol=1e-6)


def test_the_parent_gets_the_gradient_of_its_child_and_not_the_reverse():
    layer = bound({"purchase": ["click"]})  # linear relations of one unit: r_p = W_p [q_p; r_c]
    q = [tf.constant([[1.0, 2.0], [0.5, -1.0]]), tf.constant([[3.0, 0.0], [1.0, 1.0]])]
    with tf.GradientTape(persistent=True) as tape:
        r_click, r_purchase = layer.apply(q)[0]
        child, parent = tf.reduce_sum(r_purchase), tf.reduce_sum(r_click)
    w_click = layer.relations[0].trainable_variables[0]
    w_purchase = layer.relations[1].trainable_variables[0]
    # ∂Σ r_p / ∂W_c = W_p[r_c row] · Σ_b q_c[b]
    expected = w_purchase.numpy()[2, 0] * q[0].numpy().sum(0)[:, None]
    np.testing.assert_allclose(tape.gradient(child, w_click), expected, rtol=1e-6)
    assert tape.gradient(parent, w_purchase) is None
    del tape


def test_the_click_tower_learns_from_the_purchase_loss_in_the_model():
    model = dbmtl_model()
    x, _ = small_batch()
    with tf.GradientTape(persistent=True) as tape:
        losses = model.task_losses(x, Y).shares
    from_child = tape.gradient(losses[1], model.towers[0].trainable_variables)
    assert all(g is not None and np.any(g.numpy()) for g in from_child)
    from_parent = tape.gradient(losses[0], model.towers[1].trainable_variables)
    assert all(g is None for g in from_parent)
    del tape


def test_tasks_run_in_topological_order_whatever_their_declared_order():
    layer = bound({"a": ["c"], "c": ["b"]}, names=("a", "b", "c"))
    assert layer._order == [1, 2, 0]
    with pytest.raises(ValueError, match="cycle"):
        bound({"a": ["b"], "b": ["a"]}, names=("a", "b"))
    with pytest.raises(ValueError, match="not tasks"):
        bound({"purchase": ["cart"]})
    with pytest.raises(ValueError, match="self-loop"):
        bound({"purchase": ["purchase"]})


@pytest.mark.parametrize("backbone", ["mmoe", "ple"])
def test_every_level_matches_autodiff(backbone):
    x, _ = small_batch()
    check_every_level_matches_autodiff(lambda: dbmtl_model(backbone), x, Y)
    model = dbmtl_model(backbone)
    check_partition_covers_every_variable(model)
    graph = {id(v) for v in model.task_graph.trainable_variables}
    assert len(graph) == 4 and graph <= {id(v) for v in model.head_variables}


def test_with_esmm_and_escm2_tasks_too():
    tasks = [km.Task("click"), km.Task("purchase", esmm_parent="click", counterfactual="dr")]
    x, _ = small_batch()
    check_every_level_matches_autodiff(lambda: dbmtl_model(tasks=tasks), x, Y)


def test_round_trip_and_fresh_export(tmp_path):
    x, _ = small_batch()
    restored = check_keras_round_trip(dbmtl_model(), x, Y, tmp_path)
    assert restored.task_graph.depends_on == {"purchase": ["click"]}
    names = check_fresh_export(restored, tmp_path)
    assert [n for n in names if "relation" in n]


def test_trains_on_the_funnel_with_every_level():
    data = funnel()  # purchase in the click sample space
    check_trains_on_funnel(data, lambda d: small_funnel_model(
        d, task_graph=km.layers.DBMTL({"purchase": ["click"]}, relation_units=[4])))
