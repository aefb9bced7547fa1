"""Per-group aggregation: each group of shared tensors balanced by its own copy of a balancer."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers import BalanceContext
from keras_mtl.gradients import GradientLayout
from tests.balancers.property_test import data, model

RNG = np.random.default_rng(5)


def grouped(name, groups, sizes, **hparams):
    balancer = balancers.get(name, groups=groups, **hparams)
    balancer.bind_segments(sizes=sizes)
    balancer.build(3, num_segments=len(sizes), num_columns=sum(sizes))
    return balancer


def balance(balancer, m, sizes):
    context = BalanceContext.default()._replace(layout=GradientLayout(segment_sizes=tuple(sizes)))
    return balancer.balance(tf.constant(m, tf.float32), tf.ones([3]), context)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "krum", "trimmed_mean", "pe_ltr", "sdmgrad"])
def test_each_group_gets_the_balancer_of_its_own_columns(name):
    sizes = [3, 2, 4, 1]
    m = RNG.normal(size=(3, sum(sizes)))
    edges = np.cumsum([0, *sizes])
    blocks = [m[:, edges[i]:edges[i + 1]] for i in range(4)]
    balancer = grouped(name, [[0, 2], [3]], sizes)  # segment 1 is left over: its own group
    out = np.asarray(balance(balancer, m, sizes).combined)
    expected = [None] * 4
    for group in ([0, 2], [3], [1]):
        part = np.asarray(balancers.get(name, level="parameters").aggregate(
            np.concatenate([blocks[i] for i in group], axis=1).astype(np.float32)))
        splits = np.split(part, np.cumsum([sizes[i] for i in group])[:-1])
        for i, piece in zip(group, splits, strict=True):
            expected[i] = piece
    np.testing.assert_allclose(out, np.concatenate(expected), rtol=1e-5, atol=1e-6)


def test_groups_are_validated():
    with pytest.raises(ValueError, match=r"tensor 1 is in groups 0 and 1"):
        grouped("mgda", [[0, 1], [1]], [2, 2])
    with pytest.raises(ValueError, match=r"segment index 5 is out of range for 2"):
        grouped("mgda", [[5]], [2, 2])
    with pytest.raises(ValueError, match=r"group 'tower' matches no balanced tensor"):
        balancer = balancers.get("mgda", groups=["tower"])
        balancer.bind_segments(paths=["encoder/a", "mmoe/b"], sizes=[2, 2])
        balancer.build(3, num_segments=2, num_columns=4)
    with pytest.raises(ValueError, match=r"runs at level 'losses'"):
        balancers.get("uw", groups=[[0]], level="losses")
    with pytest.raises(ValueError, match=r"'gradnorm' runs at level 'representation'"):
        balancers.get("gradnorm", groups=[[0]], level="representation")
    with pytest.raises(ValueError, match=r"runs at level\(s\) \('representation',\)"):
        balancers.get("mgda_ub", groups=[[0]])


@pytest.mark.parametrize("name", ["mgda", "moco"])
def test_trains_by_path_pattern_under_xla_and_round_trips(name, tmp_path):
    x, y = data()
    m = model()
    # Kernels in one group, the biases (left over) in another.
    m.compile(optimizer="adam", jit_compile=True, balancer=balancers.get(name, groups=["kernel"]))
    paths = [v.path for v in m.partition.balanced]
    assert m.balancer.index_groups == [[i for i, p in enumerate(paths) if "kernel" in p],
                                       [i for i, p in enumerate(paths) if "kernel" not in p]]
    history = m.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert history.history["skipped_steps"] == [0.0, 0.0]
    assert len(m.balancer.copies) == 2
    path = os.path.join(tmp_path, "m.keras")
    m.save(path)
    restored = keras.models.load_model(path)
    assert restored.balancer.get_config() == m.balancer.get_config()
    assert len(restored.balancer.weights) == len(m.balancer.weights)
    for a, b in zip(m.balancer.weights, restored.balancer.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))
