"""PE-LTR and SDMGrad: float64 NumPy references of their simplex problems, and their KKT
conditions for K = 2 … 64 at scales 1e-8 … 1e8."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from tests.balancers.exactness_test import matrix

RNG = np.random.default_rng(19)


def weights_of(name, m, **hparams):
    """The shared weights the balancer gives the float64 matrix `m`."""
    balancer = balancers.get(name, **hparams)
    balancer.build(m.shape[0], num_columns=m.shape[1])
    gram = tf.constant(m @ m.T, tf.float64)
    return np.asarray(balancer.weights_from_gramian(gram, None)[0])


def bounded_simplex_reference(q, b, low):
    """`argmin ½ wᵀQw + bᵀw` over `Σw = 1, w ≥ low`, by enumerating which bounds are free
    (small K only): every face's stationary point, the feasible one of least objective."""
    k = len(b)
    best, best_value = None, np.inf
    for size in range(1, k + 1):
        for free in itertools.combinations(range(k), size):
            free = list(free)
            held = [i for i in range(k) if i not in free]
            w = low.astype(np.float64).copy()
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = q[np.ix_(free, free)]
            system[:size, size] = system[size, :size] = 1.0
            rhs = np.concatenate([-b[free] - q[np.ix_(free, held)] @ low[held],
                                  [1.0 - low[held].sum()]])
            solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
            w[free] = solution[:size]
            if np.any(w < low - 1e-12):
                continue
            value = 0.5 * w @ q @ w + b @ w
            if value < best_value - 1e-15:
                best, best_value = w, value
    return best


def assert_bounded_kkt(m, w, low, q_extra=None):
    """KKT of `min ½‖wᵀJ + e‖²` over `Σw = 1, w ≥ low` (e = `q_extra`, a fixed vector of the
    column space): `(J(Jᵀw + e))_i = μ` where `w_i > low_i`, `≥ μ` where held."""
    d = w @ m + (0.0 if q_extra is None else q_extra)
    grad = m @ d
    norms = np.linalg.norm(m, axis=1)
    tolerance = norms * (1e-9 * np.linalg.norm(d) + 1e-11 * norms.max())
    assert abs(w.sum() - 1.0) < 1e-12 and np.all(w >= low - 1e-15)
    free = w > low + 1e-9
    mu = grad[free].min()
    assert np.all(grad[free] - mu <= tolerance[free] + tolerance[free].max()), (grad, mu)
    assert np.all(grad >= mu - tolerance - tolerance.max()), (grad, mu)


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 6])
def test_pe_ltr_matches_an_enumerated_float64_reference(num_tasks):
    for seed in range(4):
        rng = np.random.default_rng(seed + 10 * num_tasks)
        m = rng.normal(size=(num_tasks, 9)) * rng.uniform(0.1, 10, size=(num_tasks, 1))
        low = rng.uniform(0, 0.9 / num_tasks, size=num_tasks)
        expected = bounded_simplex_reference(m @ m.T, np.zeros(num_tasks), low)
        w = weights_of("pe_ltr", m, lower_bounds=list(low))
        np.testing.assert_allclose(w, expected, rtol=1e-8, atol=1e-10)
        d = np.asarray(balancers.get("pe_ltr", lower_bounds=list(low)).aggregate(m))
        np.testing.assert_allclose(d, expected @ m, rtol=1e-8, atol=1e-10 * np.abs(m).max())


def test_pe_ltr_with_zero_bounds_is_mgda_and_a_binding_bound_holds():
    m = RNG.normal(size=(4, 7))
    np.testing.assert_allclose(weights_of("pe_ltr", m), weights_of("mgda", m), rtol=1e-10,
                               atol=1e-12)
    # Two tasks pulling apart, one of them much longer: MGDA gives the long one a small weight;
    # a bound of 0.4 lifts it to exactly 0.4.
    two = np.array([[10.0, 0.0], [-1.0, 1.0]])
    assert weights_of("mgda", two)[0] < 0.4
    np.testing.assert_allclose(weights_of("pe_ltr", two, lower_bounds=[0.4, 0.0]), [0.4, 0.6],
                               rtol=1e-12)


@pytest.mark.parametrize("kind", ["full", "low_rank", "spread", "opposite"])
@pytest.mark.parametrize("num_tasks", [8, 16, 32, 64])
def test_pe_ltr_meets_its_kkt_conditions(num_tasks, kind):
    rng = np.random.default_rng(num_tasks)
    low = rng.uniform(0, 0.5 / num_tasks, size=num_tasks)
    for scale in (1e-8, 1.0, 1e8):
        m = scale * matrix(kind, num_tasks)
        assert_bounded_kkt(m, weights_of("pe_ltr", m, lower_bounds=list(low)), low)


def test_pe_ltr_zero_task_keeps_its_bound():
    m = matrix("zero_task", 8)
    zero = int(np.flatnonzero(np.linalg.norm(m, axis=1) == 0)[0])
    w = weights_of("pe_ltr", m, lower_bounds=0.05)
    assert w[zero] == pytest.approx(0.05, abs=1e-15)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("hparams, num_tasks, message", [
    ({"lower_bounds": 0.25}, 4, r"pe_ltr lower_bounds must sum to less than 1 .* Σ lower_bounds "
                                r"= 1 for 4 tasks"),
    ({"lower_bounds": [0.5, 0.6]}, 2, r"Σ lower_bounds = 1.1 for 2 tasks"),
    ({"lower_bounds": [0.1, 0.1]}, 3, r"pe_ltr lower_bounds has 2 entries for 3 tasks"),
    ({"lower_bounds": [0.1, -0.1]}, 2, r"pe_ltr lower_bounds\[1\] must be >= 0.0"),
    ({"lower_bounds": 1.0}, 2, r"pe_ltr lower_bounds must lie in \[0.0, 1.0\)"),
])
def test_pe_ltr_bounds_are_validated(hparams, num_tasks, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("pe_ltr", **hparams).build(num_tasks)


def sdmgrad_reference(m, lamda):
    k = m.shape[0]
    gram = m @ m.T
    w = bounded_simplex_reference(gram, lamda * gram @ np.full(k, 1.0 / k), np.zeros(k))
    return (w @ m + lamda * m.mean(0)) / (1 + lamda)


@pytest.mark.parametrize("lamda", [0.0, 0.3, 1.0, 10.0])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_sdmgrad_matches_an_enumerated_float64_reference(num_tasks, lamda):
    for seed in range(3):
        rng = np.random.default_rng(seed + 7 * num_tasks)
        m = rng.normal(size=(num_tasks, 6)) * rng.uniform(0.1, 10, size=(num_tasks, 1))
        d = np.asarray(balancers.get("sdmgrad", lamda=lamda).aggregate(m))
        np.testing.assert_allclose(d, sdmgrad_reference(m, lamda), rtol=1e-8,
                                   atol=1e-10 * np.abs(m).max())


@pytest.mark.parametrize("kind", ["full", "low_rank", "spread", "opposite"])
@pytest.mark.parametrize("num_tasks", [8, 32, 64])
def test_sdmgrad_meets_its_kkt_conditions(num_tasks, kind):
    lamda = 0.3
    for scale in (1e-8, 1.0, 1e8):
        m = scale * matrix(kind, num_tasks)
        v = weights_of("sdmgrad", m, lamda=lamda)
        w = v * (1 + lamda) - lamda / num_tasks  # the simplex point w*
        w = np.maximum(w, 0.0) / np.maximum(w, 0.0).sum()
        assert_bounded_kkt(m, w, np.zeros(num_tasks), q_extra=lamda * m.mean(0))


def test_sdmgrad_limits():
    m = RNG.normal(size=(5, 8))
    np.testing.assert_allclose(balancers.get("sdmgrad", lamda=0.0).aggregate(m),
                               balancers.get("mgda").aggregate(m), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(balancers.get("sdmgrad", lamda=1e9).aggregate(m), m.mean(0),
                               rtol=1e-6, atol=1e-9)
