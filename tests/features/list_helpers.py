"""Specs and batches with id lists and vectors, shared by the features, data and serving tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras_mtl as km


def list_spec() -> km.FeatureSpec:
    """The brief's ranker, small: a candidate id, its DIN-attended history sharing the candidate's
    table, a bag of tags, a pretrained vector, a string and a numeric feature."""
    return km.FeatureSpec([
        km.IntegerId("item_id", num_ids=30, embedding_dim=6),
        km.Sequence("hist_item_ids", max_length=5, shares_embedding_with="item_id",
                    pooling="attention", query="item_id", attention_units=(8, 4)),
        km.MultiValued("tags", num_ids=7, embedding_dim=3, max_length=4, pooling="mean"),
        km.Vector("user_vec", dim=4),
        km.Categorical("country", vocabulary=["de", "fr", "us"], embedding_dim=2),
        km.Numeric("price", log1p=True),
    ])


def list_batch(n: int = 32, seed: int = 0) -> tuple[dict, dict]:
    """numpy features (ids padded with -1, some rows all padding, some out-of-range ids) and labels."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(-2, 33, (n, 7))  # wider than max_length: truncated by the model
    hist[rng.random((n, 7)) < 0.3] = km.features.PADDING
    hist[0] = km.features.PADDING  # an empty history
    tags = rng.integers(0, 9, (n, 4))
    tags[rng.random((n, 4)) < 0.5] = km.features.PADDING
    x = {
        "item_id": rng.integers(0, 32, n).astype(np.int64),
        "hist_item_ids": hist.astype(np.int64),
        "tags": tags.astype(np.int64),
        "user_vec": rng.normal(size=(n, 4)).astype(np.float32),
        "country": rng.choice(np.asarray(["de", "fr", "us", "xx"], dtype=object), n),
        "price": rng.lognormal(1.0, 1.0, n).astype(np.float32),
    }
    y = {"click": rng.integers(0, 2, n).astype(np.float32),
         "like": rng.integers(0, 2, n).astype(np.float32)}
    return x, y


def list_model(spec: km.FeatureSpec | None = None) -> km.MultiTaskModel:
    return km.MultiTaskModel(features=spec or list_spec(), tasks=[km.Task("click"), km.Task("like")],
                             backbone=km.layers.MMoE(num_experts=2, expert_units=[8]),
                             tower_units=[4])


def as_tensors(x: dict) -> dict:
    return {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in x.items()}
