"""Gramian weightings: TorchJD's published outputs and each method's defining property."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.balancers.solvers import (
    dual_cone_weights,
    min_norm_weights,
    power_equation_weights,
    simplex_qp,
)

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's test matrix
GOLDEN = {
    "mgda": [0.0, 1.0, 1.0], "pcgrad": [0.5848, 3.8012, 3.8012], "imtl_g": [0.0767, 1.0, 1.0],
    "upgrad": [0.2929, 1.9004, 1.9004], "cagrad": [0.1835, 1.2041, 1.2041],
    "nash_mtl": [0.0542, 0.7061, 0.7061], "aligned_mtl": [0.2133, 0.9673, 0.9673],
    "dualproj": [0.5563, 1.1109, 1.1109], "fairgrad": [0.0766, 0.9985, 0.9985],
    "config": [0.1588, 2.0706, 2.0706],
}
# TorchJD's CAGrad omits the official code's final division by 1 + c²; fairgrad's α = 1 default.
GOLDEN_HPARAMS = {"cagrad": {"c": 0.5, "rescale": 0}}
RNG = np.random.default_rng(0)


def combine(name, matrix, step=0, **hparams):
    balancer = balancers.get(name, **hparams)
    balancer.build(matrix.shape[0])
    context = BalanceContext.default()._replace(step=tf.constant(step, tf.int64))
    result = balancer.balance(tf.constant(matrix, tf.float64), tf.zeros([len(matrix)]), context)
    return np.asarray(result.combined), np.asarray(result.shared_weights)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_torchjd_published_outputs(name):
    out, _ = combine(name, J, **GOLDEN_HPARAMS.get(name, {}))
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


def random_matrix(rng, num_tasks, width=6, low_rank=False):
    if low_rank:
        return rng.normal(size=(num_tasks, 2)) @ rng.normal(size=(2, width))
    return rng.normal(size=(num_tasks, width)) * rng.uniform(0.01, 100, size=(num_tasks, 1))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_cagrad_simplex_qp_meets_its_kkt_conditions_with_a_linear_term(seed, num_tasks):
    rng = np.random.default_rng(seed)
    matrix = random_matrix(rng, num_tasks, low_rank=seed % 2 == 1)
    q = matrix @ matrix.T
    b = rng.normal(size=num_tasks) * np.abs(q).max()
    w = np.asarray(simplex_qp(tf.constant(q), tf.constant(b)))
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-9
    gradient = q @ w + b  # KKT: gradient_i ≥ λ for all i, = λ on the support
    level = gradient[w > 1e-9].min()
    scale = np.abs(q).max() + np.abs(b).max()
    assert np.all(gradient >= level - 1e-7 * scale)
    np.testing.assert_allclose(gradient[w > 1e-9], level, atol=1e-7 * scale)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_tasks", [2, 3, 6])
def test_upgrad_and_dualproj_dual_cone_projection_meets_its_kkt_conditions(seed, num_tasks):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(num_tasks, num_tasks + 2))
    gram = matrix @ matrix.T
    lower = rng.uniform(0, 1, size=(3, num_tasks))
    v = np.asarray(dual_cone_weights(tf.constant(gram), tf.constant(lower)))
    scale = np.abs(gram).max()
    for vi, ui in zip(v, lower, strict=True):
        assert np.all(vi >= ui - 1e-9)  # primal feasibility
        multipliers = gram @ vi  # stationarity: 2Gv = μ ≥ 0, μ_i (v_i − u_i) = 0
        assert np.all(multipliers >= -1e-8 * scale)
        np.testing.assert_allclose(multipliers * (vi - ui), 0.0, atol=1e-8 * scale)


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "mgda"])
@pytest.mark.parametrize("seed", range(8))
def test_upgrad_dualproj_and_mgda_never_conflict_with_a_task(name, seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(4, 9)) * rng.uniform(0.1, 10, size=(4, 1))
    out, _ = combine(name, g)
    assert np.all(g @ out >= -1e-9 * np.abs(g @ g.T).max()), g @ out
    # With TorchJD's ridge the guarantee holds up to the ridge's size only.
    if name != "mgda":
        out, _ = combine(name, g, reg_eps=1e-4, norm_eps=1e-4)
        assert np.all(g @ out >= -1e-3 * np.abs(g @ g.T).max())


def test_dualproj_keeps_a_non_conflicting_mean():
    g = np.array([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1]])
    out, _ = combine("dualproj", g)
    np.testing.assert_allclose(out, g.mean(0), rtol=1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("c", [0.2, 0.5, 1.5])
def test_cagrad_maximises_the_worst_task_improvement_in_its_ball(seed, c):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(3, 5))
    d, _ = combine("cagrad", g, c=c, rescale=0)
    g0 = g.mean(0)
    radius = c * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) <= radius * (1 + 1e-9)
    best = (g @ d).min()
    directions = rng.normal(size=(20000, 5))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    candidates = g0 + radius * directions * rng.uniform(0, 1, size=(20000, 1)) ** 0.2
    assert (candidates @ g.T).min(axis=1).max() <= best + 1e-9
    rescaled, _ = combine("cagrad", g, c=c)  # the official code's default division by 1 + c²
    np.testing.assert_allclose(rescaled, d / (1 + c ** 2), rtol=1e-9)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    g = RNG.normal(size=(3, 5))
    out, _ = combine("cagrad", g, c=0.0, rescale=0)
    np.testing.assert_allclose(out, g.mean(0), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_nash_mtl_and_fairgrad_power_equation_is_solved_to_a_tight_residual(alpha, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(4, 10)) * np.array([[1e-3], [1.0], [10.0], [1e3]])[rng.permutation(4)]
    gram = matrix @ matrix.T  # condition number ≈ 1e12
    w = np.asarray(power_equation_weights(tf.constant(gram), alpha, regularization=0.0))
    assert np.all(w > 0)
    np.testing.assert_allclose(gram @ w, w ** (-1.0 / alpha), rtol=1e-8)


def test_nash_mtl_solves_its_bargaining_equation_and_clips_the_norm():
    g = RNG.normal(size=(3, 8)) * 5
    gram = g @ g.T
    _, alpha = combine("nash_mtl", g, max_norm=0.0)
    np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-9)
    out, clipped = combine("nash_mtl", g, max_norm=0.1)
    np.testing.assert_allclose(np.linalg.norm(out), 0.1, rtol=1e-9)
    np.testing.assert_allclose(clipped / alpha, clipped[0] / alpha[0], rtol=1e-9)


def test_fairgrad_limit_cases():
    g = RNG.normal(size=(3, 8))
    gram = g @ g.T
    _, nash = combine("nash_mtl", g, max_norm=0.0)
    _, proportional = combine("fairgrad", g, alpha=1.0)
    np.testing.assert_allclose(proportional, nash, rtol=1e-9)  # α = 1: Nash-MTL's equation
    _, max_min = combine("fairgrad", g, alpha=1e6)
    np.testing.assert_allclose(max_min, np.linalg.solve(gram, np.ones(3)), rtol=1e-4)
    improvements = g @ (max_min @ g)
    np.testing.assert_allclose(improvements, improvements[0], rtol=1e-4)  # equal for all tasks
    _, utilitarian = combine("fairgrad", g, alpha=1e-3)
    np.testing.assert_allclose(utilitarian, np.ones(3), rtol=2e-2)  # α → 0: w → 1


def test_aligned_mtl_makes_the_aligned_gradients_orthonormal_up_to_scale():
    g = RNG.normal(size=(3, 8)) * np.array([[0.1], [1.0], [10.0]])
    gram = g @ g.T
    balancer = balancers.get("aligned_mtl")
    balancer.build(3)
    eigenvalues = np.linalg.eigvalsh(gram)
    _, weights = combine("aligned_mtl", g, pref_vector=[1.0, 0.0, 0.0])
    # B e_1 is the first column of B; B G B = λ_min I, so ⟨Jᵀ B e_i, Jᵀ B e_j⟩ = λ_min δ_ij.
    columns = np.stack([combine("aligned_mtl", g, pref_vector=list(np.eye(3)[i]))[1]
                        for i in range(3)], axis=1)
    np.testing.assert_allclose(columns.T @ gram @ columns, eigenvalues.min() * np.eye(3),
                               atol=1e-9 * eigenvalues.max())
    np.testing.assert_allclose(weights, columns[:, 0], rtol=1e-12)


def test_config_direction_has_equal_cosine_with_every_task():
    g = RNG.normal(size=(3, 8)) * np.array([[0.1], [1.0], [10.0]])
    out, _ = combine("config", g)
    cosines = g @ out / np.linalg.norm(g, axis=1) / np.linalg.norm(out)
    np.testing.assert_allclose(cosines, cosines[0], rtol=1e-9)
    assert cosines[0] > 0
    np.testing.assert_allclose(np.linalg.norm(out), (g @ out / np.linalg.norm(out)).sum(),
                               rtol=1e-9)


def test_gradvac_matches_a_direct_implementation_and_moves_its_targets():
    g = RNG.normal(size=(3, 7))
    balancer = balancers.get("gradvac", beta=0.3, seed=2)
    balancer.build(3)
    balancer.targets.assign(np.full((3, 3), 0.2, np.float32))
    step = 4
    result = balancer.balance(tf.constant(g), tf.zeros([3]), BalanceContext.default()._replace(
        step=tf.constant(step, tf.int64)))
    targets = np.full((3, 3), 0.2)
    expected = np.zeros(7)
    for i in range(3):
        noise = tf.random.stateless_uniform([3], seed=tf.constant([2 + i, step]))
        projected = g[i].copy()
        for j in np.argsort(noise.numpy(), kind="stable"):
            if j == i:
                continue
            cos = projected @ g[j] / np.linalg.norm(projected) / np.linalg.norm(g[j])
            target = targets[i, j]
            if cos < target:
                projected = projected + np.linalg.norm(projected) * (
                    target * np.sqrt(1 - cos ** 2) - cos * np.sqrt(1 - target ** 2)) / (
                    np.linalg.norm(g[j]) * np.sqrt(1 - target ** 2)) * g[j]
                after = projected @ g[j] / np.linalg.norm(projected) / np.linalg.norm(g[j])
                np.testing.assert_allclose(after, target, atol=1e-9)  # raised exactly to target
            targets[i, j] = 0.7 * target + 0.3 * cos
        expected += projected
    np.testing.assert_allclose(result.combined, expected, rtol=1e-8)
    (variable, value), = result.updates
    assert variable is balancer.targets
    np.testing.assert_allclose(value, targets, rtol=1e-5)


def test_graddrop_keeps_one_sign_per_coordinate():
    g = RNG.normal(size=(4, 200))
    out, _ = combine("graddrop", g, step=3)
    positive = np.where(g > 0, g, 0).sum(0)
    negative = np.where(g < 0, g, 0).sum(0)
    chosen = np.isclose(out, positive) | np.isclose(out, negative)
    assert chosen.all()
    assert np.isclose(out, positive).any() and np.isclose(out, negative).any()
    agreeing = np.abs(g)
    np.testing.assert_allclose(combine("graddrop", agreeing)[0], agreeing.sum(0))
    np.testing.assert_allclose(combine("graddrop", g, leak=[1.0] * 4)[0], g.sum(0), rtol=1e-12)


def test_mgda_ub_is_mgda_at_the_representation_level():
    assert balancers.get("mgda_ub").level == "representation"
    with pytest.raises(ValueError, match="representation"):
        balancers.get("mgda_ub", level="parameters")
    np.testing.assert_allclose(combine("mgda_ub", J)[0], combine("mgda", J)[0])
