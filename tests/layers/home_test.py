"""HoME (Wang et al., arXiv 2408.05430) against a NumPy reference of its equations."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import run_layer_saving_test

X = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
GROUPS = [[0, 2], [1]]


def swish(h):
    return h / (1 + np.exp(-h))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_bank(bank, v, training):
    """Each expert e: x_e = v ⊙ 2σ(v A_e B_e); per layer Swish(BN(W h + b))."""
    low = np.einsum("bi,eir->ber", v, np.asarray(bank.gate_down))
    gate = 2 / (1 + np.exp(-np.einsum("ber,eri->bei", low, np.asarray(bank.gate_up))))
    h = v[:, None, :] * gate
    assert not bank.biases  # BN's β is the bias
    for kernel, norm in zip(bank.kernels, bank.norms, strict=True):
        h = np.einsum("bei,eio->beo", h, np.asarray(kernel))
        if training:  # per (expert, unit) over the batch
            mean, var = h.mean(0), h.var(0)
        else:
            mean = np.asarray(norm.moving_mean).reshape(h.shape[1:])
            var = np.asarray(norm.moving_variance).reshape(h.shape[1:])
        gamma = np.asarray(norm.gamma).reshape(h.shape[1:])
        beta = np.asarray(norm.beta).reshape(h.shape[1:])
        h = swish(gamma * (h - mean) / np.sqrt(var + 1e-3) + beta)
    return h


def np_dense(layer, v):
    kernel, bias = (np.asarray(w) for w in layer.weights)
    return v @ kernel + bias


def np_mix(logits, experts, self_gate=False):
    if self_gate and logits.shape[-1] == 1:
        weights = 1 / (1 + np.exp(-logits))
    else:
        weights = softmax(logits)
    return np.einsum("be,bed->bd", weights, experts)


def np_home(layer, x, training):
    """§3: level-1 meta representations per group and shared, level-2 task outputs."""
    shared = np_bank(layer.shared_1, x, training)
    groups = [np_bank(b, x, training) for b in layer.group_1]
    metas = [np_mix(np_dense(layer.group_gates_1[g].dense, x),
                    np.concatenate([groups[g], shared], 1))
             + np_mix(np_dense(layer.group_self_1[g], x), groups[g], self_gate=True)
             for g in range(len(groups))]
    meta_shared = (np_mix(np_dense(layer.shared_gate_1.dense, x),
                          np.concatenate([*groups, shared], 1))
                   + np_mix(np_dense(layer.shared_self_1, x), shared, self_gate=True))
    shared_2 = np_bank(layer.shared_2, meta_shared, training)
    outputs = []
    for k in range(layer.num_tasks):
        g = layer.group_of[k]
        group_2 = np_bank(layer.group_2[g], metas[g], training)
        own = np_bank(layer.task_banks[k], metas[g], training)
        outputs.append(np_mix(np_dense(layer.task_gates[k].dense, metas[g]),
                              np.concatenate([own, group_2, shared_2], 1))
                       + np_mix(np_dense(layer.task_self_gates[k], metas[g]), own,
                                self_gate=True))
    return outputs


def make_home(**kwargs):
    options = dict(task_groups=GROUPS, shared_experts=2, group_experts=1, task_experts=2,
                   expert_units=[4, 3], feature_gate_rank=2, num_tasks=3)
    layer = km.layers.HoME(**{**options, **kwargs})
    layer(X)
    rng = np.random.default_rng(5)
    for v in layer.weights:  # feature gates away from 1, non-trivial norms and biases
        if any(s in v.path for s in ("feature_gate_up", "bias", "gamma", "beta")):
            v.assign(rng.normal(scale=0.5, size=v.shape))
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, size=v.shape))
        if "moving_mean" in v.path:
            v.assign(rng.normal(scale=0.3, size=v.shape))
    return layer


@pytest.mark.parametrize("training", [False, True])
def test_home_matches_the_papers_equations(training):
    layer = make_home()
    outputs = layer.heads(layer.trunk(X, training=training), training=training)[0]
    for ours, reference in zip(outputs, np_home(layer, X, training), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


def test_feature_gates_start_open_and_experts_are_normalised():
    gated = km.layers.ExpertBank(3, [4], "swish", normalization=True, feature_gate_rank=2)
    plain = km.layers.ExpertBank(3, [4], "swish", normalization=True)
    gated.build((None, 5))
    plain.build((None, 5))
    plain.kernels[0].assign(gated.kernels[0])
    np.testing.assert_allclose(gated.feature_gates(X), 1.0)  # 2σ(0) with B = 0
    np.testing.assert_allclose(gated(X, training=True), plain(X, training=True), atol=1e-6)
    # BN before Swish: pre-activations have mean 0, variance 1 per expert and unit.
    pre = np.einsum("bi,eio->beo", X, np.asarray(plain.kernels[0]))
    normalised = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-3)
    np.testing.assert_allclose(plain(X, training=True), swish(normalised), atol=1e-5)


def test_hierarchy_mask_keeps_other_groups_experts_out_of_a_task():
    layer = make_home()
    with tf.GradientTape(persistent=True) as tape:
        outputs = layer(X)
    # Task 1 (group 1) never reads group 0's level-2 experts; tasks 0, 2 never read group 1's.
    for k, other in ((1, 0), (0, 1), (2, 1)):
        grads = tape.gradient(outputs[k], layer.group_2[other].trainable_variables)
        assert all(g is None for g in grads), (k, other)
        assert all(g is not None for g in tape.gradient(
            outputs[k], layer.group_2[layer.group_of[k]].trainable_variables))
    # Level 1 is shared: every task reaches every level-1 expert (through m_s).
    for k in range(3):
        assert all(g is not None for g in tape.gradient(outputs[k],
                                                        layer.group_1[0].trainable_variables))


def test_gate_weights_name_every_gate_and_are_distributions():
    layer = make_home()
    gates = layer.gate_weights(X)
    assert set(gates) == {"level_0/group_0", "level_0/group_1", "level_0/shared",
                          "level_0/self/group_0", "level_0/self/group_1", "level_0/self/shared",
                          *(f"level_1/task_{k}" for k in range(3)),
                          *(f"level_1/self/task_{k}" for k in range(3))}
    assert gates["level_0/shared"].shape == (6, 2 * 1 + 2)
    assert gates["level_1/task_0"].shape == (6, 2 + 1 + 2)
    for key, weights in gates.items():
        if "self" not in key or weights.shape[-1] > 1:  # a single own expert: sigmoid gate
            np.testing.assert_allclose(np.sum(weights, -1), 1.0, rtol=1e-5, err_msg=key)


def test_invalid_groups_are_rejected():
    with pytest.raises(ValueError, match="cover tasks 0..2 once"):
        km.layers.HoME(task_groups=[[0], [1]], num_tasks=3)
    with pytest.raises(ValueError, match="cover tasks 0..1 once"):
        km.layers.HoME(task_groups=[[0, 1], [1]], num_tasks=2)
    with pytest.raises(ValueError, match="task_experts=0"):
        km.layers.HoME(task_experts=0)


def test_home_round_trips_through_keras_file(tmp_path):
    run_layer_saving_test(make_home(), (5,), tmp_path)
