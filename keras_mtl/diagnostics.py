"""Looking at task gradients: how much tasks conflict, before choosing a balancer."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_mtl.data import plain_inputs

LEVELS = ("parameters", "representation")


def task_gradients(model, x, y=None, level: str = "parameters", sample_weight=None) -> tf.Tensor:
    """The `[K, D]` matrix of each task's loss gradient, as the balancers see it at `level`.

    `"parameters"`: w.r.t. the shared parameters the model balances (embedding tables excluded
    unless the model densifies them); `"representation"`: w.r.t. the backbone's cut, batch
    included. Task losses include `Task.weight`; no training step is taken.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    # A DataFrame (labels from its task columns when y is None) or arrays, as fit takes them.
    x, y = plain_inputs(x, y, model.encoder.lookup_stage, model.tasks)
    return model.task_gradients(x, y, sample_weight, level=level).as_matrix()


def gradient_cosines(model, x, y=None, level: str = "parameters",
                     sample_weight=None) -> np.ndarray:
    """`[K, K]` cosine similarities of the task gradients (negative: the tasks conflict).

    A task with a zero gradient (no labelled rows in the batch) has cosine 0 with every task.
    """
    matrix = task_gradients(model, x, y, level, sample_weight).numpy().astype(np.float64)
    gram = matrix @ matrix.T
    norms = np.sqrt(np.diag(gram))
    scale = np.outer(norms, norms)
    return np.divide(gram, scale, out=np.zeros_like(gram), where=scale > 0)
