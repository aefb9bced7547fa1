"""The balancers' linear algebra: reductions of `J`, its per-tensor segments, the pseudo-inverse."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.balancers.linalg import (
    finite_or_identity,
    gramian,
    pseudo_inverse,
    row_norms,
    scale_segments,
    segment_norms,
    split_segments,
    weighted_sum,
)

RNG = np.random.default_rng(0)
J = RNG.normal(size=(3, 9))
SIZES = (2, 3, 4)


def test_reductions_are_the_textbook_ones():
    w = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(weighted_sum(tf.constant(J), tf.constant(w)), w @ J, rtol=1e-12)
    np.testing.assert_allclose(row_norms(tf.constant(J)), np.linalg.norm(J, axis=1), rtol=1e-12)
    np.testing.assert_allclose(gramian(tf.constant(J)), J @ J.T, rtol=1e-12)


def test_segments_split_measure_and_scale_the_column_blocks():
    blocks = [np.asarray(b) for b in split_segments(tf.constant(J), SIZES)]
    assert [b.shape[1] for b in blocks] == list(SIZES)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), J)
    np.testing.assert_array_equal(split_segments(tf.constant(J), None)[0], J)
    np.testing.assert_allclose(segment_norms(tf.constant(J), SIZES),
                               np.stack([np.linalg.norm(b, axis=1) for b in blocks], axis=1),
                               rtol=1e-12)
    factors = RNG.uniform(size=(3, 3))
    np.testing.assert_allclose(scale_segments(tf.constant(J), tf.constant(factors), SIZES),
                               np.concatenate([b * factors[:, s:s + 1]
                                               for s, b in enumerate(blocks)], axis=1),
                               rtol=1e-12)


@pytest.mark.parametrize("kind", ["psd_low_rank", "indefinite"])
def test_pseudo_inverse_meets_the_moore_penrose_conditions(kind):
    if kind == "psd_low_rank":
        a = RNG.normal(size=(5, 2))
        matrix = a @ a.T  # rank 2: three zero eigenvalues, cut by rcond
    else:
        a = RNG.normal(size=(5, 5))
        matrix = a + a.T
    inverse = np.asarray(pseudo_inverse(tf.constant(matrix), 1e-10))
    np.testing.assert_allclose(matrix @ inverse @ matrix, matrix, atol=1e-9)
    np.testing.assert_allclose(inverse @ matrix @ inverse, inverse, atol=1e-9)
    np.testing.assert_allclose(inverse, np.linalg.pinv(matrix, rcond=1e-10, hermitian=True),
                               atol=1e-9)


def test_pseudo_inverse_cuts_eigenvalues_below_rcond_and_survives_non_finite_input():
    matrix = np.diag([1.0, 1e-6, 0.0])
    np.testing.assert_allclose(pseudo_inverse(tf.constant(matrix), 1e-8), np.diag([1, 1e6, 0]))
    np.testing.assert_allclose(pseudo_inverse(tf.constant(matrix), 1e-4), np.diag([1, 0, 0]))
    batch = np.stack([np.eye(2) * 2.0, np.array([[np.nan, 0.0], [0.0, 1.0]])])
    np.testing.assert_array_equal(finite_or_identity(tf.constant(batch))[1], np.eye(2))
    np.testing.assert_allclose(pseudo_inverse(tf.constant(batch), 1e-12),
                               [np.eye(2) / 2.0, np.eye(2)])
