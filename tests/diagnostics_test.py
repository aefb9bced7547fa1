import numpy as np
import pytest

import keras_mtl as km
from tests.helpers import small_batch, small_model


@pytest.mark.parametrize("level", ["parameters", "representation"])
def test_task_gradients_are_what_the_balancer_sees(level):
    x, y = small_batch(32)
    model = small_model(balancer=km.balancers.get("ew", level=level))
    model.compile(optimizer="sgd")
    matrix = km.diagnostics.task_gradients(model, x, y, level=level).numpy()
    assert matrix.shape[0] == 2
    cosines = km.diagnostics.gradient_cosines(model, x, y, level=level)
    np.testing.assert_allclose(np.diag(cosines), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cosines, cosines.T, rtol=1e-6)
    expected = matrix[0] @ matrix[1] / np.linalg.norm(matrix[0]) / np.linalg.norm(matrix[1])
    np.testing.assert_allclose(cosines[0, 1], expected, rtol=1e-5)
    if level == "parameters":  # ew's parameter-level update is the sum of the rows
        grads, variables, _, _, *_ = model.compute_gradients(x, y, training=False)
        balanced = {id(v) for v in model.partition.balanced}
        flat = np.concatenate([np.ravel(g) for g, v in zip(grads, variables, strict=True)
                               if id(v) in balanced])
        np.testing.assert_allclose(flat, matrix.sum(0), rtol=1e-5, atol=1e-7)


def test_a_task_without_labels_has_zero_cosine():
    x, y = small_batch(16)
    y = dict(y, watch_time=np.full(16, np.nan, np.float32))
    model = small_model()
    cosines = km.diagnostics.gradient_cosines(model, x, y)
    assert cosines[0, 1] == 0.0 and cosines[1, 1] == 0.0
