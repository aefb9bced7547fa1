import numpy as np
import pytest

from keras_mtl.datasets import make_synthetic
from keras_mtl.datasets.synthetic import task_weight_vectors


def cosine(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.5, 0.9, 1.0])
def test_two_task_weights_have_cosine_p_and_norm_c(p):
    w = task_weight_vectors(p, dim=20, scale=2.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(cosine(*w), p, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 2.0)


def test_many_tasks_share_pairwise_cosine():
    w = task_weight_vectors(0.3, dim=10, scale=1.0, rng=np.random.default_rng(1), num_tasks=4)
    for i in range(4):
        for j in range(i + 1, 4):
            np.testing.assert_allclose(cosine(w[i], w[j]), 0.3, atol=1e-12)


def test_labels_follow_the_generating_equation():
    alpha, beta = np.array([0.5, -1.0]), np.array([0.1, 2.0])
    data = make_synthetic(num_examples=50, correlation=0.5, dim=5, num_sines=2, alpha=alpha,
                          beta=beta, noise_std=0.0, seed=3, fractions=(1.0, 0.0, 0.0))
    w = task_weight_vectors(0.5, 5, 1.0, np.random.default_rng(3))
    # Recompute from the frame's own x to stay independent of the row order of the split.
    x = data.train[[f"x{i}" for i in range(5)]].to_numpy(np.float64)
    proj = x @ w.T
    expected = proj + np.sin(proj[..., None] * alpha + beta).sum(-1)
    np.testing.assert_allclose(data.train[["y1", "y2"]].to_numpy(), expected, rtol=1e-5,
                               atol=1e-5)


def test_label_correlation_grows_with_p_and_seed_reproduces():
    corr = {}
    for p in (0.1, 0.9):
        frame = make_synthetic(num_examples=4000, correlation=p, seed=0).train
        corr[p] = np.corrcoef(frame["y1"], frame["y2"])[0, 1]
    assert corr[0.9] > corr[0.1] + 0.3
    a = make_synthetic(num_examples=100, seed=5)
    b = make_synthetic(num_examples=100, seed=5)
    assert a.train.equals(b.train)
    assert len(a.train) == 80 and len(a.validation) == 10 and len(a.test) == 10


def test_head_keeps_a_proportional_random_subset():
    data = make_synthetic(num_examples=1000, dim=4)
    small = data.head(100)
    assert len(small.train) == 100
    assert len(small.validation) == round(100 / 800 * 100) and len(small.test) == 12
    assert set(small.train["x0"]) <= set(data.train["x0"])
    assert small.features == data.features and small.tasks == data.tasks
    assert data.head(10_000).train is data.train
