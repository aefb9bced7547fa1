"""Looking at task gradients before choosing a balancer: how large, how aligned, and what follows.

- `task_gradients` / `gradient_cosines`: one batch's `[K, D]` task-gradient matrix and its `[K, K]`
  cosines (unlabelled arrays, as before).
- `gradient_report`: over several batches, a labelled table of cosines, gradient norms and norm
  ratios with their spread, a `.plot()`, and a recommendation in words with the rule behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_mtl.data import plain_inputs
from keras_mtl.diagnostics.batches import labelled_batches
from keras_mtl.optional import require

LEVELS = ("parameters", "representation")

# The recommendation's rule (see `GradientReport.recommendation`).
NORM_RATIO_THRESHOLD = 4.0   # median largest/smallest task-gradient norm at or above: magnitude
CONFLICT_THRESHOLD = 0.25    # share of batches with a negative cosine, for some pair, at or above
MAGNITUDE_METHODS = ("imtl_g", "db_mtl", "gradnorm")
DIRECTION_METHODS = ("pcgrad", "cagrad", "upgrad")
BOTH_METHODS = ("nash_mtl", "aligned_mtl", "imtl_g")


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


def norms_and_cosines(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row norms `[K]` and pairwise cosines `[K, K]` of a task-gradient matrix; a zero row (a
    task without labelled rows) has cosine 0 with every task, itself included."""
    matrix = np.asarray(matrix, np.float64)
    gram = matrix @ matrix.T
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    scale = np.outer(norms, norms)
    return norms, np.divide(gram, scale, out=np.zeros_like(gram), where=scale > 0)


def gradient_cosines(model, x, y=None, level: str = "parameters",
                     sample_weight=None) -> np.ndarray:
    """`[K, K]` cosine similarities of the task gradients (negative: the tasks conflict).

    A task with a zero gradient (no labelled rows in the batch) has cosine 0 with every task.
    `gradient_report` gives the same over several batches, labelled, with norms and a verdict.
    """
    matrix = task_gradients(model, x, y, level, sample_weight).numpy()
    return norms_and_cosines(matrix)[1]


@dataclass
class GradientReport:
    """What `gradient_report` measured, over `batches` batches at `level`.

    - `tasks`: per task, the gradient norm (mean, std over batches) and its ratio to the smallest
      task's norm in the same batch (median).
    - `pairs`: per pair of tasks, the cosine (mean, std, min), the share of batches where it was
      negative, and the norm ratio larger/smaller (median, and its 10–90 % range).
    - `cosines`: the mean `[K, K]` cosine matrix, labelled.
    - `verdict`: `"magnitude"`, `"direction"`, `"both"` or `"ew"`; `recommendation`: in words,
      with the measured values and the rule (`NORM_RATIO_THRESHOLD`, `CONFLICT_THRESHOLD`).
    """

    level: str
    task_names: list
    norms: np.ndarray      # [batches, K]
    cosine: np.ndarray     # [batches, K, K]
    tasks: pd.DataFrame = field(init=False)
    pairs: pd.DataFrame = field(init=False)
    cosines: pd.DataFrame = field(init=False)

    def __post_init__(self):
        names = list(self.task_names)
        norms = self.norms
        smallest = np.maximum(norms.min(axis=1, keepdims=True), 1e-30)
        self.tasks = pd.DataFrame({
            "norm_mean": norms.mean(0), "norm_std": norms.std(0),
            "ratio_to_smallest": np.median(norms / smallest, axis=0),
        }, index=pd.Index(names, name="task"))
        rows = []
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                cos = self.cosine[:, a, b]
                hi = np.maximum(norms[:, a], norms[:, b])
                lo = np.maximum(np.minimum(norms[:, a], norms[:, b]), 1e-30)
                ratio = hi / lo
                rows.append({"pair": f"{names[a]} ~ {names[b]}", "cosine_mean": cos.mean(),
                             "cosine_std": cos.std(), "cosine_min": cos.min(),
                             "negative_share": float(np.mean(cos < 0)),
                             "norm_ratio": float(np.median(ratio)),
                             "norm_ratio_p10": float(np.quantile(ratio, 0.1)),
                             "norm_ratio_p90": float(np.quantile(ratio, 0.9))})
        self.pairs = pd.DataFrame(rows).set_index("pair")
        self.cosines = pd.DataFrame(self.cosine.mean(0), index=names, columns=names)

    @property
    def batches(self) -> int:
        return int(self.norms.shape[0])

    @property
    def max_norm_ratio(self) -> float:
        return float(self.pairs["norm_ratio"].max()) if len(self.pairs) else 1.0

    @property
    def max_negative_share(self) -> float:
        return float(self.pairs["negative_share"].max()) if len(self.pairs) else 0.0

    @property
    def verdict(self) -> str:
        magnitude = self.max_norm_ratio >= NORM_RATIO_THRESHOLD
        direction = self.max_negative_share >= CONFLICT_THRESHOLD
        return {(True, True): "both", (True, False): "magnitude", (False, True): "direction",
                (False, False): "ew"}[(magnitude, direction)]

    @property
    def recommendation(self) -> str:
        ratio_pair = self.pairs["norm_ratio"].idxmax() if len(self.pairs) else "-"
        conflict_pair = self.pairs["negative_share"].idxmax() if len(self.pairs) else "-"
        measured = (f"Largest norm ratio {self.max_norm_ratio:.1f}× ({ratio_pair}); most frequent "
                    f"conflict: negative cosine in {self.max_negative_share:.0%} of "
                    f"{self.batches} batches ({conflict_pair}), at the {self.level} level.")
        advice = {
            "magnitude": "The tasks' gradients differ in size, not in direction: use a magnitude "
                         f"method ({', '.join(MAGNITUDE_METHODS)}).",
            "direction": "The tasks' gradients often point against each other at similar sizes: "
                         f"use a direction method ({', '.join(DIRECTION_METHODS)}).",
            "both": "The gradients differ in size and often conflict: use a method that handles "
                    f"both ({', '.join(BOTH_METHODS)}), or compare a magnitude and a direction one.",
            "ew": "Neither large norm ratios nor frequent conflicts: equal weighting (ew) is the "
                  "baseline to beat; a balancer is unlikely to help much.",
        }[self.verdict]
        rule = (f"Rule: norm ratio >= {NORM_RATIO_THRESHOLD:g}× → magnitude; negative cosine in >= "
                f"{CONFLICT_THRESHOLD:.0%} of batches for some pair → direction; both → both; "
                "neither → ew.")
        return f"{advice}\n{measured}\n{rule}"

    def __str__(self) -> str:
        with pd.option_context("display.float_format", "{:.4g}".format,
                               "display.width", 120):
            return (f"Task gradients at the {self.level} level over {self.batches} batches\n\n"
                    f"{self.tasks}\n\n{self.pairs}\n\n{self.recommendation}")

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))

    def plot(self, axes=None):
        """Two panels: each task's gradient norm per batch (log scale), and each pair's cosine per
        batch with 0 marked. Returns the figure."""
        plt = require("matplotlib.pyplot", "tutorials", "GradientReport.plot")

        if axes is None:
            figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        else:
            figure = axes[0].figure
        names = list(self.task_names)
        positions = np.arange(len(names))
        axes[0].boxplot([self.norms[:, k] for k in positions], positions=positions)
        axes[0].set_xticks(positions, names)
        axes[0].set_yscale("log")
        axes[0].set_title(f"task-gradient norm ({self.level}), {self.batches} batches")
        pairs = list(self.pairs.index)
        values = [self.cosine[:, a, b] for a in range(len(names)) for b in range(a + 1, len(names))]
        pair_positions = np.arange(len(pairs))
        if values:
            axes[1].boxplot(values, positions=pair_positions)
        axes[1].set_xticks(pair_positions, pairs, rotation=20)
        axes[1].axhline(0.0, color="grey", linewidth=0.8)
        axes[1].set_ylim(-1.05, 1.05)
        axes[1].set_title(f"gradient cosine — verdict: {self.verdict}")
        figure.tight_layout()
        return figure


def gradient_report(model, x, y=None, level: str = "representation", batches: int = 8,
                    batch_size: int = 256, sample_weight=None, seed: int = 0) -> GradientReport:
    """Task-gradient norms and cosines over `batches` batches, labelled, with a recommendation.

    `x`: a DataFrame (labels from its task columns when `y` is None), arrays with `y`, or a
    `tf.data.Dataset` of `(x, y[, sample_weight])` batches (its first `batches` are used). From
    arrays and DataFrames, `batches` random batches of `batch_size` rows are drawn with `seed`.
    `level`: `"representation"` (at the backbone's cut, what representation-level balancers
    see) or `"parameters"` (the balanced shared parameters). The two can differ a lot for the
    same pair: the cut is before the trunk's Jacobian, which may align or separate the tasks;
    read the level your balancer works at. No step is taken.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    if int(batches) < 1:
        raise ValueError(f"batches must be >= 1, got {batches!r}.")
    norms, cosines = [], []
    for bx, by, bw in _batches(model, x, y, sample_weight, int(batches), int(batch_size), seed):
        matrix = model.task_gradients(bx, by, bw, level=level).as_matrix()
        n, c = norms_and_cosines(np.asarray(matrix))
        norms.append(n)
        cosines.append(c)
    return GradientReport(level, list(model.task_names), np.stack(norms), np.stack(cosines))


def _batches(model, x, y, sample_weight, batches, batch_size, seed):
    """`batches` random batches of `batch_size` rows (drawn with `seed`), or a dataset's first."""
    rng = np.random.default_rng(seed)

    def random_rows(rows):
        for _ in range(batches):
            yield np.sort(rng.choice(rows, size=min(batch_size, rows), replace=False))

    return labelled_batches(model, x, y, sample_weight, "gradient_report", random_rows,
                            max_batches=batches)
