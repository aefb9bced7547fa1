"""`all_finite`: one non-finite entry anywhere, in any form a gradient takes, is found."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.models import guard
from keras_mtl.models.guard import all_finite


def gradients():
    """Small dense tensors of two dtypes, a large one, slices, an integer and a scalar."""
    return [tf.ones([3, 4]), tf.ones([5], tf.float16), tf.ones([2, 3, 2]),
            tf.IndexedSlices(tf.ones([2, 4]), tf.constant([0, 3]), tf.constant([9, 4])),
            tf.constant([7, 8]), tf.constant(2.0)]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_position_of_a_non_finite_entry_is_found(monkeypatch, jit_compile, bad):
    # A checked-alone tensor too: the third is above the threshold set here.
    monkeypatch.setattr(guard, "_CHECKED_TOGETHER", 8)
    check = tf.function(all_finite, jit_compile=jit_compile)
    assert bool(check(gradients()))
    for index, position in [(0, (2, 3)), (1, (4,)), (2, (1, 2, 0)), (5, ())]:
        tensors = gradients()
        value = np.array(tensors[index].numpy())
        value[position] = bad
        tensors[index] = tf.constant(value)
        assert not bool(check(tensors)), (index, position)
    tensors = gradients()
    tensors[3] = tf.IndexedSlices(tf.constant([[1.0, bad, 1.0, 1.0], [1.0] * 4]),
                                  tf.constant([0, 3]), tf.constant([9, 4]))
    assert not bool(check(tensors))


def test_nothing_to_check_is_finite():
    assert bool(all_finite([])) and bool(all_finite([tf.constant([1, 2])]))
