import numpy as np
import pytest

from keras_mtl.metrics import GAUC


def mann_whitney_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_hand_computed_gauc():
    # user 0: positive 0.9 beats 0.5 but not 0.95 -> AUC 1/2 over 3 rows
    # user 1: both positives beat the negative    -> AUC 1   over 3 rows
    # user 2: positives only                      -> excluded
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 1], np.float32)
    scores = np.array([0.9, 0.5, 0.95, 0.7, 0.8, 0.6, 0.1, 0.2], np.float32)
    metric = GAUC(group_feature="user_id", num_groups=16)
    metric.update_state(labels, scores, groups=groups)
    np.testing.assert_allclose(metric.result(), (3 * 0.5 + 3 * 1.0) / 6, rtol=1e-6)


def test_matches_brute_force_and_streams_across_batches():
    rng = np.random.default_rng(0)
    n, users = 600, 20
    groups = rng.integers(0, users, n)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    # Distinct score buckets, so the histogram statistic is exact.
    scores = (rng.permutation(n) + 0.5) / n
    metric = GAUC(num_groups=users, num_thresholds=n)
    for chunk in np.array_split(np.arange(n), 7):
        metric.update_state(labels[chunk], scores[chunk], groups=groups[chunk])
    total = weight = 0.0
    for u in range(users):
        rows = groups == u
        if 0 < labels[rows].sum() < rows.sum():
            total += rows.sum() * mann_whitney_auc(labels[rows], scores[rows])
            weight += rows.sum()
    np.testing.assert_allclose(metric.result(), total / weight, rtol=1e-5)


def test_sample_weight_zero_drops_rows_and_strings_are_grouped():
    metric = GAUC(num_groups=64)
    metric.update_state([1, 0, 1, 0], [0.9, 0.1, 0.1, 0.9], sample_weight=[1, 1, 0, 0],
                        groups=np.array(["a", "a", "a", "a"]))
    np.testing.assert_allclose(metric.result(), 1.0)


def test_needs_groups():
    with pytest.raises(ValueError, match="needs the group ids"):
        GAUC().update_state([1.0], [0.5])


def test_reset_and_config():
    metric = GAUC(group_feature="uid", num_groups=8, num_thresholds=10)
    metric.update_state([1, 0], [0.9, 0.1], groups=[1, 1])
    metric.reset_state()
    assert np.isnan(float(metric.result()))  # no data: undefined, not 0
    clone = GAUC.from_config(metric.get_config())
    assert clone.group_feature == "uid" and clone.num_groups == 8
