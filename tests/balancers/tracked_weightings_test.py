"""MoCo and ExcessMTL: several steps against float64 NumPy simulations of their algorithms."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.balancers.linalg import project_to_simplex


def simplex_projection_reference(v):
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u)
    rho = np.nonzero(u - (cumulative - 1) / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - (cumulative[rho] - 1) / (rho + 1), 0.0)


def run_steps(balancer, matrices, losses):
    """Balances each matrix in turn, assigning the state updates as the model does."""
    outputs = []
    for m, loss in zip(matrices, losses, strict=True):
        result = balancer.balance(tf.constant(m, tf.float32), tf.constant(loss, tf.float32),
                                  BalanceContext.default())
        for variable, value in result.updates:
            variable.assign(value)
        outputs.append((np.asarray(result.combined, np.float64),
                        np.asarray(result.weights_for_shared, np.float64)))
    return outputs


@pytest.mark.parametrize("num_tasks", [1, 2, 5, 64])
def test_simplex_projection(num_tasks):
    rng = np.random.default_rng(num_tasks)
    for scale in (1e-3, 1.0, 1e3):
        v = rng.normal(size=num_tasks) * scale
        np.testing.assert_allclose(project_to_simplex(tf.constant(v)),
                                   simplex_projection_reference(v), rtol=1e-12, atol=1e-15)
    w = np.full(num_tasks, 1.0 / num_tasks)
    np.testing.assert_allclose(project_to_simplex(tf.constant(w)), w, rtol=1e-12)


def moco_reference(matrices, losses, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5,
                   rho=0.0, normalize=False):
    k, d = matrices[0].shape
    y, lam, out = np.zeros((k, d)), np.full(k, 1.0 / k), []
    for t, (g, loss) in enumerate(zip(matrices, losses, strict=True), start=1):
        if normalize:
            g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * loss[:, None]
        y = y - beta / t ** beta_sigma * (y - g)
        lam = simplex_projection_reference(
            lam - gamma / t ** gamma_sigma * (y @ y.T + rho * np.eye(k)) @ lam)
        out.append(lam @ y)
    return out


@pytest.mark.parametrize("hparams", [{}, {"beta": 0.9, "gamma": 0.5, "rho": 0.1},
                                     {"normalize": True, "beta_sigma": 0.0, "gamma": 2.0}])
@pytest.mark.parametrize("num_tasks", [2, 4, 64])
def test_moco_follows_its_algorithm_over_steps(num_tasks, hparams):
    rng = np.random.default_rng(num_tasks)
    width = 9
    base = rng.normal(size=(num_tasks, width))
    matrices = [base + 0.3 * rng.normal(size=base.shape) for _ in range(6)]
    losses = [rng.uniform(0.1, 2.0, size=num_tasks) for _ in range(6)]
    balancer = balancers.get("moco", **hparams)
    balancer.build(num_tasks, num_columns=width)
    outputs = run_steps(balancer, matrices, losses)
    for (d, _), expected in zip(outputs, moco_reference(matrices, losses, **hparams),
                                strict=True):
        np.testing.assert_allclose(d, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())


def test_moco_refuses_the_representation_level_and_needs_the_width():
    with pytest.raises(ValueError, match=r"runs at level\(s\) \('parameters',\)"):
        balancers.get("moco", level="representation")
    with pytest.raises(ValueError, match="moco tracks every task's parameter gradient"):
        balancers.get("moco").build(3)


def excess_mtl_reference(matrices, step_size=0.01, epsilon=1e-7):
    k, d = matrices[0].shape
    squares, initial, alpha, out = np.zeros((k, d)), np.zeros(k), np.full(k, 1.0 / k), []
    for g in matrices:
        squares = squares + g ** 2
        excess = (g ** 2 / np.sqrt(squares + epsilon)).sum(1)
        initial = np.where(initial > 0, initial, excess)
        ratio = np.where(initial > 0, excess / np.where(initial > 0, initial, 1.0), 0.0)
        alpha = alpha * np.exp(step_size * ratio)
        alpha = alpha / alpha.sum()
        out.append((alpha @ g, alpha.copy()))
    return out


@pytest.mark.parametrize("step_size", [0.01, 1.0])
@pytest.mark.parametrize("num_tasks", [2, 3, 64])
def test_excess_mtl_follows_its_algorithm_over_steps(num_tasks, step_size):
    rng = np.random.default_rng(num_tasks)
    width = 10
    scales = rng.uniform(0.1, 10, size=(num_tasks, 1))
    # Task gradients that shrink at different rates: the slow ones gain weight.
    rates = np.linspace(0.5, 1.0, num_tasks)[:, None]
    base = scales * rng.normal(size=(num_tasks, width))
    matrices = [rates ** t * base for t in range(8)]
    matrices[0][0] = 0.0  # task 0 has no labelled rows on the first step
    balancer = balancers.get("excess_mtl", step_size=step_size)
    balancer.build(num_tasks, num_columns=width)
    outputs = run_steps(balancer, matrices, [np.ones(num_tasks)] * 8)
    reference = excess_mtl_reference(matrices, step_size)
    for (d, w), (expected_d, expected_w) in zip(outputs, reference, strict=True):
        np.testing.assert_allclose(w, expected_w, rtol=1e-5)
        np.testing.assert_allclose(d, expected_d, rtol=1e-4, atol=1e-5 * np.abs(expected_d).max())
    assert abs(reference[-1][1].sum() - 1) < 1e-12
    if step_size == 1.0:
        # Task k's gradient shrinks as rates[k]^t: the slowest (the last) ends with most weight.
        assert np.argmax(reference[-1][1]) == num_tasks - 1
    # With every task present on the first step, its weights stay uniform (official code).
    balancer = balancers.get("excess_mtl", step_size=step_size)
    balancer.build(num_tasks, num_columns=width)
    first = run_steps(balancer, [base], [np.ones(num_tasks)])[0][1]
    np.testing.assert_allclose(first, np.full(num_tasks, 1.0 / num_tasks), rtol=1e-6)
