"""PEPNet against a NumPy reading of its equations, its stop-gradients, and saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as km
from tests.helpers import run_layer_saving_test, small_batch, small_model

LAYOUT = [("domain", 2, True), ("user", 3, True), ("price", 1, False)]  # 6 encoded columns
X = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)


def pepnet(**kwargs):
    layer = km.layers.PEPNet(domain_features=["domain"], prior_features=["user"],
                             tower_units=[5, 3], gate_units=4, num_tasks=2,
                             feature_layout=LAYOUT, **kwargs)
    layer(X)
    return layer


def np_gate(gate, x):
    (w1, b1), (w2, b2) = [(np.asarray(d.kernel), np.asarray(d.bias))
                          for d in (gate.hidden, gate.out)]
    hidden = np.maximum(x @ w1 + b1, 0.0)
    return gate.gamma / (1.0 + np.exp(-(hidden @ w2 + b2)))


def test_gate_nu_is_gamma_sigmoid_of_a_relu_layer():
    gate = km.layers.GateNU(3, hidden_units=2, gamma=2.0)
    values = gate(X).numpy()
    np.testing.assert_allclose(values, np_gate(gate, X), rtol=1e-5)
    assert values.min() >= 0.0 and values.max() <= 2.0
    for v in gate.weights:  # zero weights: every gate is γ·σ(0) = 1, the identity
        v.assign(np.zeros(v.shape))
    np.testing.assert_allclose(gate(X).numpy(), 1.0)


def test_pepnet_matches_equations():
    layer = pepnet()
    epnet = np_gate(layer.epnet_gate, np.concatenate([X[:, :2], X], 1))
    personalised = epnet * X  # O_ep = δ_domain ⊗ E
    gate_input = np.concatenate([X[:, 2:5], personalised], 1)
    ppnet = [np_gate(g, gate_input) for g in layer.ppnet_gates]
    outputs = layer(X)
    for k in range(2):
        h = personalised
        for level, dense in enumerate(layer.towers[k]):
            units = ppnet[level].shape[1] // 2
            scale = ppnet[level][:, k * units:(k + 1) * units]
            h = np.maximum((scale * h) @ np.asarray(dense.kernel) + np.asarray(dense.bias), 0.0)
        np.testing.assert_allclose(outputs[k].numpy(), h, rtol=1e-4, atol=1e-6)


def test_stop_gradients_as_in_the_paper():
    """EPNet's gate reads ∅(E): no gradient reaches the features through the gate's input copy;
    PPNet's gates read ∅(O_ep): the tasks' loss trains EPNet only through the towers' input."""
    layer = pepnet()
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        gates = layer.trunk(x)[1:]
        total = tf.add_n([tf.reduce_sum(g) for g in gates])
    grads = tape.gradient(total, [x, *layer.epnet_gate.trainable_variables])
    assert all(g is None for g in grads[1:])  # PPNet's gates never train EPNet
    # Through the gate input only the prior (user) columns carry gradient, not the ∅(O_ep) part.
    assert np.abs(grads[0].numpy()[:, [0, 1, 5]]).max() == 0.0
    assert np.abs(grads[0].numpy()[:, 2:5]).max() > 0.0


def test_feature_names_are_checked():
    with pytest.raises(ValueError, match=r"prior_features \['nope'\] are not features"):
        km.layers.PEPNet(prior_features=["nope"], feature_layout=LAYOUT)
    with pytest.raises(ValueError, match="takes no bottom"):
        km.layers.PEPNet(bottom=keras.layers.Dense(3))


def test_saving(tmp_path):
    run_layer_saving_test(pepnet(), (6,), tmp_path)


def test_in_a_model_gates_are_named_by_task_and_the_model_round_trips(tmp_path):
    model = small_model("pepnet")
    x, _ = small_batch(5)
    gates = model.gate_weights(x)
    assert set(gates) == {"epnet", "ppnet_0/click", "ppnet_0/watch_time", "ppnet_1/click",
                          "ppnet_1/watch_time"}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for name, value in loaded.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, model.predict(x, verbose=0)[name], rtol=1e-5, atol=1e-6)
