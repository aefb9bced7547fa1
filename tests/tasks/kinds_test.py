"""Each kind's loss against its hand computation, its minimiser in closed form, its prediction."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import Task
from keras_mtl.tasks import kinds

LOGITS = np.array([-3.0, -0.5, 0.0, 0.7, 4.0], np.float32)
BINARY = np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32)


def loss(task, labels, logits):
    return task.per_example_loss(tf.constant(labels, tf.float32),
                                 tf.constant(logits, tf.float32)).numpy()


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_binary_options_equal_their_definitions():
    p = sigmoid(LOGITS.astype(np.float64))
    plain = -(BINARY * np.log(p) + (1 - BINARY) * np.log(1 - p))
    np.testing.assert_allclose(loss(Task("c"), BINARY, LOGITS), plain, rtol=1e-5)
    # pos_weight: TensorFlow's weighted cross-entropy, positives × a.
    expected = tf.nn.weighted_cross_entropy_with_logits(BINARY, LOGITS, 3.0).numpy()
    np.testing.assert_allclose(loss(Task("c", pos_weight=3.0), BINARY, LOGITS), expected,
                               rtol=1e-5)
    # Focal (γ = 2): Keras' BinaryFocalCrossentropy without class balancing, row by row.
    focal = keras.losses.BinaryFocalCrossentropy(gamma=2.0, from_logits=True, reduction=None)
    np.testing.assert_allclose(loss(Task("c", focal_gamma=2.0), BINARY, LOGITS),
                               focal(BINARY[:, None], LOGITS[:, None]).numpy(), rtol=1e-4)
    # Label smoothing ε = 0.2: labels 0.1 / 0.9, as Keras smooths them.
    smooth = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2, reduction=None)
    np.testing.assert_allclose(loss(Task("c", label_smoothing=0.2), BINARY, LOGITS),
                               smooth(BINARY[:, None], LOGITS[:, None]).numpy(), rtol=1e-4)


def test_binary_loss_stays_finite_where_the_probability_saturates():
    values = loss(Task("c", focal_gamma=2.0, pos_weight=2.0), [1.0, 0.0], [-200.0, 200.0])
    np.testing.assert_allclose(values, [2.0 * 200.0, 200.0], rtol=1e-5)


def test_regression_options():
    labels = np.array([0.0, 1.0, 10.0], np.float32)
    logits = np.array([0.5, 3.0, 2.0], np.float32)
    huber = keras.losses.Huber(delta=1.5, reduction=None)
    np.testing.assert_allclose(
        loss(Task("r", kind="regression", loss="huber", huber_delta=1.5), labels, logits),
        huber(labels[:, None], logits[:, None]).numpy(), rtol=1e-5)
    transformed = Task("r", kind="regression", label_transform="log1p")
    np.testing.assert_allclose(loss(transformed, labels, logits),
                               (logits - np.log1p(labels)) ** 2, rtol=1e-5)
    np.testing.assert_allclose(transformed.predict(tf.constant(logits)).numpy(), np.expm1(logits),
                               rtol=1e-5)


def test_multiclass_is_softmax_cross_entropy():
    task = Task("rating", kind="multiclass", num_classes=3)
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    labels = np.array([1.0, 0.0], np.float32)
    z = logits - logits.max(1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(loss(task, labels, logits), -log_softmax[[0, 1], [1, 0]], rtol=1e-5)
    probabilities = task.predict(tf.constant(logits)).numpy()
    np.testing.assert_allclose(probabilities, np.exp(log_softmax), rtol=1e-5)
    assert task.num_outputs == 3


def test_count_and_amount_losses_by_hand():
    y = np.array([0.0, 1.0, 4.0], np.float32)
    z = np.array([0.3, -1.0, 1.5], np.float32)
    np.testing.assert_allclose(loss(Task("n", kind="poisson"), y, z), np.exp(z) - y * z,
                               rtol=1e-5)
    p = 1.4
    tweedie = -y * np.exp((1 - p) * z) / (1 - p) + np.exp((2 - p) * z) / (2 - p)
    np.testing.assert_allclose(loss(Task("a", kind="tweedie", tweedie_power=p), y, z), tweedie,
                               rtol=1e-5)
    # Watch time: T > 0 is a positive weighted T, T = 0 a negative weighted 1.
    softplus = np.log1p(np.exp(z.astype(np.float64)))
    softplus_neg = np.log1p(np.exp(-z.astype(np.float64)))
    expected = np.where(y > 0, y * softplus_neg, softplus)
    np.testing.assert_allclose(loss(Task("w", kind="watch_time"), y, z), expected, rtol=1e-5)


def test_ziln_loss_by_hand():
    # y = e, μ = 1, σ = softplus(z₂) = 1 (z₂ = log(e − 1)): the log-density term is
    # log y + log σ + ½ log 2π + 0 = 1 + ½ log 2π.
    z2 = math.log(math.e - 1.0)
    logits = np.array([[0.0, 1.0, z2], [2.0, 5.0, z2]], np.float32)
    labels = np.array([math.e, 0.0], np.float32)
    expected = [math.log(2.0) + 1.0 + 0.5 * math.log(2 * math.pi),  # BCE(1, 0) = log 2
                math.log1p(math.exp(2.0))]  # zero value: only BCE(0, 2)
    np.testing.assert_allclose(loss(Task("ltv", kind="ziln"), labels, logits), expected, rtol=1e-5)
    prediction = Task("ltv", kind="ziln").predict(tf.constant(logits)).numpy()
    np.testing.assert_allclose(prediction, [0.5 * math.exp(1.5), sigmoid(2.0) * math.exp(5.5)],
                               rtol=1e-5)


def minimiser_gradient(task, labels, parameters):
    """d(mean loss)/d(parameters) for parameters shared by every row (a constant prediction)."""
    parameters = tf.Variable(np.asarray(parameters, np.float32))
    labels = tf.constant(labels, tf.float32)
    with tf.GradientTape() as tape:
        rows = tf.ones([labels.shape[0], 1]) * parameters[None, :]
        logits = rows[:, 0] if task.num_outputs == 1 else rows
        value = tf.reduce_mean(task.per_example_loss(labels, logits))
    return tape.gradient(value, parameters).numpy()


def test_each_kind_predicts_the_mean_at_its_optimum():
    """A constant prediction's optimum, in closed form: the loss' gradient vanishes there, and the
    prediction at it is the labels' mean (watch time: Σ T / number of negatives, Covington §4.1)."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, 400).astype(np.float32)
    amounts = np.where(rng.random(400) < 0.4, 0.0, rng.gamma(2.0, 3.0, 400)).astype(np.float32)
    for task, labels, optimum in [
        (Task("n", kind="poisson"), counts, [math.log(counts.mean())]),
        (Task("a", kind="tweedie", tweedie_power=1.6), amounts, [math.log(amounts.mean())]),
        (Task("w", kind="watch_time"), amounts,
         [math.log(amounts.sum() / (amounts == 0).sum())]),
    ]:
        np.testing.assert_allclose(minimiser_gradient(task, labels, optimum), 0.0, atol=2e-5)
        assert abs(minimiser_gradient(task, labels, [optimum[0] + 0.3])[0]) > 1e-2
    # ZILN: p = share of non-zero values, μ and σ the mean and std of their logs.
    positive = amounts[amounts > 0].astype(np.float64)
    share, mu, sigma = len(positive) / len(amounts), np.log(positive).mean(), np.log(positive).std()
    optimum = [math.log(share / (1 - share)), mu, math.log(math.expm1(sigma))]
    np.testing.assert_allclose(minimiser_gradient(Task("v", kind="ziln"), amounts, optimum), 0.0,
                               atol=2e-5)


@pytest.mark.parametrize("arguments, message", [
    ({"kind": "regression", "pos_weight": 2.0}, "pos_weight applies to binary"),
    ({"kind": "multiclass"}, "needs num_classes"),
    ({"kind": "multiclass", "num_classes": 1}, "needs num_classes"),
    ({"kind": "binary", "num_classes": 3}, "num_classes applies to multiclass"),
    ({"focal_gamma": -1.0}, "focal_gamma must be a number >= 0"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"kind": "tweedie", "tweedie_power": 2.0}, r"tweedie_power must be in \(1, 2\)"),
    ({"kind": "regression", "label_transform": "log"}, "label_transform must be"),
    ({"kind": "regression", "huber_delta": 2.0}, "huber_delta applies with loss='huber'"),
    ({"loss": "listmle"}, "group="),
    ({"group": "request"}, "group= is read by a ranking loss"),
    ({"kind": "poisson", "loss": "pairwise_logistic", "group": "r"}, "ranks binary or graded"),
    ({"kind": "bernoulli"}, "kind must be one of"),
])
def test_options_that_do_not_apply_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        Task("t", **arguments)


def test_esmm_task_refuses_options_its_loss_ignores():
    with pytest.raises(ValueError, match="entire-space cross-entropy"):
        Task("buy", esmm_parent="click", pos_weight=2.0)


def test_invalid_labels_per_kind():
    def invalid(task, values):
        values = tf.constant(values, tf.float32)
        return kinds.invalid_labels(task, values, task.present_mask(values)).numpy().tolist()

    assert invalid(Task("r", kind="multiclass", num_classes=3),
                   [0, 2, 3, 1.5, -1, np.nan]) == [False, False, True, True, True, False]
    assert invalid(Task("w", kind="watch_time"), [0, 12.5, -1, np.inf]) == [False, False, True, True]
    assert invalid(Task("s", kind="regression", label_transform="log1p"),
                   [-0.5, -1.0, 3.0]) == [False, True, False]
    assert invalid(Task("s", kind="regression"), [-1e9, 3.0]) == [False, False]


def test_config_round_trip_keeps_every_option():
    task = Task("c", pos_weight=2.0, focal_gamma=1.0, label_smoothing=0.1, metrics=["auc"])
    assert Task.from_config(task.get_config()) == task
    ranked = Task("rel", kind="regression", loss="listmle", group="request")
    assert Task.from_config(ranked.get_config()) == ranked


def test_label_scale_changes_the_loss_scale_not_the_estimate():
    """With s, the loss sees label / s and the prediction is s·(head's): the optimum's prediction
    (closed form) is the same mean, and the loss at it is 1/s of the unscaled one for the
    label-linear kinds."""
    rng = np.random.default_rng(3)
    seconds = np.where(rng.random(300) < 0.3, rng.exponential(200.0, 300), 0.0).astype(np.float32)
    plain, scaled = Task("w", kind="watch_time"), Task("w", kind="watch_time", label_scale=100.0)
    optimum = math.log(seconds.sum() / (seconds == 0).sum())
    np.testing.assert_allclose(minimiser_gradient(plain, seconds, [optimum]), 0.0, atol=1e-4)
    shifted = optimum - math.log(100.0)  # e^z estimates E[T] / s
    np.testing.assert_allclose(minimiser_gradient(scaled, seconds, [shifted]), 0.0, atol=2e-5)
    np.testing.assert_allclose(scaled.predict(tf.constant([shifted])).numpy(),
                               plain.predict(tf.constant([optimum])).numpy(), rtol=1e-5)
    counts = Task("n", kind="poisson", label_scale=2.0)
    y, z = np.array([4.0, 0.0], np.float32), np.array([0.5, -1.0], np.float32)
    np.testing.assert_allclose(loss(counts, y, z), np.exp(z) - y / 2.0 * z, rtol=1e-5)
    np.testing.assert_allclose(counts.predict(tf.constant(z)).numpy(), 2.0 * np.exp(z), rtol=1e-5)
    with pytest.raises(ValueError, match="label_scale applies to regression / poisson"):
        Task("c", label_scale=2.0)
