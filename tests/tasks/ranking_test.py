"""Ranking losses over a flat batch's groups equal keras-rs' losses of each group as one list."""

import keras_rs
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.tasks.ranking import ranking_loss

KERAS_RS = {"pairwise_logistic": keras_rs.losses.PairwiseLogisticLoss,
            "listmle": keras_rs.losses.ListMLELoss}


def groups_batch(seed=0, sizes=(4, 3, 5, 1)):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes)) * 7 + 100, sizes)  # group ids, not 0 … G − 1
    n = len(groups)
    # Graded labels without ties inside a group (ListMLE orders tied rows by batch position,
    # keras-rs by its sort).
    labels = np.concatenate([rng.permutation(s).astype(np.float32) for s in sizes])
    scores = rng.normal(size=n).astype(np.float32)
    order = rng.permutation(n)  # groups interleaved, as in a shuffled batch
    return groups[order], labels[order], scores[order]


def keras_rs_mean(name, groups, labels, scores):
    """keras-rs' loss of each group as one list (the list's items in batch order), averaged."""
    values = []
    for g in np.unique(groups):
        at = groups == g
        loss = KERAS_RS[name]()(labels[at][None, :], scores[at][None, :])
        values.append(float(loss))
    return np.mean(values)


@pytest.mark.parametrize("name", sorted(KERAS_RS))
def test_matches_keras_rs_per_group(name):
    groups, labels, scores = groups_batch()
    total, count = ranking_loss(name, tf.constant(labels), tf.constant(scores),
                                tf.constant(groups), tf.ones(len(labels)))
    assert float(count) == pytest.approx(4.0)  # four groups, the singleton included
    np.testing.assert_allclose(float(total / count), keras_rs_mean(name, groups, labels, scores),
                               rtol=1e-5)


@pytest.mark.parametrize("name", sorted(KERAS_RS))
def test_masked_rows_leave_the_groups(name):
    groups, labels, scores = groups_batch(seed=1)
    weights = np.ones(len(labels), np.float32)
    weights[[0, 3, 5]] = 0.0
    scores_with_garbage = scores.copy()
    scores_with_garbage[[0, 3, 5]] = 1e30  # a masked row's score must not reach the loss
    total, count = ranking_loss(name, tf.constant(labels), tf.constant(scores_with_garbage),
                                tf.constant(groups), tf.constant(weights))
    kept = weights > 0
    np.testing.assert_allclose(float(total / count),
                               keras_rs_mean(name, groups[kept], labels[kept], scores[kept]),
                               rtol=1e-5)


@pytest.mark.parametrize("name", sorted(KERAS_RS))
def test_finite_gradients_with_far_apart_groups_under_xla(name):
    groups = tf.constant([1, 1, 2, 2, 3])
    labels = tf.constant([1.0, 0.0, 0.0, 2.0, 1.0])
    scores = tf.Variable([200.0, 150.0, -300.0, -250.0, 0.0])

    @tf.function(jit_compile=True)
    def gradient():
        with tf.GradientTape() as tape:
            total, count = ranking_loss(name, labels, scores, groups, tf.ones(5))
            value = total / count
        return value, tape.gradient(value, scores)

    value, grad = gradient()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy()))
    assert float(grad[4]) == 0.0  # a group of one has nothing to rank


def test_string_groups_and_a_batch_without_groups():
    labels, scores = tf.constant([1.0, 0.0]), tf.constant([0.3, 0.1])
    total, count = ranking_loss("pairwise_logistic", labels, scores, tf.constant(["a", "a"]),
                                tf.ones(2))
    # One pair, averaged over the group's two items (keras-rs' reduction).
    assert float(total / count) == pytest.approx(np.log1p(np.exp(-0.2)) / 2, rel=1e-5)
    total, count = ranking_loss("listmle", labels, scores, tf.constant(["a", "a"]), tf.zeros(2))
    assert float(total) == 0.0 and float(count) == 0.0
