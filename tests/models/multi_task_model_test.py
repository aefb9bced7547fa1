"""MultiTaskModel: gradient exactness at every balancer level, masking, sample spaces, faults."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import (
    BACKBONES,
    assert_same_outputs,
    small_batch,
    small_model,
    small_spec,
    xla_data,
    xla_spec,
)


def plain_autodiff_gradients(model, x, y, weights=(1.0, 1.0)):
    """Reference: Σ_k w_k L_k (+ the layer losses) of an ordinary (undetached) forward pass, by
    tf autodiff."""
    with tf.GradientTape() as tape:
        forward = model.forward(x, training=True)
        losses = model.task_terms(y, forward).stacked  # ESCM²-DR: with its imputations
        total = tf.reduce_sum(tf.constant(weights, tf.float32) * losses)
        if forward.auxiliary is not None:  # layer losses (DSelect-k), weight 1 at every level
            total += forward.auxiliary
    return tape.gradient(total, model.trainable_variables)


def as_dense(g):
    return np.asarray(tf.convert_to_tensor(g))


def assert_gradients_close(ours, reference, variables, rtol=1e-5):
    for g, r, v in zip(ours, reference, variables, strict=True):
        if r is None:
            assert g is None or not np.any(as_dense(g)), v.path
            continue
        assert g is not None, f"no gradient for {v.path}"
        g, r = as_dense(g), as_dense(r)
        error = np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12)
        assert error < rtol, f"{v.path}: relative error {error:.2e}"


def test_the_balanced_cut_leaves_out_tensors_no_shared_parameter_produces():
    """MMoE's cut is its experts' outputs and the gate input. With numeric features only, the
    gate input is the raw (normalised) features: no shared parameter produces it, so a task's
    gradient there updates nothing and balancers must not see it. The representation-level
    matrix is then exactly ∂L_k/∂(expert outputs), by plain autodiff; with an embedding in the
    encoder the gate input is kept (its gradient trains the table)."""
    n = 32
    rng = np.random.default_rng(0)
    x = {f"x{i}": tf.constant(rng.normal(size=n), tf.float32) for i in range(4)}
    y = {"click": tf.constant(rng.integers(0, 2, n), tf.float32),
         "watch_time": tf.constant(rng.normal(size=n), tf.float32)}
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(
        features=km.FeatureSpec([km.Numeric(f"x{i}") for i in range(4)]),
        tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[4],
        balancer=km.balancers.get("mgda", level="representation"))
    gradients = model.task_gradients(x, y)
    (experts,) = gradients.layout.cut_tensors
    with tf.GradientTape(persistent=True) as tape:
        forward = model.forward(x)
        losses = model.task_terms(y, forward, features=x).weighted
    (cut,) = forward.cut
    assert cut.shape == experts.shape and cut.shape.rank == 3  # [batch, experts, units]
    expected = np.stack([np.ravel(tape.gradient(loss, cut)) for loss in losses])
    np.testing.assert_allclose(gradients.as_matrix().numpy(), expected, rtol=1e-5, atol=1e-7)
    # The update still reaches every shared parameter exactly (ew: the summed-loss gradient).
    model.set_balancer(km.balancers.get("ew", level="representation"))
    ours, variables, *_ = model.compute_gradients(x, y)
    assert_gradients_close(ours, plain_autodiff_gradients(model, x, y), variables)

    embedded = small_model(balancer=km.balancers.get("ew", level="representation"))
    assert len(embedded.task_gradients(*small_batch(8)).layout.cut_tensors) == 2


def test_freezing_the_encoder_takes_its_gate_input_out_of_the_balanced_cut():
    """With trainable embeddings the gate input is balanced; frozen, it is not (nothing shared
    produces it), and the balancer built for the old cut is refused at compile rather than fed
    a different number of tensors."""
    x, y = small_batch(16)
    model = small_model(balancer=km.balancers.get("ew", level="representation"))
    model.compile(optimizer="sgd")
    assert model.balanced_cut() == (0, 1)
    model.encoder.trainable = False
    assert model.balanced_cut() == (0,)
    with pytest.raises(ValueError, match="built for 2 gradient tensors at the representation"):
        model.compile(optimizer="sgd")
    model.compile(optimizer="sgd", balancer=km.balancers.get("ew", level="representation"))
    ours, variables, *_ = model.compute_gradients(x, y)
    assert_gradients_close(ours, plain_autodiff_gradients(model, x, y), variables)
    model.encoder.trainable = True  # unfrozen: the gate input's gradient trains the tables again
    model.compile(optimizer="sgd", balancer=km.balancers.get("ew", level="representation"))
    assert model.balanced_cut() == (0, 1)
    ours, variables, *_ = model.compute_gradients(x, y)
    assert_gradients_close(ours, plain_autodiff_gradients(model, x, y), variables)
    # First asked inside a trace (frozen again, nothing recompiled): found there too.
    model.encoder.trainable = False
    lengths = []

    @tf.function
    def cut_length(x):
        forward = model.forward(x)
        lengths.append(len(forward.cut))
        return forward.logits

    cut_length(x)
    assert lengths == [1] and model.balanced_cut() == (0,)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
def test_every_level_gives_the_summed_loss_gradient_for_ew(backbone, level):
    model = small_model(backbone)
    model.set_balancer("ew", level=level)
    x, y = small_batch()
    reference = plain_autodiff_gradients(model, x, y)
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    assert_gradients_close(grads, reference, variables)


@pytest.mark.parametrize("backbone", ["mmoe", "ple"])
@pytest.mark.parametrize("level", ["representation", "parameters"])
def test_linear_weighting_agrees_across_levels_heads_included(backbone, level):
    model = small_model(backbone)
    model.set_balancer("static", weights=[0.3, 2.5], level=level)
    x, y = small_batch(seed=3)
    reference = plain_autodiff_gradients(model, x, y, weights=(0.3, 2.5))
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    assert_gradients_close(grads, reference, variables)


def test_densified_embeddings_at_parameter_level_are_exact_too():
    model = small_model("mmoe", dense_embedding_gradients=True)
    model.set_balancer("static", weights=[1.5, 0.5], level="parameters")
    x, y = small_batch(seed=5)
    reference = plain_autodiff_gradients(model, x, y, weights=(1.5, 0.5))
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    assert_gradients_close(grads, reference, variables)


@pytest.mark.parametrize("balancer", ["multibalance", "mgda", "uw"])
def test_embedding_tables_keep_sparse_gradients_under_every_level(balancer):
    # A 10M-row table must never be densified per task (issue #7): its gradient stays
    # IndexedSlices over at most one row per looked-up id, whatever level balances.
    model = small_model("mmoe")
    model.set_balancer(balancer)
    x, y = small_batch(n=16)
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    tables = {id(v) for v in model.encoder.embedding_tables}
    assert len(tables) == 3
    for g, v in zip(grads, variables, strict=True):
        if id(v) in tables:
            assert isinstance(g, tf.IndexedSlices), (balancer, v.path)
            assert g.indices.shape[0] <= 16, (balancer, v.path)  # one per lookup


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_head_variables_only_receive_their_own_tasks_gradient(backbone):
    model = small_model(backbone)
    x, y = small_batch()
    heads = model.backbone.head_layers()
    per_task_vars = [
        [v for layer in heads[k] for v in layer.trainable_variables]
        + model.towers[k].trainable_variables + model.logit_layers[k].trainable_variables
        for k in range(2)
    ]
    with tf.GradientTape(persistent=True) as tape:
        logits = model.forward(x, training=True).logits
        losses = model.task_loss_function(y, logits).stacked
    for k in range(2):
        other = per_task_vars[1 - k]
        for g in tape.gradient(losses[k], other):
            assert g is None or not np.any(as_dense(g))
    # And the shared/head partition covers every trainable variable exactly once.
    ids = [id(v) for v in model.shared_variables + model.head_variables]
    assert sorted(ids) == sorted(id(v) for v in model.trainable_variables
                                 if id(v) not in {id(b) for b in model.balancer.weights})


# ------------------------------------------------------------------------------------ masking
def batch_without_row(x, y, row):
    keep = [i for i in range(int(next(iter(y.values())).shape[0])) if i != row]
    return ({k: tf.gather(v, keep) for k, v in x.items()},
            {k: tf.gather(v, keep) for k, v in y.items()})


@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
def test_a_fully_masked_row_changes_no_gradient(level):
    model = small_model("ple")
    model.set_balancer("ew", level=level)
    x, y = small_batch()
    masked = {k: tf.tensor_scatter_nd_update(v, [[4]], [np.nan]) for k, v in y.items()}
    with_masked_row, _, _, _, *_ = model.compute_gradients(x, masked)
    without_row, variables, _, _, *_ = model.compute_gradients(*batch_without_row(x, y, 4))
    assert_gradients_close(with_masked_row, without_row, variables)


def test_a_masked_label_is_not_a_negative():
    model = small_model("mmoe", tasks=[km.Task("click", missing_value=-1.0),
                                       km.Task("watch_time", kind="regression")])
    x, y = small_batch()
    logits = model.forward(x, training=False).logits
    y_masked = dict(y, click=tf.tensor_scatter_nd_update(y["click"], [[0], [1]], [-1.0, -1.0]))
    terms = model.task_loss_function(y_masked, logits)
    losses, weights = terms.stacked, terms.row_weights
    rest = slice(2, None)
    expected = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=y["click"][rest], logits=logits[0][rest]))
    np.testing.assert_allclose(losses[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(weights[0][:2], [0.0, 0.0])


def funnel_model(level="losses"):
    tasks = [km.Task("click"), km.Task("purchase", sample_space="click")]
    return small_model("mmoe", tasks=tasks, balancer=km.balancers.get("ew", level=level))


@pytest.mark.parametrize("level", ["losses", "representation"])
def test_sample_space_ignores_labels_outside_it(level):
    model = funnel_model(level)
    x, _ = small_batch()
    click = tf.constant([1.0, 0.0] * 8)
    purchase = tf.constant([1.0, 0.0, 0.0, 0.0] * 4)
    # Garbage purchase labels on unclicked rows must not matter.
    purchase_noisy = tf.where(click > 0, purchase, tf.ones_like(purchase))
    a, variables, terms_a, _, *_ = model.compute_gradients(x, {"click": click, "purchase": purchase})
    b, _, terms_b, _, *_ = model.compute_gradients(x, {"click": click, "purchase": purchase_noisy})
    assert_gradients_close(a, b, variables, rtol=1e-6)
    np.testing.assert_allclose(terms_a, terms_b, rtol=1e-6)


@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
def test_an_empty_sample_space_contributes_exactly_zero(level):
    model = funnel_model(level)
    x, _ = small_batch()
    y = {"click": tf.zeros([16]), "purchase": tf.ones([16])}
    grads, variables, terms, _, *_ = model.compute_gradients(x, y)
    assert float(terms[1]) == 0.0
    for g, v in zip(grads, variables, strict=True):
        if g is not None:
            assert np.all(np.isfinite(as_dense(g))), v.path
    purchase_head = model.towers[1].trainable_variables + model.logit_layers[1].trainable_variables
    by_id = {id(v): g for g, v in zip(grads, variables, strict=True)}
    for v in purchase_head:
        assert not np.any(as_dense(by_id[id(v)]))


# ------------------------------------------------------------------------------------ training
def xla_model(backbone="mmoe", **kwargs):
    return km.MultiTaskModel(
        features=xla_spec(), tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES[backbone](), tower_units=[8], **kwargs,
    )


@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
def test_fit_with_jit_compile_learns(level):
    x, y = xla_data(512)
    model = xla_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    before = model.evaluate(x, y, batch_size=128, return_dict=True, verbose=0)
    history = model.fit(x, y, batch_size=64, epochs=4, verbose=0,
                        balancer=km.balancers.get("ew", level=level))
    after = model.evaluate(x, y, batch_size=128, return_dict=True, verbose=0)
    assert model.jit_compile is True
    assert after["loss"] < 0.7 * before["loss"]
    assert after["click_auc"] > 0.9
    assert history.history["skipped_steps"][-1] == 0


def test_fit_balancer_switch_retraces_the_step():
    x, y = xla_data(128)
    model = xla_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, balancer="ew")
    tower = model.towers[0].trainable_variables
    frozen = [np.asarray(v) for v in tower]
    # Weight 0 on the click task: its tower gets exactly zero gradient, so SGD leaves it alone.
    # (If the traced ew step were reused, the tower would move.)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              balancer=km.balancers.get("static", weights=[0.0, 1.0]))
    assert model.balancer.name_in_registry == "static"
    for before, v in zip(frozen, model.towers[0].trainable_variables, strict=True):
        np.testing.assert_array_equal(before, np.asarray(v))
    assert len([lyr for lyr in model._flatten_layers() if isinstance(lyr, km.balancers.Balancer)]) == 1


def test_logs_hold_running_means_of_per_task_losses_and_metrics():
    x, y = xla_data(256)
    model = xla_model()
    model.compile(optimizer="adam")
    logs = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "click_loss", "watch_time_loss", "click_auc", "click_ne",
                         "click_logloss", "click_pcoc", "click_ece", "watch_time_rmse"}
    # Running means over batches equal the full-data values for equal-sized batches, and the
    # calibration metrics' sums are exact over any batching.
    full = model.evaluate(x, y, batch_size=256, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["click_loss"], full["click_loss"], rtol=1e-5)
    for name in ("click_logloss", "click_pcoc", "click_ece", "click_ne"):
        np.testing.assert_allclose(logs[name], full[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(logs["watch_time_rmse"], full["watch_time_rmse"], rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["click_loss"] + logs["watch_time_loss"],
                               rtol=1e-5)


def test_training_logs_show_each_tasks_balancer_weight():
    x, y = xla_data(64)
    model = xla_model(balancer=km.balancers.get("static", weights=[1.0, 0.25]))
    model.compile(optimizer="adam")
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    np.testing.assert_allclose(history.history["click_weight"], [1.0, 1.0])
    np.testing.assert_allclose(history.history["watch_time_weight"], [0.25, 0.25])
    logs = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    assert not any(key.endswith("_weight") for key in logs)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_non_finite_batch_is_skipped_without_touching_state(jit_compile):
    # With XLA the update is computed and selected (`guard.apply_if(select=True)`), without it a
    # branch skips it: either way nothing the optimizer owns may move.
    x, y = xla_data(64)
    model = xla_model(balancer=km.balancers.get("ple_schedule", decay=0.5, unit="step"))
    model.compile(optimizer="adam", jit_compile=jit_compile)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    weights = [np.asarray(v) for v in model.weights]
    optimizer_state = [np.asarray(v) for v in model.optimizer.variables]
    bad = dict(y, watch_time=np.full_like(y["watch_time"], np.inf))
    # The epoch's only step is skipped: fit says so (and its logs are NaN, not loss 0.0).
    with pytest.raises(RuntimeError, match=r"all 1 training steps were skipped \(1 non-finite loss\)"):
        model.fit(x, bad, batch_size=64, epochs=1, verbose=0)
    history = model.history
    assert history.history["skipped_steps"] == [1.0]
    assert history.history["skipped_nonfinite_loss"] == [1.0]
    assert np.isnan(history.history["loss"][0])
    for before, v in zip(weights, model.weights, strict=True):
        np.testing.assert_array_equal(before, np.asarray(v), err_msg=v.path)
    for before, v in zip(optimizer_state, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(before, np.asarray(v), err_msg=v.path)
    assert model.jit_compile is jit_compile


def test_the_selected_update_under_xla_is_the_branch_update_without_it():
    x, y = xla_data(64)
    weights = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        model = xla_model()
        model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=jit_compile)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        assert int(model.optimizer.iterations) == 2
        weights.append([np.asarray(v) for v in model.weights])
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_famo_updates_its_logits_from_the_same_batch_after_the_step():
    x, y = xla_data(64)
    model = xla_model(balancer=km.balancers.get("famo", learning_rate=0.1, weight_decay=0.0))
    model.compile(optimizer=keras.optimizers.SGD(0.5))

    def losses():
        logits = model.forward(x, training=True).logits
        return model.task_loss_function(y, logits).stacked.numpy().astype(np.float64)

    before = losses()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    after = losses()
    assert np.all(after < before)
    delta = np.log(before + 1e-8) - np.log(after + 1e-8)
    z = np.full(2, 0.5)
    gradient = z * (delta - z @ delta)
    # One Adam step from 0: lr · sign(gradient), up to Adam's ε.
    np.testing.assert_allclose(model.balancer.logits.value, -0.1 * np.sign(gradient), rtol=1e-4)
    bad = dict(y, watch_time=np.full_like(y["watch_time"], np.inf))
    logits = np.asarray(model.balancer.logits.value)
    with pytest.raises(RuntimeError, match="training steps were skipped"):
        model.fit(x, bad, batch_size=64, epochs=1, verbose=0)
    assert model.history.history["skipped_steps"] == [1.0]
    np.testing.assert_array_equal(model.balancer.logits.value, logits)


# ------------------------------------------------------------------------------------ saving
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_keras_file_round_trip_restores_weights_optimizer_and_balancer(backbone, tmp_path):
    model = small_model(backbone, balancer=km.balancers.get("ple_schedule", decay=[0.9, 0.5],
                                                            initial_weights=[1.0, 2.0]))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = small_batch(32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(dataset, epochs=2, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert_same_outputs(model.predict(dataset, verbose=0), restored.predict(dataset, verbose=0))
    assert isinstance(restored.balancer, km.balancers.PLESchedule)
    assert restored.balancer.get_config() == model.balancer.get_config()
    assert int(restored.epoch.numpy()) == 2  # epochs trained so far
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=a.path)
    # Training goes on identically from the restored state.
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    restored.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert_same_outputs(model.predict(dataset, verbose=0), restored.predict(dataset, verbose=0),
                        atol=1e-5)


# ------------------------------------------------------------------------------------ errors
def test_missing_and_unknown_labels_are_named():
    model = small_model()
    model.compile()
    x, y = small_batch()
    with pytest.raises(KeyError, match="No labels for task 'watch_time'"):
        model.compute_gradients(x, {"click": y["click"]})
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['clicks'\]"):
        model.compute_gradients(x, dict(y, clicks=y["click"]))


def test_missing_and_mistyped_features_are_named():
    model = small_model()
    x, _ = small_batch()
    with pytest.raises(KeyError, match="Missing feature 'country'"):
        model({k: v for k, v in x.items() if k != "country"})
    with pytest.raises(TypeError, match="Feature 'country' expects string values, got float32"):
        model(dict(x, country=tf.zeros([16])))


def test_compile_rejects_keras_losses_and_metrics():
    model = small_model()
    with pytest.raises(ValueError, match="declared on each keras_mtl.Task"):
        model.compile(loss="mse")


def test_sample_space_must_name_a_binary_task():
    with pytest.raises(ValueError, match="not a task of this model"):
        small_model(tasks=[km.Task("a"), km.Task("b", sample_space="c")])
    with pytest.raises(ValueError, match="must be a binary task"):
        small_model(tasks=[km.Task("a", kind="regression"), km.Task("b", sample_space="a")])


def test_gate_weights_use_task_names():
    model = small_model("mmoe")
    x, _ = small_batch()
    gates = model.gate_weights(x)
    assert set(gates) == {"click", "watch_time"}
    np.testing.assert_allclose(np.sum(gates["click"], -1), 1.0, rtol=1e-5)


def test_untouched_spec_is_kept_in_config():
    model = small_model()
    clone = km.MultiTaskModel.from_config(model.get_config())
    assert clone.spec == small_spec()
    assert [t.name for t in clone.tasks] == ["click", "watch_time"]


def test_saved_models_load_in_keras_safe_mode(tmp_path):
    # No lambdas or pickled code anywhere in the config: safe_mode=True (Keras' default) loads it.
    model = small_model(balancer=km.balancers.get("nash_mtl", every=3))
    model.compile(optimizer="adam")
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    x, _ = small_batch(8)
    np.testing.assert_allclose(restored(x)["click"], model(x)["click"], atol=1e-6)
