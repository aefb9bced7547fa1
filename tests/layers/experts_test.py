import math

import numpy as np
import tensorflow as tf

from keras_mtl.layers import ExpertBank, Gate
from tests.helpers import run_layer_saving_test


def loop_reference(bank: ExpertBank, x: np.ndarray) -> np.ndarray:
    """The unvectorised definition: each expert is its own stack of relu(x W + b) layers."""
    outputs = []
    for e in range(bank.num_experts):
        h = x
        for kernel, bias in zip(bank.kernels, bank.biases, strict=True):
            h = np.maximum(h @ np.asarray(kernel)[e] + np.asarray(bias)[e], 0.0)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def test_vectorised_bank_equals_a_loop_of_dense_experts():
    bank = ExpertBank(num_experts=5, units=[7, 3])
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    out = bank(x)
    # Non-zero biases so they are checked too.
    for bias in bank.biases:
        bias.assign(np.random.default_rng(1).normal(size=bias.shape))
    out = np.asarray(bank(x))
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, loop_reference(bank, x), rtol=1e-5, atol=1e-5)


def test_each_expert_is_glorot_initialised_with_its_own_fans():
    bank = ExpertBank(num_experts=64, units=[32])
    bank.build((None, 48))
    limit = math.sqrt(6.0 / (48 + 32))
    kernel = np.asarray(bank.kernels[0])
    assert np.abs(kernel).max() <= limit
    # Uniform(-l, l) has std l/sqrt(3); 64*48*32 draws pin it to within a few percent.
    np.testing.assert_allclose(kernel.std(), limit / math.sqrt(3), rtol=0.03)


def test_expert_bank_round_trips_through_keras_file(tmp_path):
    run_layer_saving_test(ExpertBank(3, [4, 2]), (6,), tmp_path)


def test_gate_is_a_softmax_mixture():
    gate = Gate(num_experts=3)
    selector = tf.constant(np.random.default_rng(0).normal(size=(2, 4)), tf.float32)
    experts = tf.constant(np.random.default_rng(1).normal(size=(2, 3, 5)), tf.float32)
    mixture, weights = gate(selector, experts)
    kernel, bias = (np.asarray(v) for v in gate.dense.weights)
    logits = selector.numpy() @ kernel + bias
    expected_weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)
    np.testing.assert_allclose(
        mixture, np.einsum("be,bed->bd", expected_weights, experts.numpy()), rtol=1e-5
    )
