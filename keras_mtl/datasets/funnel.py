"""A conversion funnel: impression → click → purchase, with purchases observed on clicks only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.features import Categorical, FeatureSpec, IntegerId, Numeric
from keras_mtl.tasks import Task


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def make_funnel(
    num_examples: int = 50_000,
    num_users: int = 2_000,
    num_items: int = 1_000,
    num_categories: int = 20,
    factor_dim: int = 8,
    click_rate: float = 0.08,
    purchase_rate: float = 0.15,
    relatedness: float = 0.5,
    esmm: bool = False,
    watch_time: bool = False,
    seed: int = 0,
    fractions=(0.8, 0.1, 0.1),
) -> MultiTaskDataset:
    """Impressions of items to users with a click and, for clicked rows only, a purchase label.

    The shape of Ali-CCP and ESMM's data (Ma et al., SIGIR 2018): conversions are only ever
    observed after a click, so the purchase column is NaN on unclicked rows — not 0. With latent
    user factors `u`, item factors `v` (click) and `v'` (purchase; `cos(v, v') ≈ relatedness`):

        P(click)            = σ(b_c + u·v + 0.5·popularity_item − 0.3·log position)
        P(purchase | click) = σ(b_p + u·v' − 0.6·(log price − mean))

    `b_c`, `b_p` are set so that the click rate over impressions is about `click_rate` and the
    purchase rate over clicks (the observed CVR) about `purchase_rate`; unclicked impressions
    convert less, since clicks and purchases share the user factors (sample-selection bias). Position
    drives clicks only (a bias the ranker should not learn to serve), price drives purchases only.
    Each row also carries the true probabilities (`true_click`, `true_purchase`, and
    `true_ctcvr` = their product) so a tutorial can compare a model with the oracle.

    `watch_time=True` adds seconds watched after a click (0 without one): log-normal with
    `log T = 3.5 + u·v'' + 0.7·ε` for item factors `v''` of relatedness 0.5 to `v`, and
    `true_watch_time`, its expectation `P(click)·E[T | click]`. Drawn from its own random stream,
    so the other columns are the same with or without it.

    Tasks: `click` (binary) and `purchase` (binary) whose sample space is the clicked rows; with
    `esmm=True` the purchase task is trained ESMM-style over every impression instead
    (`Task(esmm_parent="click")`); with `watch_time=True` also `watch_time` (kind `watch_time`,
    Covington et al.'s weighted logistic regression). Features: `user_id`, `item_id` (integer ids), `category`
    (string), `price` (log1p-normalised), `hour` (0-23) and `position` (1-10).
    """
    if not 0 < click_rate < 1 or not 0 < purchase_rate < 1:
        raise ValueError("click_rate and purchase_rate must lie strictly between 0 and 1.")
    if not -1 <= relatedness <= 1:
        raise ValueError(f"relatedness must lie in [-1, 1], got {relatedness}.")
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(factor_dim)
    users = rng.normal(scale=np.sqrt(scale), size=(num_users, factor_dim))
    items = rng.normal(scale=np.sqrt(scale), size=(num_items, factor_dim))
    noise = rng.normal(scale=np.sqrt(scale), size=(num_items, factor_dim))
    items_purchase = relatedness * items + np.sqrt(1 - relatedness ** 2) * noise
    popularity = rng.normal(size=num_items)
    item_category = rng.integers(0, num_categories, num_items)
    item_price = np.exp(rng.normal(3.0, 0.8, size=num_items))

    user = rng.integers(0, num_users, num_examples)
    item = rng.integers(0, num_items, num_examples)
    position = rng.integers(1, 11, num_examples)
    hour = rng.integers(0, 24, num_examples)
    log_price = np.log(item_price[item])
    click_score = (np.einsum("nd,nd->n", users[user], items[item]) * 3
                   + 0.5 * popularity[item] - 0.3 * np.log(position))
    purchase_score = (np.einsum("nd,nd->n", users[user], items_purchase[item]) * 3
                      - 0.6 * (log_price - log_price.mean()))
    p_click = _sigmoid(click_score + _offset(click_score, click_rate))
    # The observed CVR is that of clicked rows, so calibrate on them (weights P(click)); because
    # click and purchase share the user factors, unclicked rows convert less: the selection bias.
    p_purchase = _sigmoid(purchase_score + _offset(purchase_score, purchase_rate, p_click))
    click = (rng.uniform(size=num_examples) < p_click).astype(np.float32)
    purchase = (rng.uniform(size=num_examples) < p_purchase).astype(np.float32)
    purchase = np.where(click > 0, purchase, np.nan).astype(np.float32)

    frame = pd.DataFrame({
        "user_id": user, "item_id": item,
        "category": np.array([f"c{c:02d}" for c in range(num_categories)])[item_category[item]],
        "price": item_price[item].astype(np.float32), "hour": hour, "position": position,
        "click": click, "purchase": purchase,
        "true_click": p_click.astype(np.float32), "true_purchase": p_purchase.astype(np.float32),
        "true_ctcvr": (p_click * p_purchase).astype(np.float32),
    })
    if watch_time:
        watch_rng = np.random.default_rng([seed, 1])
        items_watch = (0.5 * items + np.sqrt(0.75)
                       * watch_rng.normal(scale=np.sqrt(scale), size=(num_items, factor_dim)))
        log_mean = 3.5 + np.einsum("nd,nd->n", users[user], items_watch[item])
        seconds = np.exp(log_mean + 0.7 * watch_rng.normal(size=num_examples))
        frame["watch_time"] = np.where(click > 0, seconds, 0.0).astype(np.float32)
        frame["true_watch_time"] = (p_click * np.exp(log_mean + 0.5 * 0.7 ** 2)).astype(np.float32)
    train, validation, test = split_frame(frame, fractions, seed)
    features = FeatureSpec([
        IntegerId("user_id", num_ids=num_users, embedding_dim=16),
        IntegerId("item_id", num_ids=num_items, embedding_dim=16),
        Categorical("category", embedding_dim=4),
        Numeric("price", log1p=True),
        IntegerId("hour", num_ids=24, embedding_dim=4),
        IntegerId("position", num_ids=11, embedding_dim=4),
    ]).adapt(train)
    purchase_task = (Task("purchase", esmm_parent="click") if esmm
                     else Task("purchase", sample_space="click"))
    return MultiTaskDataset(
        name="funnel", train=train, validation=validation, test=test, features=features,
        tasks=[Task("click"), purchase_task,
               *([Task("watch_time", kind="watch_time")] if watch_time else [])],
        description=(f"Synthetic impression→click→purchase funnel, {num_examples} impressions, "
                     f"CTR≈{click_rate}, CVR≈{purchase_rate}, relatedness {relatedness}, "
                     f"seed={seed}"),
    )


def _offset(score: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The bias b with the (weighted) mean of σ(score + b) equal to `rate` (bisection; the mean is
    increasing in b)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if np.average(_sigmoid(score + middle), weights=weights) < rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
