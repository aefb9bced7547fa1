"""Shared fixtures-as-functions for the test suite."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

import keras_mtl as km

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CENSUS_FILE = os.path.join(SHARED_DATA, "census-income.test.gz")

DSELECT = {"type": "dselect", "top_k": 2, "entropy_weight": 0.1}

BACKBONES = {
    "shared_bottom": lambda: km.layers.SharedBottom(units=[8]),
    "mmoe": lambda: km.layers.MMoE(num_experts=3, expert_units=[6, 5]),
    "cgc": lambda: km.layers.CGC(shared_experts=2, task_experts=1, expert_units=[6]),
    "ple": lambda: km.layers.PLE(num_levels=3, shared_experts=2, task_experts=2, expert_units=[6]),
    # Your own ranker: a Keras trunk (its output is the cut), and a DCN-v2 bottom before experts.
    "custom": lambda: km.layers.CustomBackbone(keras.Sequential(
        [keras.layers.Dense(6, activation="relu"), keras.layers.Dense(5, activation="relu")])),
    "mmoe_cross": lambda: km.layers.MMoE(num_experts=2, expert_units=[6],
                                         bottom=km.layers.CrossNetwork(2, projection_dim=3)),
    # DSelect-k gates with their regulariser on: 3 experts (not a power of two, so the
    # reachability penalty is on too); in PLE also the shared gates below the last level.
    "mmoe_dselect": lambda: km.layers.MMoE(num_experts=3, expert_units=[6], gate=DSELECT),
    "ple_dselect": lambda: km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1,
                                         expert_units=[6], gate=DSELECT),
    "omoe": lambda: km.layers.OMoE(num_experts=3, expert_units=[6, 5]),
    # One meta-task group per task (the hierarchy mask is in use), feature-gates, batch norm.
    "home": lambda: km.layers.HoME(task_groups=[[0], [1]], shared_experts=2, expert_units=[6],
                                   feature_gate_rank=2),
    # EPNet gated by the country, PPNet towers gated by the user and item embeddings.
    "pepnet": lambda: km.layers.PEPNet(domain_features=["country"],
                                       prior_features=["user", "item_id"], tower_units=[6, 5],
                                       gate_units=4),
    # Task-specific embeddings (one more encoder per task) and AFTB gates.
    "stem": lambda: km.layers.STEM(num_shared_experts=2, num_task_experts=1, expert_units=[6]),
}


def small_spec() -> km.FeatureSpec:
    """One feature of every kind, embeddings included (so sparse gradients are exercised)."""
    return km.FeatureSpec([
        km.Numeric("price", mean=1.0, std=2.0),
        km.Numeric("views", log1p=True),
        km.IntegerId("item_id", num_ids=20, embedding_dim=4),
        km.Categorical("country", vocabulary=["de", "fr", "us"], embedding_dim=3),
        km.Hashed("user", num_bins=16, embedding_dim=2),
    ])


def small_tasks() -> list[km.Task]:
    return [km.Task("click"), km.Task("watch_time", kind="regression")]


def small_batch(n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {
        "price": tf.constant(rng.normal(size=n), tf.float32),
        "views": tf.constant(rng.integers(0, 1000, n), tf.float32),
        "item_id": tf.constant(rng.integers(-2, 24, n), tf.int64),
        "country": tf.constant(rng.choice(["de", "fr", "us", "xx"], n)),
        "user": tf.constant([f"u{i}" for i in rng.integers(0, 7, n)]),
    }
    y = {
        "click": tf.constant(rng.integers(0, 2, n), tf.float32),
        "watch_time": tf.constant(rng.normal(size=n), tf.float32),
    }
    return x, y


def small_model(backbone: str = "mmoe", tasks=None, **kwargs) -> km.MultiTaskModel:
    return km.MultiTaskModel(
        features=small_spec(),
        tasks=tasks or small_tasks(),
        backbone=BACKBONES[backbone](),
        tower_units=[4],
        **kwargs,
    )


def xla_spec(dim: int = 6) -> km.FeatureSpec:
    """Only XLA-compilable features (no lookup tables)."""
    return km.FeatureSpec(
        [km.Numeric(f"x{i}") for i in range(dim)] + [km.IntegerId("item_id", num_ids=10)]
    )


def xla_data(n: int = 256, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {f"x{i}": rng.normal(size=n).astype(np.float32) for i in range(dim)}
    x["item_id"] = rng.integers(0, 10, n).astype(np.int64)
    signal = x["x0"] + 0.5 * x["x1"]
    y = {
        "click": (signal > 0).astype(np.float32),
        "watch_time": (signal + 0.1 * rng.normal(size=n)).astype(np.float32),
    }
    return x, y


def assert_same_outputs(a, b, atol=1e-6):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=atol, err_msg=key)


def run_layer_saving_test(layer, input_shape, tmp_path):
    """Functional model around `layer`: save to .keras, load, compare outputs."""
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(0).normal(size=(5, *input_shape)).astype(np.float32)
    path = os.path.join(tmp_path, "layer.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    return restored
