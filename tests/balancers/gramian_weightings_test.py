"""MGDA, PCGrad and IMTL-G: TorchJD's published outputs and each method's defining property."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.balancers.mgda import min_norm_weights

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's test matrix
GOLDEN = {"mgda": [0.0, 1.0, 1.0], "pcgrad": [0.5848, 3.8012, 3.8012],
          "imtl_g": [0.0767, 1.0, 1.0]}
RNG = np.random.default_rng(0)


def combine(name, matrix, step=0, **hparams):
    balancer = balancers.get(name, **hparams)
    balancer.build(matrix.shape[0])
    context = BalanceContext.default()._replace(step=tf.constant(step, tf.int64))
    result = balancer.balance(tf.constant(matrix, tf.float64), tf.zeros([len(matrix)]), context)
    return np.asarray(result.combined), np.asarray(result.shared_weights)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_torchjd_published_outputs(name):
    out, _ = combine(name, J)
    np.testing.assert_allclose(out, GOLDEN[name], atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8])
def test_mgda_meets_the_kkt_conditions_of_the_min_norm_problem(seed, num_tasks):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(num_tasks, 6)) * rng.uniform(0.01, 100, size=(num_tasks, 1))
    if seed % 2:  # low rank: more tasks than directions that matter
        matrix = rng.normal(size=(num_tasks, 2)) @ rng.normal(size=(2, 6))
    gram = matrix @ matrix.T
    w = np.asarray(min_norm_weights(tf.constant(gram)))
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-9
    value = w @ gram @ w
    slack = gram @ w - value  # KKT on the simplex: (G w)_i ≥ wᵀGw, = where w_i > 0
    scale = np.abs(gram).max()
    assert np.all(slack >= -1e-7 * scale)
    np.testing.assert_allclose(slack[w > 1e-9], 0.0, atol=1e-7 * scale)
    # Hence the direction never conflicts with a task gradient.
    direction = w @ matrix
    assert np.all(matrix @ direction >= -1e-7 * scale)


def test_pcgrad_two_tasks_leaves_no_conflict_and_order_is_seeded():
    for _ in range(20):
        g = RNG.normal(size=(2, 5))
        out, _ = combine("pcgrad", g)
        assert np.all(g @ out >= -1e-9)
    g = RNG.normal(size=(4, 6))
    a, _ = combine("pcgrad", g, step=3, seed=1)
    b, _ = combine("pcgrad", g, step=3, seed=1)
    np.testing.assert_array_equal(a, b)


def test_pcgrad_matches_a_direct_implementation_of_algorithm_1():
    g = RNG.normal(size=(3, 7))
    balancer = balancers.get("pcgrad", seed=4)
    balancer.build(3)
    step = 5
    out = balancer.balance(tf.constant(g), tf.zeros([3]), BalanceContext.default()._replace(
        step=tf.constant(step, tf.int64))).combined
    expected = np.zeros(7)
    for i in range(3):
        noise = tf.random.stateless_uniform([3], seed=tf.constant([4 + i, step]))
        projected = g[i].copy()
        for j in np.argsort(noise.numpy(), kind="stable"):
            if j != i and projected @ g[j] < 0:
                projected -= projected @ g[j] / (g[j] @ g[j]) * g[j]
        expected += projected
    np.testing.assert_allclose(out, expected, rtol=1e-9)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_imtl_g_gives_equal_projections_on_unit_gradients(num_tasks):
    g = RNG.normal(size=(num_tasks, 9))
    out, weights = combine("imtl_g", g)
    units = g / np.linalg.norm(g, axis=1, keepdims=True)
    projections = units @ out
    np.testing.assert_allclose(projections, projections[0], rtol=1e-8)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-8)
