"""A run that trains nothing, bad labels, non-finite hyper-parameters or state, the epoch clock
under repeated `fit`, and corrupt model files all say so (the "Trust" issue)."""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.balancers import Weighting
from keras_mtl.balancers.famo import FAMO
from tests.helpers import BACKBONES, xla_data, xla_spec


def make_model(balancer=None, tasks=None, seed=0):
    keras.utils.set_random_seed(seed)
    return km.MultiTaskModel(
        features=xla_spec(),
        tasks=tasks or [km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[8], balancer=balancer,
    )


# ------------------------------------------------------------------------ 2. skipped steps
def test_skipped_steps_are_a_running_total_with_their_reasons():
    x, y = xla_data(256)
    bad = dict(y, watch_time=y["watch_time"].copy())
    bad["watch_time"][64:128] = np.inf  # batches 2 and 4 of 4 (batch size 64)
    bad["watch_time"][192:] = np.inf
    model = make_model()
    model.compile(optimizer="adam")
    history = model.fit(x, bad, batch_size=64, epochs=1, verbose=0, shuffle=False).history
    assert history["skipped_steps"] == [2.0]  # a total, not the mean 0.5
    assert history["skipped_nonfinite_loss"] == [2.0]
    assert history["skipped_nonfinite_gradient"] == [0.0]
    assert history["skipped_nonfinite_balancer_state"] == [0.0]
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_an_epoch_whose_every_step_is_skipped_raises_and_logs_nan(jit_compile):
    x, y = xla_data(128)
    bad = dict(y, watch_time=np.full_like(y["watch_time"], np.inf))
    model = make_model()
    model.compile(optimizer="adam", jit_compile=jit_compile)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    with pytest.raises(RuntimeError, match=r"Epoch 1: all 2 training steps were skipped "
                                           r"\(2 non-finite loss\).*nothing was trained"):
        model.fit(x, bad, batch_size=64, epochs=3, verbose=0)
    history = model.history.history
    assert history["skipped_steps"] == [2.0]  # a total; and fit stopped after that epoch
    for key in ("loss", "click_loss", "watch_time_loss", "click_auc", "watch_time_rmse",
                "click_weight"):
        assert np.isnan(history[key][0]), key
    assert int(model.epoch.numpy()) == 1  # the epoch that trained nothing is not counted


def test_a_task_without_labelled_rows_reports_nan_not_zero():
    x, y = xla_data(128)
    model = make_model()
    model.compile(optimizer="adam")
    unlabelled = dict(y, click=np.full_like(y["click"], np.nan))
    logs = model.evaluate(x, unlabelled, batch_size=64, return_dict=True, verbose=0)
    for key in ("click_auc", "click_ne", "click_loss"):
        assert np.isnan(logs[key]), (key, logs[key])
    assert np.isfinite(logs["watch_time_rmse"]) and np.isfinite(logs["loss"])
    # The metrics on their own say "no data" too.
    for metric in (km.metrics.AUC(), km.metrics.NormalizedEntropy(), km.metrics.GAUC()):
        assert np.isnan(float(metric.result())), metric.name
    assert km.metrics.make_metric("auc", "click").__class__ is km.metrics.AUC


@pytest.mark.parametrize("balancer", ["stch", "db_mtl", "ema_loss"])
def test_task_weight_means_leave_out_steps_where_the_task_had_no_rows(balancer):
    x, y = xla_data(128)
    sparse = dict(y, click=y["click"].copy())
    sparse["click"][:64] = np.nan  # the first batch has no click label
    model = make_model(balancer)
    model.compile(optimizer="adam")
    history = model.fit(x, sparse, batch_size=64, epochs=1, verbose=0, shuffle=False).history
    # One step with click rows: its weight; a loss-ratio weight of a task without rows is ~1/0.
    assert np.isfinite(history["click_weight"][0]) and history["click_weight"][0] < 1e3, history


# ------------------------------------------------------------------------ 5. labels
@pytest.mark.parametrize("value", [2.0, -1.0])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_binary_labels_outside_zero_one_fail_with_the_task_name(value, jit_compile):
    x, y = xla_data(128)
    bad = dict(y, click=y["click"].copy())
    bad["click"][:3] = value
    model = make_model()
    model.compile(optimizer="adam", jit_compile=jit_compile)
    with pytest.raises(ValueError, match=r"task 'click' \(binary\): 3 label\(s\) that are not "
                                         r"0 or 1"):
        model.fit(x, bad, batch_size=64, epochs=2, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, bad)).batch(64)
    with pytest.raises(ValueError, match="'click'.*not 0 or 1"):
        model.fit(dataset, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Invalid labels in evaluation: task 'click'"):
        model.evaluate(x, bad, batch_size=64, verbose=0)


def test_missing_labels_still_count_as_missing():
    x, y = xla_data(128)
    labels = dict(y, click=y["click"].copy())
    labels["click"][:5] = -1.0  # the task's sentinel
    labels["click"][5:9] = np.nan
    model = make_model(tasks=[km.Task("click", missing_value=-1.0),
                              km.Task("watch_time", kind="regression")])
    model.compile(optimizer="adam", jit_compile=True)
    history = model.fit(x, labels, batch_size=64, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [0.0]


def test_esmm_child_positive_under_a_negative_parent_is_reported():
    x, y = xla_data(128)
    click = y["click"].copy()
    purchase = np.zeros_like(click)
    purchase[click > 0] = 1.0
    negatives = np.flatnonzero(click == 0)[:4]
    purchase[negatives] = 1.0  # a conversion without a click
    model = make_model(tasks=[km.Task("click"), km.Task("purchase", esmm_parent="click")])
    model.compile(optimizer="adam")
    with pytest.warns(UserWarning, match="4 row\\(s\\) label ESMM task 'purchase' 1 where its "
                                         "parent 'click' is 0"):
        model.fit(x, {"click": click, "purchase": purchase}, batch_size=64, epochs=1, verbose=0)
    purchase[negatives] = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.evaluate(x, {"click": click, "purchase": purchase}, batch_size=64, verbose=0)
    assert not [w for w in caught if "ESMM" in str(w.message)]


# ------------------------------------------------------------------------ 6. hyper-parameters
@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("static", {"weights": [np.nan, 1.0]}, r"static weights\[0\] must be a finite number"),
    ("static", {"weights": [1.0, np.inf]}, r"static weights\[1\] must be a finite number"),
    ("uw", {"learning_rate": np.nan}, "uw learning_rate must be a finite number"),
    ("uw", {"learning_rate": np.inf}, "uw learning_rate must be a finite number"),
    ("famo", {"learning_rate": np.nan}, "famo learning_rate must be a finite number"),
    ("famo", {"weight_decay": np.inf}, "famo weight_decay must be a finite number"),
    ("gradnorm", {"learning_rate": np.inf}, "gradnorm learning_rate must be a finite number"),
    ("gradnorm", {"alpha": np.nan}, "gradnorm alpha must be a finite number"),
    ("dwa", {"temperature": np.inf}, "dwa temperature must be a finite number"),
    ("ple_schedule", {"decay": np.nan}, "ple_schedule decay must be a finite number"),
    ("ple_schedule", {"decay": [0.5, np.inf]}, r"ple_schedule decay\[1\] must be a finite"),
    ("ple_schedule", {"initial_weights": [np.nan, 1.0]}, r"initial_weights\[0\] must be a finite"),
    ("upgrad", {"pref_vector": [np.nan, 1.0]}, r"pref_vector\[0\] must be a finite number"),
    ("ema_loss", {"epsilon": np.inf}, "ema_loss epsilon must be a finite number"),
])
def test_non_finite_hyper_parameters_are_refused(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        km.balancers.get(name, **kwargs)


@pytest.mark.parametrize("weight", [float("nan"), float("inf")])
def test_non_finite_task_weights_are_refused(weight):
    with pytest.raises(ValueError, match="Task 'click': weight must be a finite number"):
        km.Task("click", weight=weight)


class NaNState(Weighting):
    """Equal weights whose state update is NaN: the model must never write it."""

    def build_state(self, num_tasks):
        self.total = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                     name="total")

    def task_weights(self, losses, context, matrix=None):
        return tf.ones([self.num_tasks]), ((self.total, self.total + np.nan * losses),)


class NaNAfterStepFAMO(FAMO):
    """FAMO whose post-step update (from the losses after the step) is NaN."""

    def post_step_updates(self, losses_before, losses_after):
        updates = super().post_step_updates(losses_before, losses_after)
        return tuple((variable, value * np.nan) for variable, value in updates)


@pytest.mark.parametrize("balancer", [NaNState, NaNAfterStepFAMO])
def test_a_non_finite_balancer_state_is_never_written(balancer):
    x, y = xla_data(128)
    model = make_model(balancer())
    model.compile(optimizer="adam")
    state = [np.asarray(v) for v in model.balancer.weights]
    with pytest.raises(RuntimeError, match=r"\(2 non-finite balancer state\)"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    history = model.history.history
    assert history["skipped_nonfinite_balancer_state"] == [2.0]
    assert history["skipped_steps"] == [2.0] and history["skipped_nonfinite_loss"] == [0.0]
    for before, v in zip(state, model.balancer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), before, err_msg=v.path)


def test_a_nan_state_step_leaves_the_model_alone():
    x, y = xla_data(64)
    model = make_model(NaNState())
    model.compile(optimizer="adam")
    weights = [np.asarray(v) for v in model.trainable_weights]
    with pytest.raises(RuntimeError, match="balancer state"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for before, v in zip(weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v), before, err_msg=v.path)


# ------------------------------------------------------------------------ 7. epoch clock
def _epoch_runs(balancer_factory, repeated: bool):
    x, y = xla_data(256, seed=2)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    model = make_model(balancer_factory())
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    logs = {}
    if repeated:
        for _ in range(4):
            for key, values in model.fit(data, epochs=1, verbose=0).history.items():
                logs.setdefault(key, []).extend(values)
    else:
        logs = model.fit(data, epochs=4, verbose=0).history
    return model, logs


def test_ple_schedule_decays_per_epoch_across_repeated_fits():
    def schedule():
        return km.balancers.get("ple_schedule", decay=0.5, unit="epoch")

    for repeated in (False, True):
        model, logs = _epoch_runs(schedule, repeated)
        np.testing.assert_allclose(logs["click_weight"], [1.0, 0.5, 0.25, 0.125])
        assert int(model.epoch.numpy()) == 4


def test_dwa_under_repeated_fit_matches_one_fit():
    def dwa():
        return km.balancers.get("dwa")

    one_model, one = _epoch_runs(dwa, repeated=False)
    many_model, many = _epoch_runs(dwa, repeated=True)
    # From the third epoch on DWA weights by the loss ratios: not equal weights any more.
    assert not np.allclose(one["click_weight"][2:], 1.0)
    np.testing.assert_allclose(many["click_weight"], one["click_weight"], rtol=1e-5)
    np.testing.assert_allclose(many["watch_time_weight"], one["watch_time_weight"], rtol=1e-5)
    for a, b in zip(one_model.weights, many_model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6,
                                   err_msg=a.path)


def test_initial_epoch_sets_the_epoch_clock():
    x, y = xla_data(64)
    model = make_model(km.balancers.get("ple_schedule", decay=0.5, unit="epoch"))
    model.compile(optimizer="adam")
    logs = model.fit(x, y, batch_size=64, epochs=4, initial_epoch=2, verbose=0).history
    np.testing.assert_allclose(logs["click_weight"], [0.25, 0.125])
    assert int(model.epoch.numpy()) == 4


# ------------------------------------------------------------------------ 8. corrupt files
@pytest.mark.parametrize("fraction", [0.5, 0.0])
def test_a_truncated_keras_file_is_named_as_such(tmp_path, fraction):
    model = make_model()
    model.compile(optimizer="adam")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    assert isinstance(km.load_model(path), km.MultiTaskModel)
    with open(path, "rb") as handle:
        content = handle.read()
    broken = os.path.join(tmp_path, "broken.keras")
    with open(broken, "wb") as handle:
        handle.write(content[:int(len(content) * fraction)])
    with pytest.raises(ValueError, match=r"broken\.keras.*not a valid \.keras archive"):
        km.load_model(broken)
    with pytest.raises(FileNotFoundError, match="No such model file"):
        km.load_model(os.path.join(tmp_path, "absent.keras"))
