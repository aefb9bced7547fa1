"""CoGrad's exact curvature term: the closed form on quadratics, and finite differences."""

import numpy as np
import tensorflow as tf

from keras_mtl.gradients.hessian import transference_hessian_term

RNG = np.random.default_rng(0)
DIM, TASKS = 4, 3


def quadratic_problem():
    """L_i(θ) = ½ θᵀ A_i θ + b_iᵀ θ: g_i = A_i θ + b_i, H_i = A_i."""
    a = []
    for _ in range(TASKS):
        m = RNG.normal(size=(DIM, DIM))
        a.append(m @ m.T + 0.5 * np.eye(DIM))
    return np.stack(a), RNG.normal(size=(TASKS, DIM)), RNG.normal(size=DIM)


def test_exact_hessian_term_matches_the_closed_form_and_finite_differences():
    a, b, theta0 = quadratic_problem()
    theta = tf.Variable(theta0)
    a_t, b_t = tf.constant(a), tf.constant(b)

    def losses():
        return 0.5 * tf.einsum("i,kij,j->k", theta, a_t, theta) + tf.linalg.matvec(b_t, theta)

    term = np.asarray(transference_hessian_term(losses, [theta]))
    g = a @ theta0 + b
    s = g.sum(0)
    np.testing.assert_allclose(term, sum(a[i] @ (s - g[i]) for i in range(TASKS)), rtol=1e-10)

    # ∇ Σ_{i≠j} T_{j→i} by central differences, with T_{j→i}(θ) = L_i(θ) − L_i(θ − η g_j(θ)).
    eta = 1e-4

    def loss(i, th):
        return 0.5 * th @ a[i] @ th + b[i] @ th

    def transference(th):
        grads = a @ th + b
        return sum(loss(i, th) - loss(i, th - eta * grads[j])
                   for i in range(TASKS) for j in range(TASKS) if i != j)

    h = 1e-5
    numeric = np.array([(transference(theta0 + h * e) - transference(theta0 - h * e)) / (2 * h)
                        for e in np.eye(DIM)])
    np.testing.assert_allclose(numeric, 2 * eta * term, rtol=1e-3)
