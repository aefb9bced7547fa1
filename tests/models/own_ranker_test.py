"""Your own ranker end to end, built the way the README says: a DIN-attended history sharing the
candidate's table, a bag of tags, a vector, a string feature, a DCN-v2 bottom from keras-rs under
PLE; trained from a DataFrame with XLA at each balancer level, exported, and served in a fresh
process with the predictions of `model.predict`."""

import keras
import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl import serving
from tests.features.list_helpers import list_batch, list_spec
from tests.serving.export_test import FRESH_LOAD, run_fresh


def ranker_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows as a user holds them: histories and tags as ragged lists, vectors as arrays."""
    x, y = list_batch(n, seed=seed)
    pad = km.features.PADDING
    return pd.DataFrame({
        "item_id": x["item_id"],
        "hist_item_ids": [[int(i) for i in row if i != pad] for row in x["hist_item_ids"]],
        "tags": [[int(i) for i in row if i != pad] for row in x["tags"]],
        "user_vec": list(x["user_vec"]), "country": x["country"], "price": x["price"], **y,
    })


@pytest.mark.parametrize("balancer", ["uw", "multibalance", "upgrad"])  # one per level
def test_own_ranker_trains_with_xla_exports_and_serves_the_same(balancer, tmp_path):
    spec = list_spec()
    tasks = [km.Task("click"), km.Task("like")]
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(
        spec, tasks, tower_units=[4], balancer=balancer,
        backbone=km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=[8],
                               bottom=km.layers.CrossNetwork(2, projection_dim=4)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    train = km.data.from_dataframe(ranker_frame(96, seed=1), spec, tasks, batch_size=32,
                                   shuffle=True, seed=0)
    trunk = model.backbone.bottom_stage.trainable_variables + model.encoder.trainable_variables
    before = [np.asarray(v).copy() for v in trunk]
    history = model.fit(train, epochs=2, verbose=0).history
    assert model.jit_compile is True  # the string feature's lookup ran in the pipeline
    assert history["skipped_steps"] == [0.0, 0.0] and np.isfinite(history["loss"]).all()
    assert all(not np.allclose(b, np.asarray(v)) for b, v in zip(before, trunk, strict=True))
    if balancer != "multibalance":  # one export and fresh process is enough for the suite
        return

    path = serving.export(model, str(tmp_path / "ranker"))
    rows = ranker_frame(8, seed=2).drop(columns=["click", "like"])
    columns = serving.ServingClient.from_export(path).prepare(rows)
    np.savez(tmp_path / "inputs.npz", **columns)
    run_fresh(FRESH_LOAD, MODEL=path, INPUTS=str(tmp_path / "inputs.npz"),
              OUTPUTS=str(tmp_path / "outputs.npz"))
    served = np.load(tmp_path / "outputs.npz")
    # A DataFrame, as fit and evaluate take too; its label columns are ignored.
    predicted = model.predict(ranker_frame(8, seed=2), verbose=0)
    for task in ("click", "like"):
        np.testing.assert_allclose(served[task], predicted[task], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("balancer", ["uw", "multibalance", "mgda@representation", "upgrad"])
def test_the_shared_table_gradient_stays_sparse_at_every_level(balancer):
    """History and candidate share one table; what `train_step` applies to it is `IndexedSlices`
    at every level (a parameter-level balancer leaves tables out of its per-task matrix)."""
    import tensorflow as tf

    from keras_mtl.benchmarks.presets import make_balancer
    from tests.features.list_helpers import as_tensors, list_model

    model = list_model()
    model.compile(optimizer="adam", balancer=make_balancer(balancer, 2))
    x, y = list_batch(16, seed=3)
    step = model.compute_gradients(model.encoder.lookup_stage(as_tensors(x)),
                                   {k: tf.constant(v) for k, v in y.items()})
    table = model.encoder.embeddings["item_id"].embeddings
    (grad,) = [g for g, v in zip(step.grads, step.variables, strict=True) if v is table]
    assert isinstance(grad, tf.IndexedSlices)
    assert len(set(grad.indices.numpy().tolist())) > 1
