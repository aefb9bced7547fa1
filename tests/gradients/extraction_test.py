"""`keras_mtl.gradients.extract` on a hand-built two-task model (no MultiTaskModel): every level's
task gradients and the chained variable gradients equal plain autodiff of the same losses."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.gradients.extraction import TapedPass, extract, record
from keras_mtl.gradients.partition import partition_variables

RNG = np.random.default_rng(0)
X = tf.constant(RNG.normal(size=(4, 3)), tf.float32)
TRUNK = tf.Variable(RNG.normal(size=(3, 2)), dtype=tf.float32, name="trunk")
TABLE = tf.Variable(RNG.normal(size=(5, 2)), dtype=tf.float32, name="table")
HEADS = [tf.Variable(RNG.normal(size=(2,)), dtype=tf.float32, name=f"head_{k}") for k in range(2)]
IDS = tf.constant([0, 3, 3, 1])
TARGETS = [tf.constant(RNG.normal(size=(4,)), tf.float32) for _ in range(2)]


def losses_and_cut(detach_cut=False, watch=None):
    cut = tf.matmul(X, TRUNK) + tf.gather(TABLE, IDS)  # [4, 2]
    leaves = tf.stop_gradient(cut) if detach_cut else cut
    if detach_cut and watch is not None:
        watch([leaves])
    losses = [0.5 * tf.reduce_mean(tf.square(tf.linalg.matvec(leaves, h) - t))
              for h, t in zip(HEADS, TARGETS, strict=True)]
    return losses, cut, leaves


def run(detach_cut, factored, watch=None):
    losses, cut, leaves = losses_and_cut(detach_cut, watch)
    return TapedPass(losses, [cut], [leaves], None, outputs="passed through")


def partition(dense_tables=False):
    variables = [TABLE, TRUNK, *HEADS]
    return partition_variables(variables, shared=[TABLE, TRUNK], heads=HEADS, tables=[TABLE],
                               dense_tables=dense_tables)


def reference(shared_weights, head_weights):
    """Plain autodiff: shared variables from Σ s_k L_k, heads from Σ h_k L_k."""
    with tf.GradientTape(persistent=True) as tape:
        losses, _, _ = losses_and_cut()
        shared_total = tf.add_n([w * loss for w, loss in zip(shared_weights, losses, strict=True)])
        head_total = tf.add_n([w * loss for w, loss in zip(head_weights, losses, strict=True)])
    return ([tf.convert_to_tensor(g) for g in tape.gradient(shared_total, [TABLE, TRUNK])]
            + tape.gradient(head_total, HEADS))


def task_cut_gradients():
    with tf.GradientTape(persistent=True) as tape:
        losses, cut, _ = losses_and_cut()
    return [tape.gradient(loss, cut).numpy() for loss in losses]


def result(combined, task_weights, shared_weights):
    return SimpleNamespace(combined=combined, task_weights=tf.constant(task_weights),
                           weights_for_shared=tf.constant(shared_weights))


def assert_close(grads, expected):
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(g), e, rtol=1e-5, atol=1e-6)


def test_losses_level_chains_shared_and_head_weights_separately():
    extraction = extract("losses", run, partition())
    assert extraction.outputs == "passed through"
    assert extraction.task_gradients.blocks is None and extraction.task_gradients.matrix is None
    expected = [loss.numpy() for loss in losses_and_cut()[0]]
    np.testing.assert_allclose(extraction.task_gradients.losses, expected, rtol=1e-6)
    grads = extraction.chain(result(None, [2.0, 0.5], [0.3, 1.5]))
    assert_close(grads, reference([0.3, 1.5], [2.0, 0.5]))


def test_representation_level_blocks_are_the_cut_gradients_and_chain_once():
    extraction = extract("representation", run, partition())
    blocks = extraction.task_gradients.blocks
    for row, expected in zip(blocks, task_cut_gradients(), strict=True):
        np.testing.assert_allclose(row[0], expected, rtol=1e-5, atol=1e-7)
    assert extraction.task_gradients.layout.segment_sizes[0] == 8
    np.testing.assert_allclose(extraction.task_gradients.as_matrix(),
                               np.stack([g.ravel() for g in task_cut_gradients()]), rtol=1e-5)
    # A combination that is the weighting [0.3, 1.5] chains to Σ w_k ∇L_k on the shared variables.
    combined = [0.3 * blocks[0][0] + 1.5 * blocks[1][0]]
    grads = extraction.chain(result(combined, [1.0, 1.0], [0.3, 1.5]))
    assert_close(grads, reference([0.3, 1.5], [1.0, 1.0]))


def test_a_head_op_without_variables_keeps_its_cut_gradient():
    """A head that first transforms the cut with no variable involved (here: scales it) is only
    recorded if the detached cut is watched before the head runs (`ForwardPass`' contract)."""
    def scaled_run(detach_cut, factored, watch=None):
        cut = tf.matmul(X, TRUNK)
        leaves = tf.stop_gradient(cut) if detach_cut else cut
        if detach_cut and watch is not None:
            watch([leaves])
        doubled = 2.0 * leaves  # reads only the copy: no variable
        losses = [tf.reduce_sum(tf.linalg.matvec(doubled, h)) for h in HEADS]
        return TapedPass(losses, [cut], [leaves])

    blocks = extract("representation", scaled_run, partition()).task_gradients.blocks
    for row, head in zip(blocks, HEADS, strict=True):
        np.testing.assert_allclose(row[0], np.tile(2.0 * head.numpy(), (4, 1)), rtol=1e-6)


@pytest.mark.parametrize("dense_tables", [False, True])
def test_parameter_level_matrix_rows_are_each_tasks_parameter_gradient(dense_tables):
    extraction = extract("parameters", run, partition(dense_tables))
    matrix = extraction.task_gradients.matrix.numpy()
    balanced = [TRUNK, TABLE] if dense_tables else [TRUNK]
    for k in range(2):
        with tf.GradientTape() as tape:
            loss = losses_and_cut()[0][k]
        row = np.concatenate([tf.reshape(tf.convert_to_tensor(g), [-1]).numpy()
                              for g in tape.gradient(loss, balanced)])
        np.testing.assert_allclose(matrix[k], row, rtol=1e-5, atol=1e-7)
    weights = np.array([0.3, 1.5], np.float32)
    # Tables outside the matrix get the weighted sum; heads their task weights.
    grads = extraction.chain(result(tf.constant(weights @ matrix), [2.0, 0.5], weights))
    assert_close(grads, reference(weights, [2.0, 0.5]))


def test_a_loss_scale_is_divided_out_for_the_balancer_and_kept_for_the_optimizer():
    plain = extract("parameters", run, partition())
    scaled = extract("parameters", run, partition(), scale=tf.constant(8.0))
    np.testing.assert_allclose(scaled.task_gradients.matrix, plain.task_gradients.matrix,
                               rtol=1e-6)
    weights = [1.0, 1.0]
    combined = tf.reduce_sum(plain.task_gradients.matrix, axis=0)
    for a, b in zip(scaled.chain(result(combined, weights, weights)),
                    plain.chain(result(combined, weights, weights)), strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(a), 8.0 * tf.convert_to_tensor(b),
                                   rtol=1e-5)


@pytest.mark.parametrize("level", ["losses", "representation", "parameters"])
@pytest.mark.parametrize("same_weights", [True, False])
def test_a_recording_gives_the_weighted_loss_gradients_without_extracting(level, same_weights):
    """A step that reuses stored weights takes only `Σ_k w_k L_k`'s gradients from the recorded
    pass (through the detached cut at the gradient levels): plain autodiff's, and under a loss
    scale scaled like `chain`'s."""
    shared = tf.constant([0.3, 1.5])
    heads = shared if same_weights else tf.constant([2.0, 0.5])
    weights = SimpleNamespace(weights_for_shared=shared, task_weights=heads)
    recording = record(level, run, partition())
    assert recording.level == level and recording.outputs == "passed through"
    expected = reference(shared.numpy(), heads.numpy())
    assert_close(recording.weighted_gradients(weights), expected)
    scaled = record(level, run, partition(), scale=tf.constant(8.0)).weighted_gradients(weights)
    assert_close(scaled, [8.0 * e for e in expected])


def gated_model():
    """A cut read only through gated readouts (each term computed from a detached copy when
    factored) plus a cut tensor no head reads: `(run, partition, weights, expected)`, the
    expected gradients being plain autodiff's for shared weights [0.7, 1.2] and head weights
    [1.0, 3.0]."""
    gates = [tf.Variable(RNG.normal(size=(3, 2)), dtype=tf.float32, name=f"gate_{k}")
             for k in range(2)]
    experts = tf.Variable(RNG.normal(size=(3, 4)), dtype=tf.float32, name="experts")
    unused = tf.Variable(RNG.normal(size=(3, 5)), dtype=tf.float32, name="unused")

    def gated_run(detach_cut, factored, watch=None):
        cut = tf.reshape(tf.matmul(X, experts), [4, 2, 2])  # [batch, experts, units]
        idle = tf.matmul(X, unused)  # a second cut tensor no head reads
        leaves = [tf.stop_gradient(cut), tf.stop_gradient(idle)] if detach_cut else [cut, idle]
        if detach_cut and watch is not None:
            watch(leaves)
        losses, readouts = [], []
        for k, gate in enumerate(gates):
            w = tf.nn.softmax(tf.matmul(X, gate))  # [batch, experts]
            term = tf.einsum("be,bed->bd", w, tf.stop_gradient(leaves[0]) if factored
                             else leaves[0])
            losses.append(tf.reduce_mean(tf.square(term - TARGETS[k][:, None])))
            readouts.append([SimpleNamespace(cut_index=0, weights=w, term=term)])
        return TapedPass(losses, [cut, idle], leaves, readouts if factored else None)

    parts = partition_variables([experts, unused, *gates], shared=[experts, unused], heads=gates,
                                tables=[], dense_tables=False)
    shared, heads = tf.constant([0.7, 1.2]), tf.constant([1.0, 3.0])
    with tf.GradientTape(persistent=True) as tape:
        losses = gated_run(False, False).losses
        shared_total = 0.7 * losses[0] + 1.2 * losses[1]
        head_total = 1.0 * losses[0] + 3.0 * losses[1]
    expected = [*tape.gradient(shared_total, [experts, unused],
                               unconnected_gradients=tf.UnconnectedGradients.ZERO),
                *tape.gradient(head_total, gates)]
    weights = SimpleNamespace(weights_for_shared=shared, task_weights=heads)
    return gated_run, parts, weights, expected


def test_a_recording_reaches_the_cut_through_factored_readouts():
    """Where a head reads the cut only through a gated readout (its term computed from a detached
    copy), the weighted pass adds the readout's outer product `w ⊗ ∂L/∂term` to the cut
    gradient, and a shared variable behind a cut tensor no task reaches gets no gradient."""
    gated_run, parts, weights, expected = gated_model()
    grads = record("representation", gated_run, parts).weighted_gradients(weights)
    assert_reached_close(grads, expected)


def assert_reached_close(grads, expected):
    """`grads` against plain autodiff's, the variable no loss reaches (`unused`) with None."""
    assert grads[1] is None and not np.any(expected[1])
    assert_close(grads[:1] + grads[2:], expected[:1] + expected[2:])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_losses_level_goes_through_the_cut_without_xla(jit_compile):
    """Without XLA the losses level's backward pass runs through the detached cut and its gated
    readouts (one batched product for the experts' gradient); under XLA it is TensorFlow's own
    pass. Both are the weighted loss sum's exact gradients."""
    gated_run, parts, weights, expected = gated_model()
    detached = []

    @tf.function(jit_compile=jit_compile)
    def gradients():
        recording = record("losses", gated_run, parts)
        detached.append(recording.detached)
        return recording.extraction().chain(weights)

    assert_reached_close(gradients(), expected)
    assert detached == [not jit_compile]


def test_the_partition_names_what_is_balanced():
    assert partition().balanced == (TRUNK,) and partition().unbalanced_tables == (TABLE,)
    assert partition(True).balanced == (TRUNK, TABLE) and partition(True).unbalanced_tables == ()
    assert partition().heads == tuple(HEADS)


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="level must be one of"):
        extract("cut", run, partition())
