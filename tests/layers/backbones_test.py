"""Backbones against NumPy references of the papers' equations, plus structure and saving."""

import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import run_layer_saving_test


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def np_bank(bank, x):
    h = None
    for i, (kernel, bias) in enumerate(zip(bank.kernels, bank.biases, strict=True)):
        k, b = np.asarray(kernel), np.asarray(bias)
        h = np.einsum("bi,eio->beo", x, k) if i == 0 else np.einsum("bei,eio->beo", h, k)
        h = np.maximum(h + b, 0.0)
    return h


def np_gate(gate, selector, experts):
    kernel, bias = (np.asarray(v) for v in gate.dense.weights)
    weights = softmax(selector @ kernel + bias)
    return np.einsum("be,bed->bd", weights, experts), weights


def np_ple(layer, x):
    """PLE eqs. 2-7 written out level by level."""
    task_in, shared_in = [x] * layer.num_tasks, x
    for j in range(layer.num_levels):
        shared = np_bank(layer.shared_banks[j], shared_in)
        task_experts = [np_bank(layer.task_banks[j][k], task_in[k]) for k in range(layer.num_tasks)]
        outputs = [
            np_gate(layer.task_gates[j][k], task_in[k],
                    np.concatenate([task_experts[k], shared], 1))[0]
            for k in range(layer.num_tasks)
        ]
        if j < layer.num_levels - 1:
            shared_in = np_gate(layer.shared_gates[j], shared_in,
                                np.concatenate([*task_experts, shared], 1))[0]
        task_in = outputs
    return task_in


def randomise_biases(layer):
    rng = np.random.default_rng(7)
    for v in layer.weights:
        if "bias" in v.path:
            v.assign(rng.normal(scale=0.5, size=v.shape))


X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


def test_mmoe_matches_equations_6_to_8():
    layer = km.layers.MMoE(num_experts=3, expert_units=[4], num_tasks=2)
    layer(X)
    randomise_biases(layer)
    experts = np_bank(layer.experts, X)
    outputs = layer(X)
    for k in range(2):
        np.testing.assert_allclose(outputs[k], np_gate(layer.gates[k], X, experts)[0], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("num_levels", [1, 2, 3])
def test_ple_matches_equations_2_to_7(num_levels):
    layer = km.layers.PLE(num_levels=num_levels, shared_experts=2, task_experts=2,
                          expert_units=[4, 3], num_tasks=3)
    layer(X)
    randomise_biases(layer)
    outputs = layer(X)
    for ours, reference in zip(outputs, np_ple(layer, X), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_cgc_is_single_level_ple():
    layer = km.layers.CGC(shared_experts=2, task_experts=1, expert_units=[4], num_tasks=2)
    assert layer.num_levels == 1 and "num_levels" not in layer.get_config()
    outputs = layer(X)
    for ours, reference in zip(outputs, np_ple(layer, X), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_shared_bottom_gives_every_task_the_bottom_output():
    layer = km.layers.SharedBottom(units=[4, 3], num_tasks=3)
    outputs = layer(X)
    assert len(outputs) == 3
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])


@pytest.mark.parametrize(
    "layer, expected_cut_len",
    [
        (km.layers.SharedBottom([4], num_tasks=2), 1),
        (km.layers.MMoE(3, [4], num_tasks=2), 2),
        (km.layers.CGC(2, 1, [4], num_tasks=2), 2),
        (km.layers.PLE(2, 2, 1, [4], num_tasks=2), 3),
        (km.layers.OMoE(3, [4], num_tasks=2), 1),
        (km.layers.MMoE(3, [4], num_tasks=2, gate="dselect"), 2),
        (km.layers.HoME([[0, 2], [1]], 2, 1, 1, [4], num_tasks=3), 1 + 2 + 2),
    ],
)
def test_cut_shapes_and_heads_reproduce_call(layer, expected_cut_len):
    outputs = layer(X)
    cut = layer.trunk(X)
    assert len(cut) == expected_cut_len
    for ours, direct in zip(layer.heads(cut)[0], outputs, strict=True):
        np.testing.assert_allclose(ours, direct, rtol=1e-6)


def test_gate_weights_are_distributions_with_named_gates():
    layer = km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=[4],
                          num_tasks=2)
    gates = layer.gate_weights(X)
    assert set(gates) == {"level_0/task_0", "level_0/task_1", "level_0/shared",
                          "level_1/task_0", "level_1/task_1"}
    assert gates["level_0/shared"].shape == (5, 2 * 1 + 2)  # all experts of the level
    assert gates["level_1/task_0"].shape == (5, 1 + 2)
    for weights in gates.values():
        np.testing.assert_allclose(np.sum(weights, -1), 1.0, rtol=1e-5)


def test_head_layers_are_disjoint_per_task():
    layer = km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=[4],
                          num_tasks=3)
    layer(X)
    ids = [{id(v) for lyr in heads for v in lyr.weights} for heads in layer.head_layers()]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids[a] & ids[b]


@pytest.mark.parametrize(
    "make",
    [
        lambda: km.layers.SharedBottom([4], num_tasks=2),
        lambda: km.layers.MMoE(3, [4], num_tasks=2),
        lambda: km.layers.CGC(2, 1, [4], num_tasks=2),
        lambda: km.layers.PLE(2, 2, 1, [4], num_tasks=2),
    ],
)
def test_backbones_round_trip_through_keras_file(make, tmp_path):
    run_layer_saving_test(make(), (6,), tmp_path)


def test_invalid_configurations_are_rejected_clearly():
    with pytest.raises(ValueError, match="num_levels"):
        km.layers.PLE(num_levels=0)
    with pytest.raises(ValueError, match="task_experts"):
        km.layers.PLE(task_experts=0)
    layer = km.layers.MMoE(num_tasks=2)
    with pytest.raises(ValueError, match="configured for 2 tasks"):
        layer.set_num_tasks(3)


@pytest.mark.parametrize(
    "layer, factored_cut",
    [
        (km.layers.SharedBottom([4], num_tasks=2), set()),
        (km.layers.MMoE(3, [4], num_tasks=3), {0}),
        (km.layers.CGC(2, 1, [4], num_tasks=2), {0}),
        (km.layers.PLE(3, 2, 1, [4], num_tasks=3), {0}),
        (km.layers.OMoE(3, [4], num_tasks=2), set()),
        (km.layers.MMoE(3, [4], num_tasks=2, gate="dselect"), {0}),
        (km.layers.CGC(2, 2, [4], num_tasks=2, gate={"type": "dselect", "top_k": 1}), {0}),
        # HoME: S² (cut 0) and each group's G² (cuts 1, 2) are read through the task gates.
        (km.layers.HoME([[0, 2], [1]], 2, 2, 1, [4], num_tasks=3), {0, 1, 2}),
    ],
)
def test_factored_heads_give_the_heads_outputs_and_exact_cut_gradients(layer, factored_cut):
    import tensorflow as tf

    layer(X)
    randomise_biases(layer)
    cut = [tf.constant(c) for c in layer.trunk(X)]
    outputs, _ = layer.heads(cut)
    rng = np.random.default_rng(1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(cut)
        factored_outputs, _, readouts = layer.factored_heads(cut)
        directions = [rng.normal(size=o.shape).astype(np.float32) for o in factored_outputs]
        losses = [tf.reduce_sum(o * d) for o, d in zip(factored_outputs, directions, strict=True)]
    assert {r.cut_index for task in readouts for r in task} == factored_cut
    for k, (ours, direct) in enumerate(zip(factored_outputs, outputs, strict=True)):
        np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6)
        with tf.GradientTape() as reference_tape:
            reference_tape.watch(cut)
            reference_loss = tf.reduce_sum(layer.heads(cut)[0][k] * directions[k])
        expected = reference_tape.gradient(reference_loss, cut)
        got = tape.gradient(losses[k], [*cut, *(r.term for r in readouts[k])])
        grads = [None if g is None else g.numpy() for g in got[:len(cut)]]
        for readout, term_grad in zip(readouts[k], got[len(cut):], strict=True):
            # ∂L_k/∂cut[s] = w ⊗ ∂L_k/∂term, row by row (the readout's promise).
            outer = readout.weights.numpy()[:, :, None] * term_grad.numpy()[:, None, :]
            s = readout.cut_index
            grads[s] = outer if grads[s] is None else grads[s] + outer
        for s, (g, e) in enumerate(zip(grads, expected, strict=True)):
            e = np.zeros(cut[s].shape) if e is None else e.numpy()
            g = np.zeros(cut[s].shape) if g is None else g
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=f"task {k}, cut {s}")


def test_omoe_mixes_the_experts_with_one_gate_for_every_task():
    layer = km.layers.OMoE(num_experts=3, expert_units=[4], num_tasks=3)
    layer(X)
    randomise_biases(layer)
    mixture, weights = np_gate(layer.shared_gate, X, np_bank(layer.experts, X))
    outputs = layer(X)
    assert len(outputs) == 3
    for out in outputs:  # MMoE eq. 5: y_k = h^k(Σ_i g(x)_i f_i(x)), one g for all tasks
        np.testing.assert_allclose(out, mixture, rtol=1e-5, atol=1e-6)
    gates = layer.gate_weights(X)
    assert set(gates) == {"shared"}
    np.testing.assert_allclose(gates["shared"], weights, rtol=1e-5, atol=1e-6)
    # The shared gate is in the trunk: the cut is the mixture, and no head holds a variable.
    assert len(layer.trunk(X)) == 1 and layer.head_layers() == [[], [], []]


def test_omoe_round_trips_through_keras_file(tmp_path):
    run_layer_saving_test(km.layers.OMoE(3, [4], num_tasks=2, gate="dselect"), (6,), tmp_path)
