"""TorchJD's aggregators under their names: mean / sum / constant / random, Krum, trimmed mean.

Float64 NumPy references computed here from the definitions, on matrices drawn by the tests.
"""

import numpy as np
import pytest

from keras_mtl import balancers

RNG = np.random.default_rng(26)


def aggregate(name, m, **hparams):
    return np.asarray(balancers.get(name, **hparams).aggregate(np.asarray(m, np.float64)))


def krum_reference(m, f, selected):
    k = m.shape[0]
    d = ((m[:, None, :] - m[None, :, :]) ** 2).sum(-1)
    scores = np.array([np.sort(np.delete(d[i], i))[: k - f - 2].sum() for i in range(k)])
    chosen = np.argsort(scores, kind="stable")[:selected]
    return m[chosen].mean(0)


def trimmed_mean_reference(m, trim):
    ordered = np.sort(m, axis=0)
    return ordered[trim:m.shape[0] - trim].mean(0)


def test_the_torchjd_names_resolve_to_the_same_maths():
    assert balancers.aliases() == {"sum": "ew", "constant": "static", "random": "rlw"}
    assert type(balancers.get("sum")) is balancers.EqualWeighting
    assert type(balancers.get("Constant", weights=[1.0, 2.0])) is balancers.StaticWeighting
    assert type(balancers.get("random")) is balancers.RandomLossWeighting
    assert "sum" not in balancers.available() and "mean" in balancers.available()
    with pytest.raises(ValueError, match=r"and the aliases \['constant', 'random', 'sum'\]"):
        balancers.get("summ")


@pytest.mark.parametrize("num_tasks", [2, 5, 64])
def test_mean_sum_and_constant_on_matrices(num_tasks):
    m = RNG.normal(size=(num_tasks, 9)) * RNG.uniform(0.1, 10, size=(num_tasks, 1))
    np.testing.assert_allclose(aggregate("mean", m), m.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aggregate("sum", m), m.sum(0), rtol=1e-5, atol=1e-5)
    w = RNG.uniform(0, 2, size=num_tasks)
    np.testing.assert_allclose(aggregate("constant", m, weights=list(w)), w @ m, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("num_tasks, f, selected", [(3, 0, 1), (5, 1, 2), (8, 2, 3), (16, 0, 4),
                                                    (64, 10, 7), (64, 61, 1)])
def test_krum_matches_its_definition(num_tasks, f, selected):
    for seed in range(3):
        rng = np.random.default_rng(seed + num_tasks)
        m = rng.normal(size=(num_tasks, 11))
        m[: num_tasks // 4] += rng.normal(scale=5.0, size=(num_tasks // 4, 11))  # outliers
        np.testing.assert_allclose(aggregate("krum", m, n_byzantine=f, n_selected=selected),
                                   krum_reference(m, f, selected), rtol=1e-9, atol=1e-12)


def test_krum_leaves_out_an_outlier_and_never_selects_a_zero_task():
    m = np.array([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [50.0, -40.0]])
    np.testing.assert_allclose(aggregate("krum", m, n_byzantine=1), [1.0, 0.0])
    np.testing.assert_allclose(aggregate("krum", m, n_byzantine=1, n_selected=3), m[:3].mean(0))
    short = np.array([[0.0, 0.0], [1e-3, 0.0], [1.0, 1.0], [1.2, 0.8]])
    # By the definition alone the zero row (score 1e-6, tied with the short task, lower index)
    # would be selected and zero the update; it still counts as the short task's neighbour.
    np.testing.assert_allclose(krum_reference(short, 1, 1), [0.0, 0.0])
    np.testing.assert_allclose(aggregate("krum", short, n_byzantine=1), [1e-3, 0.0])


@pytest.mark.parametrize("num_tasks, trim", [(1, 0), (3, 1), (5, 2), (8, 3), (64, 0), (64, 20)])
def test_trimmed_mean_matches_its_definition(num_tasks, trim):
    m = RNG.normal(size=(num_tasks, 13)) * RNG.uniform(1e-3, 1e3, size=(num_tasks, 1))
    np.testing.assert_allclose(aggregate("trimmed_mean", m, trim=trim),
                               trimmed_mean_reference(m, trim), rtol=1e-12, atol=1e-15)


def test_trimmed_mean_ignores_one_corrupted_task_per_coordinate():
    m = np.array([[1.0, 2.0, 3.0], [1.1, 2.1, 1e9], [0.9, -1e9, 2.9]])
    np.testing.assert_allclose(aggregate("trimmed_mean", m), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name, hparams, num_tasks, message", [
    ("krum", {"n_byzantine": 1}, 3, r"krum needs at least n_byzantine \+ 3 = 4 tasks .* has 3"),
    ("krum", {"n_selected": 4}, 3, r"krum n_selected = 4 exceeds the 3 tasks"),
    ("krum", {"n_byzantine": -1}, 3, r"krum n_byzantine must lie in \[0.0, ∞\), got -1"),
    ("krum", {"n_selected": 1.5}, 3, r"krum n_byzantine and n_selected must be integers"),
    ("trimmed_mean", {"trim": 2}, 4, r"trimmed_mean with trim = 2 .* at least 5 tasks; .* has 4"),
    ("trimmed_mean", {"trim": -1}, 4, r"trimmed_mean trim must lie in \[0.0, ∞\)"),
])
def test_hyperparameters_are_checked_against_the_number_of_tasks(name, hparams, num_tasks,
                                                                  message):
    with pytest.raises(ValueError, match=message):
        balancers.get(name, **hparams).build(num_tasks)
