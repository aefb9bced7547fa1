"""Balancers on structured cut-gradient blocks give what they give on the materialised matrix."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import balancers
from keras_mtl.balancers.base import BalanceContext
from keras_mtl.gradients.layout import GradientLayout
from tests.gradients.blocks_test import CUT, B, as_matrix, structured_blocks


@pytest.mark.parametrize("name", ["mgda", "upgrad", "imtl_g", "nash_mtl", "multibalance", "ew",
                                  "gradnorm", "graddrop", "gradcraft"])
def test_balancers_give_on_blocks_what_they_give_on_the_matrix(name):
    blocks = structured_blocks(seed=2)
    matrix = tf.constant(as_matrix(blocks))
    context = BalanceContext.default()._replace(layout=GradientLayout(
        segment_sizes=tuple(int(np.prod(c.shape)) for c in CUT), batch_size=tf.constant(B),
        cut_tensors=tuple(CUT)))
    losses = tf.constant([0.7, 0.4, 1.2])
    results = []
    for use_blocks in (False, True):
        balancer = balancers.get(name, level="representation")
        balancer.build(3)
        tf.random.set_seed(0)
        result = (balancer.balance_blocks(blocks, losses, context) if use_blocks
                  else balancer.balance(matrix, losses, context))
        combined = result.combined
        if isinstance(combined, list | tuple):
            combined = tf.concat([tf.reshape(c, [-1]) for c in combined], 0)
        results.append(combined.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-5)
