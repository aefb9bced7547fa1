import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.datasets import make_funnel


def test_purchases_exist_only_after_clicks():
    data = make_funnel(num_examples=20_000, seed=1)
    frame = data.train
    clicked = frame["click"] == 1
    assert frame.loc[~clicked, "purchase"].isna().all()
    assert frame.loc[clicked, "purchase"].notna().all()
    assert 0.06 < frame["click"].mean() < 0.10  # click_rate = 0.08
    assert 0.12 < frame.loc[clicked, "purchase"].mean() < 0.18  # observed CVR ≈ 0.15
    # Selection bias: impressions that were not clicked would have converted less.
    assert frame.loc[~clicked, "true_purchase"].mean() < frame.loc[clicked, "true_purchase"].mean()
    np.testing.assert_allclose(frame["true_ctcvr"], frame["true_click"] * frame["true_purchase"],
                               rtol=1e-6)
    assert data.tasks[1].sample_space == "click"
    assert make_funnel(num_examples=100, esmm=True).tasks[1].esmm_parent == "click"


def test_position_moves_clicks_and_price_moves_purchases():
    frame = make_funnel(num_examples=50_000, seed=2).train
    by_position = frame.groupby("position")["true_click"].mean()
    assert by_position.iloc[0] > by_position.iloc[-1]
    cheap = frame["price"] < frame["price"].median()
    assert frame.loc[cheap, "true_purchase"].mean() > frame.loc[~cheap, "true_purchase"].mean()


def test_a_sample_space_model_trains_on_it():
    data = make_funnel(num_examples=2_000)
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.MMoE(num_experts=2, expert_units=[8]),
                              tower_units=[4])
    model.compile(optimizer="adam")
    history = model.fit(data.as_tf_dataset("train", batch_size=256), epochs=1, verbose=0)
    assert np.isfinite(history.history["purchase_loss"][0])


def test_watch_time_column_leaves_the_other_columns_unchanged():
    plain = make_funnel(num_examples=20_000, seed=2).train
    data = make_funnel(num_examples=20_000, seed=2, watch_time=True)
    assert data.tasks[-1].kind == "watch_time"
    frame = data.train
    pd.testing.assert_frame_equal(frame[plain.columns], plain)
    watched = frame["watch_time"] > 0
    assert (watched == (frame["click"] > 0)).all()  # seconds after a click, 0 without one
    # E[T] = P(click)·E[T | click]: the empirical mean agrees with the oracle's within noise.
    assert frame["watch_time"].mean() == pytest.approx(frame["true_watch_time"].mean(), rel=0.15)
