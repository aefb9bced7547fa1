"""Loss-level and magnitude balancers of the breadth issue: weights by hand over a few steps."""

import numpy as np
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext

LOSSES = np.array([[1.0, 4.0, 0.5], [0.8, 3.0, 0.6], [0.7, 2.5, 0.55]])


def context(step=0, epoch=0):
    return BalanceContext(step=tf.constant(step, tf.int64), epoch=tf.constant(epoch, tf.int64))


def apply(updates):
    for variable, value in updates:
        variable.assign(value)


def torch_adam(gradients, lr, weight_decay=0.0, initial=0.0, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's Adam (L2 weight decay) on a sequence of gradient functions of the parameter."""
    value = np.asarray(initial, float)
    m = v = 0.0
    for t, gradient in enumerate(gradients, start=1):
        g = gradient(value) + weight_decay * value
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        value = value - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return value


def test_uw_uncertainty_weighting_by_hand_and_at_its_fixed_point():
    balancer = balancers.get("uw", learning_rate=0.1)
    balancer.build(3)
    s = np.zeros(3)
    for t, losses in enumerate(LOSSES):
        weights, updates = balancer.task_weights(tf.constant(losses, tf.float32), context(t))
        np.testing.assert_allclose(weights, 0.5 * np.exp(-s), rtol=1e-5)
        apply(updates)
        s = torch_adam([lambda x, loss=loss: 0.5 * (1 - np.exp(-x) * loss) for loss in LOSSES[:t + 1]], 0.1)
    np.testing.assert_allclose(balancer.log_variance.value, s, rtol=1e-5)
    fixed = balancers.get("uw")  # exp(s) = L: zero gradient, s stays
    fixed.build(3)
    fixed.log_variance.value.assign(np.log(LOSSES[0]))
    apply(fixed.task_weights(tf.constant(LOSSES[0], tf.float32), context())[1])
    np.testing.assert_allclose(fixed.log_variance.value, np.log(LOSSES[0]), rtol=1e-6)


def test_imtl_l_by_hand_and_at_its_fixed_point():
    balancer = balancers.get("imtl_l", learning_rate=0.1)
    balancer.build(3)
    for t, losses in enumerate(LOSSES):
        apply(balancer.task_weights(tf.constant(losses, tf.float32), context(t))[1])
    expected = torch_adam([lambda x, loss=loss: np.exp(x) * loss - 1 for loss in LOSSES], 0.1)
    np.testing.assert_allclose(balancer.scale.value, expected, rtol=1e-5)
    fixed = balancers.get("imtl_l")
    fixed.build(3)
    fixed.scale.value.assign(-np.log(LOSSES[0]))
    weights, updates = fixed.task_weights(tf.constant(LOSSES[0], tf.float32), context())
    np.testing.assert_allclose(weights * LOSSES[0], 1.0, rtol=1e-6)  # every scaled loss is 1
    apply(updates)
    np.testing.assert_allclose(fixed.scale.value, -np.log(LOSSES[0]), rtol=1e-6)


def test_dwa_uses_the_ratio_of_the_last_two_epoch_means():
    balancer = balancers.get("dwa", temperature=2.0)
    balancer.build(3)
    epochs = {0: LOSSES[:2], 1: LOSSES[1:], 2: LOSSES[:1]}
    seen = {}
    for epoch, steps in epochs.items():
        for t, losses in enumerate(steps):
            weights, updates = balancer.task_weights(tf.constant(losses, tf.float32),
                                                     context(t, epoch))
            seen.setdefault(epoch, np.asarray(weights))
            apply(updates)
    np.testing.assert_allclose(seen[0], 1.0)
    np.testing.assert_allclose(seen[1], 1.0)  # one finished epoch: no ratio yet
    ratio = LOSSES[1:].mean(0) / LOSSES[:2].mean(0)
    expected = 3 * np.exp(ratio / 2) / np.exp(ratio / 2).sum()
    np.testing.assert_allclose(seen[2], expected, rtol=1e-5)
    assert np.argmax(seen[2]) == np.argmax(ratio)  # the slowest-falling task weighs most


def test_rlw_draws_softmax_normal_weights_per_step():
    balancer = balancers.get("rlw", seed=3)
    balancer.build(3)
    first = np.asarray(balancer.task_weights(None, context(5))[0])
    again = np.asarray(balancer.task_weights(None, context(5))[0])
    other = np.asarray(balancer.task_weights(None, context(6))[0])
    z = tf.random.stateless_normal([3], seed=tf.constant([3, 5])).numpy()
    np.testing.assert_allclose(first, np.exp(z) / np.exp(z).sum(), rtol=1e-6)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_gls_weights_are_the_gradient_of_the_geometric_mean():
    losses = tf.constant(LOSSES[0])
    with tf.GradientTape() as tape:
        tape.watch(losses)
        geometric = tf.reduce_prod(losses) ** (1 / 3)
    balancer = balancers.get("gls")
    balancer.build(3)
    np.testing.assert_allclose(balancer.task_weights(losses, context())[0],
                               tape.gradient(geometric, losses), rtol=1e-6)
    tiny = balancer.task_weights(tf.constant([0.0, 1.0, 1e30]), context())[0]
    assert np.all(np.isfinite(tiny))


def test_stch_warms_up_records_the_nadir_then_smooths_the_max():
    mu = 0.5
    balancer = balancers.get("stch", mu=mu, warmup_epochs=1)
    balancer.build(3)
    weights, updates = balancer.task_weights(tf.constant(LOSSES[0], tf.float32), context(0, 0))
    np.testing.assert_allclose(weights, 1 / LOSSES[0], rtol=1e-6)  # Σ log L
    apply(updates)
    for losses in LOSSES[1:]:  # epoch 1 = warmup epoch: records the nadir
        weights, updates = balancer.task_weights(tf.constant(losses, tf.float32), context(0, 1))
        np.testing.assert_allclose(weights, 1 / losses, rtol=1e-6)
        apply(updates)
    nadir = LOSSES[1:].mean(0)
    losses = tf.constant(LOSSES[0])
    with tf.GradientTape() as tape:
        tape.watch(losses)
        objective = 3 * mu * tf.reduce_logsumexp(tf.math.log(losses / nadir) / mu)
    weights, _ = balancer.task_weights(tf.cast(losses, tf.float32), context(0, 2))
    np.testing.assert_allclose(weights, tape.gradient(objective, losses), rtol=1e-5)


def test_famo_weights_and_its_post_step_logit_update():
    balancer = balancers.get("famo", learning_rate=0.1, weight_decay=0.01)
    balancer.build(3)
    balancer.logits.value.assign([0.2, -0.1, 0.4])
    xi = tf.constant([0.2, -0.1, 0.4], tf.float64)
    losses = tf.constant(LOSSES[0])
    with tf.GradientTape() as tape:
        tape.watch(losses)
        z = tf.nn.softmax(xi)
        shifted = losses + 1e-8
        c = tf.stop_gradient(tf.reduce_sum(z / shifted))
        objective = tf.reduce_sum(tf.math.log(shifted) * z / c)
    weights, _ = balancer.task_weights(tf.cast(losses, tf.float32), context())
    np.testing.assert_allclose(weights, tape.gradient(objective, losses), rtol=1e-5)
    np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-6)
    after = LOSSES[1]
    delta = np.log(LOSSES[0] + 1e-8) - np.log(after + 1e-8)
    with tf.GradientTape() as tape:
        tape.watch(xi)
        improvement = tf.reduce_sum(tf.nn.softmax(xi) * delta)
    gradient = tape.gradient(improvement, xi).numpy()
    apply(balancer.post_step_updates(tf.constant(LOSSES[0], tf.float32),
                                     tf.constant(after, tf.float32)))
    expected = torch_adam([lambda x: gradient], 0.1, weight_decay=0.01, initial=xi.numpy())
    np.testing.assert_allclose(balancer.logits.value, expected, rtol=1e-5)


def test_gradnorm_first_step_by_hand():
    matrix = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    norms = np.linalg.norm(matrix, axis=1)
    balancer = balancers.get("gradnorm", alpha=1.0, learning_rate=0.1, level="parameters")
    balancer.build(3)
    first = balancer.balance(tf.constant(matrix, tf.float32), tf.constant(LOSSES[0], tf.float32),
                             context())
    np.testing.assert_allclose(first.combined, matrix.sum(0), rtol=1e-6)  # w = 1 at first
    apply(first.updates)
    # Step 1: L(0) = L, so r = 1 and the target is the mean norm; Adam's first step is lr·sign.
    step = np.ones(3) - 0.1 * np.sign(norms - norms.mean())
    np.testing.assert_allclose(balancer.weights_.value, 3 * step / step.sum(), rtol=1e-5)
    np.testing.assert_allclose(balancer.initial_losses, LOSSES[0], rtol=1e-6)
    second = balancer.balance(tf.constant(matrix, tf.float32), tf.constant(LOSSES[1], tf.float32),
                              context(1))
    np.testing.assert_allclose(second.combined, (3 * step / step.sum()) @ matrix, rtol=1e-5)
    blocks = [[tf.constant(row[:1]), tf.constant(row[1:])] for row in matrix.astype(np.float32)]
    balancer_b = balancers.get("gradnorm", alpha=1.0, learning_rate=0.1)
    balancer_b.build(3)
    from_blocks = balancer_b.balance_blocks(blocks, tf.constant(LOSSES[0], tf.float32), context())
    np.testing.assert_allclose(tf.concat(from_blocks.combined, 0), first.combined, rtol=1e-6)


def test_db_mtl_by_hand_over_two_steps():
    rng = np.random.default_rng(0)
    matrices = rng.normal(size=(2, 3, 5))
    beta, sigma = 0.8, 0.5
    balancer = balancers.get("db_mtl", beta=beta, beta_sigma=sigma)
    balancer.build(3, num_columns=5)
    buffer = np.zeros((3, 5))
    for t in range(2):
        result = balancer.balance(tf.constant(matrices[t], tf.float32),
                                  tf.constant(LOSSES[t], tf.float32), context(t))
        log_gradients = matrices[t] / (LOSSES[t] + 1e-8)[:, None]
        buffer = log_gradients + beta / (t + 1) ** sigma * (buffer - log_gradients)
        norms = np.linalg.norm(buffer, axis=1)
        np.testing.assert_allclose(result.combined, (norms.max() / (norms + 1e-8)) @ buffer,
                                   rtol=1e-5)
        np.testing.assert_allclose(result.task_weights, 1 / (LOSSES[t] + 1e-8), rtol=1e-6)
        apply(result.updates)


def test_db_mtl_needs_the_parameter_count():
    try:
        balancers.get("db_mtl").build(3)
    except ValueError as error:
        assert "number of balanced parameters" in str(error)
    else:
        raise AssertionError("db_mtl built without knowing its state's width")
