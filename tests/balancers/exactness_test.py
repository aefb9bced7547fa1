"""The Gramian methods at every gradient scale and for any number of tasks.

Each method's optimality conditions (KKT residuals, its defining equation) are checked on
matrices of K = 2 … 64 tasks, of full and low rank, with a zero task, with norms spread 1e8 : 1
and at global scales 1e-8 … 1e8, not only against golden vectors. Matrices are float64, so the
float64 path of `aggregate` is tested to tight tolerances; `test_float32_*` checks what training
(float32 gradients) gets.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers.solvers import (
    QPState,
    active_set_qp,
    dual_cone_weights,
    min_norm_weights,
)

SCALES = [1e-8, 1e-4, 1.0, 1e4, 1e8]
TASK_COUNTS = [2, 3, 5, 8, 16, 32, 64]


def matrix(kind: str, num_tasks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000 * num_tasks)
    width = max(2 * num_tasks, 12)
    if kind == "full":
        return rng.normal(size=(num_tasks, width))
    if kind == "low_rank":  # more tasks than directions
        rank = max(1, num_tasks // 3)
        return rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, width))
    if kind == "spread":  # norms from 1e-4 to 1e4
        return rng.normal(size=(num_tasks, width)) * np.logspace(-4, 4, num_tasks)[
            rng.permutation(num_tasks)][:, None]
    if kind == "zero_task":
        m = rng.normal(size=(num_tasks, width))
        m[rng.integers(num_tasks)] = 0.0
        return m
    if kind == "opposite":  # pairs of nearly opposite tasks
        m = rng.normal(size=(num_tasks, width))
        m[1::2] = -m[0::2][: num_tasks // 2] + 1e-3 * rng.normal(size=(num_tasks // 2, width))
        return m
    raise ValueError(kind)


KINDS = ["full", "low_rank", "spread", "zero_task", "opposite"]


def aggregate(name, m, **hparams):
    balancer = balancers.get(name, **hparams)
    return np.asarray(balancer.aggregate(np.asarray(m, np.float64)))


def assert_no_conflict(m, d, relative=1e-9, rounding=1e-11):
    """`⟨g_i, d⟩ ≥ −relative ‖g_i‖‖d‖ − rounding ‖g_i‖ max_j ‖g_j‖`: the second term is the
    rounding of a `d` that should be exactly 0 (a Pareto-stationary point)."""
    norms = np.linalg.norm(m, axis=1)
    tolerance = norms * (relative * np.linalg.norm(d) + rounding * norms.max())
    assert np.all(m @ d >= -tolerance), ((m @ d) / (tolerance + 1e-300)).min()


def cosines(m, d):
    norms = np.linalg.norm(m, axis=1)
    active = norms > 0
    return (m[active] @ d) / norms[active] / max(np.linalg.norm(d), 1e-300)


# --- the solvers' optimality conditions ---------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", TASK_COUNTS)
def test_mgda_min_norm_point_meets_its_kkt_conditions(num_tasks, kind):
    m = matrix(kind, num_tasks)
    gram = m @ m.T
    w = np.asarray(min_norm_weights(tf.constant(gram)))
    active = np.diag(gram) > 0
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    assert np.all(w[~active] == 0)  # a zero task is left out of the hull
    # KKT on the simplex over the active tasks: (Gw)_i ≥ wᵀGw, with equality where w_i > 0.
    # Tolerances relative to the active tasks' scale: ‖g_i‖‖d‖ per row.
    # Tolerance: 1e-9 relative to ‖g_i‖‖d‖, plus rounding of d itself (1e-11 ‖g_i‖‖g‖: a min-norm
    # point of 0, e.g. for opposite rank-1 tasks, comes out at 1e-14 … 1e-12 of the norms).
    d = w @ m
    norms = np.linalg.norm(m[active], axis=1)
    tolerance = norms * (1e-9 * np.linalg.norm(d) + 1e-11 * norms.max())
    slack = m[active] @ d - d @ d
    assert np.all(slack >= -tolerance), (slack / tolerance).min()
    support = w[active] > 1e-9
    assert np.all(np.abs(slack[support]) <= tolerance[support])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", TASK_COUNTS)
def test_upgrad_dual_cone_projections_meet_their_kkt_conditions(num_tasks, kind):
    m = matrix(kind, num_tasks)
    gram = m @ m.T
    lower = np.eye(num_tasks) / num_tasks  # UPGrad's K problems in one batch
    v = np.asarray(dual_cone_weights(tf.constant(gram), tf.constant(lower)))
    norms = np.linalg.norm(m, axis=1)
    for vi, ui in zip(v, lower, strict=True):
        assert np.all(vi >= ui - 1e-12)  # primal feasibility
        d = vi @ m
        tolerance = norms * (1e-9 * np.linalg.norm(d) + 1e-11 * norms.max())
        multipliers = m @ d  # stationarity: Gv = λ ≥ 0, λ_i (v_i − u_i) = 0
        assert np.all(multipliers >= -tolerance), (multipliers / (tolerance + 1e-300)).min()
        free = (vi - ui) * norms > 1e-9 * np.abs(vi * norms).max()
        assert np.all(np.abs(multipliers[free]) <= tolerance[free])


@pytest.mark.parametrize("num_tasks", [16, 64])
def test_the_active_set_solver_frees_many_bounds_per_iteration(num_tasks):
    """From every bound held, an optimum with every variable free takes two iterations (release
    all, then the full step), not one per variable: UPGrad's per-step cost at K = 32 on a real
    Gramian went from 21 iterations to 3 with it. Cold-started with 4 iterations, the answer
    must meet its KKT conditions."""
    rng = np.random.default_rng(num_tasks)
    basis = rng.normal(size=(num_tasks, num_tasks))
    quadratic = np.eye(num_tasks) + 0.1 * basis @ basis.T / num_tasks
    linear = -rng.uniform(0.5, 2.0, size=(3, num_tasks))  # three problems in one batch
    start = QPState(tf.zeros([3, num_tasks], tf.float64), tf.zeros([3, num_tasks], tf.bool))
    state = active_set_qp(tf.constant(quadratic), tf.constant(linear), start, max_iterations=4)
    expected = -np.linalg.solve(quadratic, linear.T).T
    assert np.all(expected > 0)  # every bound is released at the optimum
    np.testing.assert_allclose(state.point, expected, rtol=1e-10)
    assert np.all(state.free)


@pytest.mark.parametrize("kind", ["full", "spread", "zero_task", "opposite"])
@pytest.mark.parametrize("num_tasks", [2, 3, 8, 32, 64])
def test_nash_mtl_solves_its_bargaining_equation(num_tasks, kind):
    m = matrix(kind, num_tasks)
    gram = m @ m.T
    balancer = balancers.get("nash_mtl", max_norm=0.0)
    balancer.build(num_tasks)
    weights = np.asarray(balancer.weights_from_gramian(tf.constant(gram), None)[0])
    active = np.diag(gram) > 0
    assert np.all(weights[active] > 0) and np.all(weights[~active] == 0)
    # ⟨g_i, d⟩ α_i = 1 for every active task (Navon et al., Theorem 5.1).
    d = weights @ m
    np.testing.assert_allclose((m @ d)[active] * weights[active], 1.0, rtol=1e-7)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
@pytest.mark.parametrize("num_tasks", [3, 16, 64])
def test_fairgrad_solves_its_equation_with_spread_norms(num_tasks, alpha):
    m = matrix("spread", num_tasks) * 1e-2
    gram = m @ m.T
    balancer = balancers.get("fairgrad", alpha=alpha)
    balancer.build(num_tasks)
    w = np.asarray(balancer.weights_from_gramian(tf.constant(gram), None)[0])
    np.testing.assert_allclose(gram @ w, w ** (-1.0 / alpha), rtol=1e-7)


@pytest.mark.parametrize("kind", ["full", "spread", "zero_task"])
@pytest.mark.parametrize("num_tasks", [2, 3, 8, 12])  # equal projections need K ≤ rank
def test_imtl_g_and_config_give_equal_projections_on_unit_gradients(num_tasks, kind):
    m = matrix(kind, num_tasks)
    for name in ("imtl_g", "config"):
        c = cosines(m, aggregate(name, m))
        np.testing.assert_allclose(c, c[0], rtol=1e-8, err_msg=name)
        assert c[0] > 0, name


# --- properties across scales -------------------------------------------------------------------

# d(s·J) = s^p · d(J): the power p each method's maths gives.
SCALE_POWER = {"mgda": 1, "upgrad": 1, "dualproj": 1, "cagrad": 1, "imtl_g": 1, "config": 1,
               "aligned_mtl": 1, "nash_mtl": 0, "fairgrad": None}
SCALE_HPARAMS = {"nash_mtl": {"max_norm": 0.0}, "fairgrad": {"alpha": 2.0}}


@pytest.mark.parametrize("kind", ["full", "spread", "low_rank", "zero_task"])
@pytest.mark.parametrize("name", sorted(SCALE_POWER))
def test_the_update_is_scale_equivariant(name, kind):
    m = matrix(kind, 5)
    hparams = SCALE_HPARAMS.get(name, {})
    power = SCALE_POWER[name]
    if power is None:  # FairGrad: w(s²G) = s^{-2α/(1+α)} w(G), so d scales as s^{(1−α)/(1+α)}
        alpha = hparams["alpha"]
        power = (1 - alpha) / (1 + alpha)
    if kind == "low_rank" and name in ("nash_mtl", "fairgrad"):
        pytest.skip("no bargaining solution exists for linearly dependent gradients")
    reference = aggregate(name, m, **hparams)
    assert np.linalg.norm(reference) > 0
    for scale in SCALES:
        out = aggregate(name, scale * m, **hparams)
        # atol: an update that should be exactly 0 (Pareto-stationary low-rank tasks) comes out
        # at float64 rounding of the gradients, not of itself.
        np.testing.assert_allclose(out / scale ** power, reference, rtol=1e-6,
                                   atol=1e-11 * np.abs(m).max(), err_msg=f"scale {scale}")


NO_CONFLICT = ["mgda", "upgrad", "dualproj"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", [2, 3, 8, 32, 64])
@pytest.mark.parametrize("name", NO_CONFLICT)
def test_mgda_upgrad_and_dualproj_never_conflict_with_a_task(name, num_tasks, kind):
    for scale in (1e-8, 1.0, 1e8):
        m = scale * matrix(kind, num_tasks)
        assert_no_conflict(m, aggregate(name, m))


@pytest.mark.parametrize("name", NO_CONFLICT)
def test_mgda_upgrad_and_dualproj_float32_no_conflict_tolerance(name):
    # Training hands float32 gradients: the guarantee holds to float32 rounding of the Gramian
    # and of the combination d = Σ w_i g_i, which at K = 64 tasks in 128 dimensions cancels to
    # 1e-5 of the gradients (a nearly Pareto-stationary point): ⟨g_i, d⟩ ≥ −1e-4 ‖g_i‖‖d‖ −
    # 1e-5 ‖g_i‖ max ‖g_j‖.
    for num_tasks in (3, 8, 64):
        for kind in KINDS:
            m = matrix(kind, num_tasks)
            d = np.asarray(balancers.get(name).aggregate(m.astype(np.float32)), np.float64)
            assert_no_conflict(m, d, relative=1e-4, rounding=1e-5)


GRAMIAN_METHODS = sorted(SCALE_POWER) + ["pcgrad", "gradvac", "mgda_ub"]


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
@pytest.mark.parametrize("num_tasks", [3, 16, 64])
def test_a_zero_task_gradient_never_zeroes_or_nans_the_update(name, num_tasks):
    m = matrix("full", num_tasks)
    with_zero = m.copy()
    with_zero[1] = 0.0
    hparams = {"level": "representation"} if name == "mgda_ub" else {}
    d = aggregate(name, with_zero, **hparams)
    assert np.all(np.isfinite(d)) and np.linalg.norm(d) > 0
    if name in ("mgda", "mgda_ub", "imtl_g", "config", "nash_mtl", "fairgrad", "cagrad"):
        # The zero task is left out: the same direction as without it.
        without = aggregate(name, np.delete(m, 1, axis=0), **hparams)
        np.testing.assert_allclose(d / np.linalg.norm(d), without / np.linalg.norm(without),
                                   atol=1e-6)


# --- the cases that were wrong ------------------------------------------------------------------

def test_mgda_is_right_at_large_and_small_scales():
    base = np.array([[1.0, 0.0], [-0.5, 1.0]])
    for scale in (1e-8, 1e-4, 1e4, 1e7, 1e8):
        np.testing.assert_allclose(aggregate("mgda", scale * base) / scale,
                                   [4 / 13, 6 / 13], rtol=1e-9)


def test_nash_mtl_and_fairgrad_with_a_badly_scaled_task():
    m = np.array([[1.0, 0.0], [0.0, 1e-4]])
    np.testing.assert_allclose(aggregate("nash_mtl", m, max_norm=0.0), [1.0, 1.0], rtol=1e-9)
    np.testing.assert_allclose(aggregate("fairgrad", m), [1.0, 1.0], rtol=1e-9)


def test_config_with_more_tasks_than_directions():
    m = np.array([[1, 0.2], [0.3, 1], [-0.2, 1], [1, -0.1]])
    expected_direction = np.linalg.lstsq(m / np.linalg.norm(m, axis=1, keepdims=True),
                                         np.ones(4), rcond=None)[0]
    unit = expected_direction / np.linalg.norm(expected_direction)
    np.testing.assert_allclose(aggregate("config", m), (m @ unit).sum() * unit, rtol=1e-9)
    np.testing.assert_allclose(aggregate("config", m), [2.0338, 2.1622], atol=1e-4)


def test_imtl_g_with_a_zero_task():
    m = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0]])
    np.testing.assert_allclose(aggregate("imtl_g", m), [2 / 3, 2 / 3, 0], rtol=1e-9)


def test_upgrad_and_dualproj_on_mixed_scales_have_no_conflict_without_torchjd_ridge():
    m = np.array([[1e3, 0, 0.0], [1.0, 1e-3, 0.0], [-1e-3, 1e-3, 1e-3]])
    for name in ("upgrad", "dualproj"):
        assert cosines(m, aggregate(name, m)).min() >= -1e-9, name
        # TorchJD's ridge (reg_eps=1e-4) is what made the result conflict.
        ridged = aggregate(name, m, reg_eps=1e-4, norm_eps=1e-4)
        assert cosines(m, ridged).min() < -1e-3, name


def test_aligned_mtl_rank_is_robust_for_opposite_tasks():
    rng = np.random.default_rng(3)
    for _ in range(10):
        g = rng.normal(size=8)
        m = np.stack([g, -g, rng.normal(size=8)]).astype(np.float32)
        d = np.asarray(balancers.get("aligned_mtl").aggregate(m), np.float64)
        # Rank 2: the two kept directions get equal weight; the opposite pair cancels.
        np.testing.assert_allclose(m[0] @ d, -(m[1] @ d), rtol=1e-4, atol=1e-5)
