"""Shared checks for the task-structure options (ESCM², AITM, DBMTL): gradients at every level
against autodiff, `.keras` round trip, fresh-process export, training on the funnel."""

from __future__ import annotations

import os

import keras
import numpy as np

import keras_mtl as km
from keras_mtl import serving
from tests.helpers import assert_same_outputs
from tests.models.multi_task_model_test import assert_gradients_close, plain_autodiff_gradients
from tests.serving.export_test import FRESH_LOAD, rows, run_fresh

# ew, a representation-level and a parameter-level balancer.
BALANCERS = ("ew", "mgda_ub", "pcgrad")


def check_every_level_matches_autodiff(make_model, x, y):
    """`ew` at the representation and parameter levels (and the loss level) gives the summed-loss
    gradient of plain autodiff, heads (cross-task ones included) and shared parameters alike."""
    for level in ("losses", "representation", "parameters"):
        model = make_model()
        model.set_balancer("ew", level=level)
        grads, variables, _, _, *_ = model.compute_gradients(x, y)
        assert_gradients_close(grads, plain_autodiff_gradients(model, x, y), variables)
    # A non-uniform linear weighting agrees too (the heads get Σ_k w_k ∇L_k).
    model = make_model()
    model.set_balancer("static", weights=[0.3, 2.5], level="representation")
    grads, variables, _, _, *_ = model.compute_gradients(x, y)
    assert_gradients_close(grads, plain_autodiff_gradients(model, x, y, weights=(0.3, 2.5)),
                           variables)


def check_partition_covers_every_variable(model):
    ids = [id(v) for v in model.shared_variables + model.head_variables]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(id(v) for v in model.trainable_variables
                                 if id(v) not in {id(b) for b in model.balancer.weights})


def check_keras_round_trip(model, x, y, tmp_path):
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert_same_outputs(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    np.testing.assert_allclose(restored.task_losses(x, y).stacked, model.task_losses(x, y).stacked,
                               rtol=1e-6)
    return restored


def check_fresh_export(model, tmp_path):
    """Exported, loaded in a process that never imports keras_mtl: the same predictions."""
    path = serving.export(model, str(tmp_path / "ranker"), warmup=False)
    x = {k: v for k, v in rows().items() if k != "video_length"}
    np.savez(tmp_path / "inputs.npz", **x)
    run_fresh(FRESH_LOAD, MODEL=path, INPUTS=str(tmp_path / "inputs.npz"),
              OUTPUTS=str(tmp_path / "outputs.npz"))
    outputs = np.load(tmp_path / "outputs.npz")
    predictions = model.predict(x, verbose=0)
    for key, value in predictions.items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
    return list(outputs["variable_names"])


def funnel(num_examples: int = 800, end_to_end: bool = False, **kwargs):
    """A small funnel; `end_to_end`: purchase labelled 0 on unclicked rows (AITM's labels)."""
    data = km.datasets.make_funnel(num_examples=num_examples, **kwargs)
    if end_to_end:
        import dataclasses

        fill = {s: getattr(data, s).assign(purchase=getattr(data, s)["purchase"].fillna(0.0))
                for s in ("train", "validation", "test")}
        data = dataclasses.replace(data, tasks=[km.Task("click"), km.Task("purchase")], **fill)
    return data


def check_trains_on_funnel(data, make_model):
    """ew, then a representation- and a parameter-level balancer each train a finite epoch."""
    model = make_model(data)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    train = data.as_tf_dataset("train", batch_size=256)
    for balancer in BALANCERS:
        history = model.fit(train, epochs=1, verbose=0, balancer=balancer)
        for name in ("click_loss", "purchase_loss"):
            assert np.isfinite(history.history[name][0]), (balancer, name)
        assert history.history["skipped_steps"] == [0.0], balancer
    logs = model.evaluate(data.as_tf_dataset("test", batch_size=512), return_dict=True, verbose=0)
    assert np.isfinite(logs["purchase_auc"]) and np.isfinite(logs["click_auc"])
    return model


def small_funnel_model(data, backbone=None, **kwargs):
    return km.MultiTaskModel(
        features=data.features, tasks=kwargs.pop("tasks", data.tasks),
        backbone=backbone or km.layers.MMoE(num_experts=2, expert_units=[8]),
        tower_units=[4], **kwargs)

