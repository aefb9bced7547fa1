"""The MMoE paper's synthetic data with controllable task relatedness."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.features import FeatureSpec, Numeric
from keras_mtl.tasks import Task


def task_weight_vectors(correlation: float, dim: int, scale: float, rng, num_tasks: int = 2):
    """`w_t` vectors whose pairwise cosine similarity is exactly `correlation`.

    Two tasks follow MMoE §3.2: orthogonal unit vectors `u_1, u_2`, `w_1 = c·u_1`,
    `w_2 = c·(p·u_1 + sqrt(1 - p²)·u_2)`. For more tasks (our extension) every pair gets cosine p
    through `w_k = c·(sqrt(p)·u_0 + sqrt(1 - p)·u_k)` with orthonormal `u_0 … u_K`, which needs
    p >= 0.
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation}.")
    extra = 1 if num_tasks > 2 else 0
    if dim < num_tasks + extra:
        raise ValueError(f"dim={dim} is too small for {num_tasks} orthogonal directions.")
    basis, _ = np.linalg.qr(rng.normal(size=(dim, num_tasks + extra)))
    basis = basis.T
    if num_tasks == 2:
        u1, u2 = basis
        return scale * np.stack([u1, correlation * u1 + np.sqrt(1 - correlation**2) * u2])
    if num_tasks == 1:
        return scale * basis[:1]
    if correlation < 0:
        raise ValueError("For more than two tasks the correlation must be >= 0.")
    return scale * (np.sqrt(correlation) * basis[0] + np.sqrt(1 - correlation) * basis[1:])


def make_synthetic(
    num_examples: int = 20000,
    correlation: float = 0.5,
    num_tasks: int = 2,
    dim: int = 100,
    scale: float = 1.0,
    num_sines: int = 10,
    alpha=None,
    beta=None,
    noise_std: float = 0.1,
    seed: int = 0,
    fractions=(0.8, 0.1, 0.1),
) -> MultiTaskDataset:
    """Regression tasks of controlled correlation (Ma et al., KDD 2018, §3.2; PLE §5.2 defaults).

        y_t = w_tᵀx + Σ_{i=1}^{m} sin(α_i w_tᵀx + β_i) + ε_t,   x ~ N(0, I_d),   ε_t ~ N(0, σ²)

    with `cos(w_1, w_2) = correlation` (p), `‖w_t‖ = scale` (c), `m = num_sines`, α_i, β_i ~ N(0, 1)
    unless given (shared by all tasks, as in the paper), σ = `noise_std` (0.1: the paper's
    variance 0.01). The non-linear term makes the *label* correlation lower than p, which is the
    point of the MMoE experiment.

    Returns a `MultiTaskDataset` with numeric features `x0 … x{dim-1}` and regression tasks
    `y1 … yK`, split by `fractions` with `seed`.
    """
    rng = np.random.default_rng(seed)
    weights = task_weight_vectors(correlation, dim, scale, rng, num_tasks)
    alpha = rng.normal(size=num_sines) if alpha is None else np.asarray(alpha, float)
    beta = rng.normal(size=num_sines) if beta is None else np.asarray(beta, float)
    if alpha.shape != (num_sines,) or beta.shape != (num_sines,):
        raise ValueError(f"alpha and beta need {num_sines} values each.")
    x = rng.normal(size=(num_examples, dim))
    projections = x @ weights.T  # [n, K]
    sines = np.sin(projections[..., None] * alpha + beta).sum(-1)
    labels = projections + sines + rng.normal(scale=noise_std, size=projections.shape)

    columns = {f"x{i}": x[:, i].astype(np.float32) for i in range(dim)}
    task_names = [f"y{k + 1}" for k in range(num_tasks)]
    columns.update({name: labels[:, k].astype(np.float32) for k, name in enumerate(task_names)})
    frame = pd.DataFrame(columns)
    train, validation, test = split_frame(frame, fractions, seed)
    features = FeatureSpec(Numeric(f"x{i}") for i in range(dim))  # already N(0, 1)
    return MultiTaskDataset(
        name="synthetic",
        train=train,
        validation=validation,
        test=test,
        features=features,
        tasks=[Task(name, kind="regression") for name in task_names],
        description=(
            f"MMoE synthetic regression, {num_tasks} tasks, correlation p={correlation}, "
            f"d={dim}, m={num_sines}, c={scale}, noise σ={noise_std}, seed={seed}"
        ),
    )
