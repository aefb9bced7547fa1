"""Gates against NumPy references: DSelect-k (Hazimeh et al., NeurIPS'21) and the gate option."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.layers.gate import gate_spec, smooth_step
from tests.helpers import run_layer_saving_test

X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


def np_smooth_step(t, gamma):
    cubic = -2 * t**3 / gamma**3 + 3 * t / (2 * gamma) + 0.5
    return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, cubic))


def np_selectors(z, n):
    """r(z)_l = Π_j S(z_j)^[bit j of l] (1 − S(z_j))^[1 − bit j of l], z: [..., m], γ = 1."""
    m = z.shape[-1]
    codes = np.array([[int(b) for b in np.binary_repr(v, width=m)] for v in range(n)])
    s = np_smooth_step(z, 1.0)[..., None, :]
    return np.prod(codes * s + (1 - codes) * (1 - s), axis=-1)


def np_softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def static_gate(n, k, z, alpha, **kwargs):
    gate = km.layers.DSelectGate(n, top_k=k, per_example=False, **kwargs)
    gate.build((None, 6))
    gate.z.assign(np.asarray(z, np.float32))
    gate.alpha.assign(np.asarray(alpha, np.float32))
    return gate


def test_smooth_step_is_the_papers_cubic_and_flat_outside_the_band():
    t = np.linspace(-2, 2, 41).astype(np.float32)
    for gamma in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(smooth_step(t, gamma), np_smooth_step(t, gamma), atol=1e-6)
    # C¹ at ±γ/2: value 0/1 and slope 0 from inside the band.
    with tf.GradientTape() as tape:
        edges = tf.constant([-0.5 + 1e-4, 0.5 - 1e-4])
        tape.watch(edges)
        values = smooth_step(edges, 1.0)
    np.testing.assert_allclose(values, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(tape.gradient(values, edges), [0.0, 0.0], atol=1e-3)


def test_per_example_weights_match_the_numpy_formula():
    gate = km.layers.DSelectGate(6, top_k=3, gamma=1.0)
    gate.build((None, 6))
    rng = np.random.default_rng(3)
    for v in gate.weights:  # move every selector into the smooth band and beyond
        v.assign(rng.normal(scale=0.4, size=v.shape))
    kz, bz = (np.asarray(v) for v in gate.z_dense.weights)
    ka, ba = (np.asarray(v) for v in gate.alpha_dense.weights)
    z = (X @ kz + bz).reshape(5, 3, 3)  # k = 3 selectors, m = ⌈log₂ 6⌉ = 3 bits
    expected = np.einsum("bk,bkn->bn", np_softmax(X @ ka + ba), np_selectors(z, 6))
    np.testing.assert_allclose(gate.expert_weights(X), expected, rtol=1e-5, atol=1e-6)
    experts = rng.normal(size=(5, 6, 4)).astype(np.float32)
    mixture, weights = gate(X, experts)
    np.testing.assert_allclose(mixture, np.einsum("bn,bnd->bd", expected, experts), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [4, 8])
def test_weights_sum_to_one_for_a_power_of_two(n):
    gate = static_gate(n, 2, np.random.default_rng(1).uniform(-0.4, 0.4, (2, int(np.log2(n)))),
                       [0.3, -0.2])
    weights = np.asarray(gate.expert_weights(X))
    assert weights.shape == (5, n) and np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert np.count_nonzero(weights[0] > 1e-6) > 2  # in the band: not yet sparse


def test_binary_selectors_select_exactly_k_experts_with_the_selector_weights():
    # 8 experts, 3 bits; selector codes 101 = 5 and 010 = 2 (z = ±γ: S ∈ {0, 1}).
    alpha = np.array([0.7, -0.4], np.float32)
    gate = static_gate(8, 2, [[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]], alpha, entropy_weight=1.0)
    weights = np.asarray(gate.expert_weights(X))
    expected = np.zeros(8)
    expected[[5, 2]] = np_softmax(alpha)
    np.testing.assert_allclose(weights, np.broadcast_to(expected, (5, 8)), atol=1e-7)
    assert np.count_nonzero(weights[0]) == 2
    # Ω = 0 exactly at binary selectors; positive inside the band.
    assert float(gate.regularization(X)) == 0.0
    gate.z.assign([[0.1, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    s = np_smooth_step(np.array(0.1), 1.0)
    entropy = -(s * np.log(s) + (1 - s) * np.log(1 - s))  # the one undecided bit
    np.testing.assert_allclose(float(gate.regularization(X)), entropy, rtol=1e-5)


def test_entropy_regulariser_is_the_mean_entropy_of_the_selectors_times_its_weight():
    gate = km.layers.DSelectGate(4, top_k=2, entropy_weight=0.3)
    gate.build((None, 6))
    for v in gate.z_dense.weights:
        v.assign(np.random.default_rng(2).normal(scale=0.3, size=v.shape))
    kz, bz = (np.asarray(v) for v in gate.z_dense.weights)
    r = np_selectors((X @ kz + bz).reshape(5, 2, 2), 4)
    entropy = -(r * np.log(np.where(r > 0, r, 1))).sum(-1).sum(-1).mean()
    np.testing.assert_allclose(float(gate.regularization(X)), 0.3 * entropy, rtol=1e-5)


def test_three_experts_penalise_mass_on_the_unreachable_code_only():
    # n = 3: codes 00, 01, 10 reachable, 11 not.
    gate = static_gate(3, 1, [[-1.0, 1.0]], [0.0])  # binary on 01: reachable
    np.testing.assert_allclose(gate.expert_weights(X)[0], [0.0, 1.0, 0.0], atol=1e-7)
    assert float(gate.regularization(X)) == 0.0
    gate.z.assign([[0.2, 0.2]])  # most mass on 11
    weights = np.asarray(gate.expert_weights(X))[0]
    s = np_smooth_step(np.array(0.2), 1.0)
    np.testing.assert_allclose(weights.sum(), 1 - s * s, rtol=1e-5)
    np.testing.assert_allclose(float(gate.regularization(X)), 1 / (1 - s * s) - 1, rtol=1e-5)


def test_minimising_the_regulariser_binarises_the_selectors_to_k_experts():
    # "Selects exactly k experts at convergence of its gates' binarisation": the entropy term
    # alone drives every selector out of the smooth band.
    gate = static_gate(8, 2, np.random.default_rng(4).uniform(-0.01, 0.01, (2, 3)), [0.1, 0.0],
                       entropy_weight=1.0)
    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(150):
        with tf.GradientTape() as tape:
            loss = gate.regularization(X)
        optimizer.apply(tape.gradient(loss, [gate.z]), [gate.z])
    assert float(gate.regularization(X)) == 0.0
    weights = np.asarray(gate.expert_weights(X))[0]
    assert 1 <= np.count_nonzero(weights) <= 2  # two selectors may pick the same expert
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)


def test_regulariser_trains_the_gate_only_not_its_input():
    gate = km.layers.DSelectGate(3, top_k=2, entropy_weight=1.0)
    gate.build((None, 6))
    x = tf.constant(X)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        gate(x, tf.zeros((5, 3, 4)))
        loss = tf.add_n(gate.losses)
    assert tape.gradient(loss, x) is None
    grads = tape.gradient(loss, gate.trainable_variables)
    assert any(g is not None and np.any(np.asarray(g)) for g in grads)
    gate(x, tf.zeros((5, 3, 4)))
    assert len(gate.losses) == 1  # a call replaces its previous loss


def test_a_model_adds_the_regulariser_to_gate_variables_only():
    from tests.helpers import small_batch, small_model

    model = small_model("ple_dselect")
    x, _ = small_batch()
    with tf.GradientTape() as tape:
        auxiliary = model.forward(x, training=True).auxiliary
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(auxiliary, model.trainable_variables), strict=True))
    touched = {path for path, g in grads.items() if g is not None}
    assert touched and all("gate" in path for path in touched), sorted(touched)
    # The last level's task gates are heads; the level-0 gates are shared (PLE's cut).
    heads = {v.path for v in model.head_variables}
    assert touched & heads and touched - heads
    assert small_model("mmoe").forward(x).auxiliary is None  # softmax gates: no layer loss


def test_gate_option_builds_dselect_gates_everywhere_and_validates():
    layer = km.layers.PLE(2, 2, 1, [4], num_tasks=2, gate={"type": "dselect", "top_k": 1})
    gates = layer.gate_weights(X)
    assert all(isinstance(g, km.layers.DSelectGate)
               for level in layer.task_gates for g in level)
    assert isinstance(layer.shared_gates[0], km.layers.DSelectGate)
    assert layer.task_gates[0][0].top_k == 1
    assert set(gates) == {"level_0/task_0", "level_0/task_1", "level_0/shared",
                          "level_1/task_0", "level_1/task_1"}
    assert layer.get_config()["gate"] == {"type": "dselect", "top_k": 1}
    assert km.layers.MMoE(2, [4], gate="dselect").get_config()["gate"] == "dselect"
    with pytest.raises(ValueError, match="Unknown gate 'topk'"):
        km.layers.MMoE(gate="topk")
    with pytest.raises(ValueError, match=r"hyper-parameter\(s\) \['k'\]"):
        km.layers.CGC(gate={"type": "dselect", "k": 2})
    with pytest.raises(ValueError, match="top_k"):
        km.layers.DSelectGate(4, top_k=0)
    assert gate_spec("softmax") == (km.layers.Gate, {})


@pytest.mark.parametrize("per_example", [True, False])
def test_dselect_gate_round_trips_through_keras_file(per_example, tmp_path):
    inputs = keras.Input((6,))
    gate = km.layers.DSelectGate(5, top_k=2, gamma=2.0, entropy_weight=0.1,
                                 per_example=per_example)
    experts = keras.layers.Reshape((5, 2))(keras.layers.Dense(10)(inputs))
    model = keras.Model(inputs, gate(inputs, experts)[0])
    path = tmp_path / "gate.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(X, verbose=0), model.predict(X, verbose=0),
                               atol=1e-6)
    restored_gate = [lyr for lyr in restored.layers if isinstance(lyr, km.layers.DSelectGate)][0]
    assert restored_gate.get_config() == gate.get_config()


def test_mmoe_with_dselect_round_trips_through_keras_file(tmp_path):
    run_layer_saving_test(km.layers.MMoE(3, [4], num_tasks=2, gate="dselect"), (6,), tmp_path)
