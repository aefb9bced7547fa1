"""The balancer contract.

A balancer turns per-task information into one update of the shared parameters. It never touches
the tape: `MultiTaskModel` obtains the information the balancer declares it needs and hands it over
as plain tensors.

- **Level** (`balancer.level`):
  - `"losses"`: the balancer sees the K task losses and returns K weights; the model back-propagates
    `Σ_k w_k L_k` once (a *scalariser*: no per-task gradients are computed).
  - `"representation"`: the balancer sees `J` = the `[K, D]` matrix of task gradients w.r.t. the
    flattened shared representation (the backbone's cut, batch included); its combined `[D]`
    gradient is chained through the trunk in one backward pass.
  - `"parameters"`: `J` holds the task gradients w.r.t. the shared parameters (flattened; embedding
    tables excluded unless the model is asked to densify them).
- **Functional core**: `aggregate(matrix, losses)` works on a plain `[K, D]` tensor and returns the
  `[D]` combination with the current state, without changing it. Tests call it directly.
- **State** lives in Keras variables created by `build(num_tasks)`, so it saves with the model.
  `balance(...)` returns the state *updates* instead of applying them: the model assigns them only
  when the step is finite, so a NaN batch cannot corrupt a running average.
- **Task weights**: `balance` also returns K weights. Task-specific (head) parameters are trained
  on `Σ_k w_k L_k` with them; for methods without weights (projections) they are ones, i.e. each
  head gets its own task's gradient.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import keras
import tensorflow as tf

from keras_mtl.balancers.linalg import weighted_sum
from keras_mtl.gradients.blocks import block_weighted_sum, dense_blocks
from keras_mtl.gradients.layout import GradientLayout
from keras_mtl.gradients.task_gradients import LEVELS, TaskGradients


def finite_float(value, what: str) -> float:
    """`value` as a finite Python float; a ValueError naming `what` otherwise (NaN, ±inf, or
    something that is not a number). Every hyper-parameter a user passes goes through here."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a finite number, got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}.")
    return number


def finite_floats(values, what: str, low: float | None = None) -> list[float]:
    """`values` as a list of finite floats (each `>= low` when given); a ValueError naming `what`,
    the entry and its index otherwise."""
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise ValueError(f"{what} must be a sequence of numbers, got {values!r}.")
    out = []
    for i, value in enumerate(values):
        number = finite_float(value, f"{what}[{i}]")
        if low is not None and number < low:
            raise ValueError(f"{what}[{i}] must be >= {low}, got {number} (in {list(values)}).")
        out.append(number)
    return out


class BalanceContext(NamedTuple):
    """Training-time facts a balancer may use besides the task gradients themselves.

    - `step`: optimizer steps taken so far; `epoch`: the current epoch, from 0 (the clock).
    - `layout`: how the columns of the gradient matrix split into tensors
      (`keras_mtl.gradients.GradientLayout`: segment sizes, batch size, cut tensors).
    """

    step: tf.Tensor
    epoch: tf.Tensor
    layout: GradientLayout = GradientLayout()

    @classmethod
    def default(cls) -> BalanceContext:
        return cls(step=tf.constant(0, tf.int64), epoch=tf.constant(0, tf.int64))


class BalanceResult(NamedTuple):
    """One step of a balancer.

    - `combined`: the `[D]` shared update (None at the losses level).
    - `task_weights`: `[K]` weights of the task losses for the task-specific (head) parameters.
    - `updates`: `((variable, new_value), ...)`, assigned by the model on finite steps only.
    - `shared_weights`: when `combined == shared_weights @ J` (a weighting), those `[K]` weights;
      the model uses them for shared parameters left out of the matrix (embedding tables at the
      parameter level). None for non-linear methods, which then fall back to `task_weights`.
    """

    combined: tf.Tensor | None
    task_weights: tf.Tensor
    updates: tuple
    shared_weights: tf.Tensor | None = None

    @property
    def weights_for_shared(self) -> tf.Tensor:
        """The weights a weighted loss sum gives shared parameters: `shared_weights` where the
        result is a weighting, `task_weights` otherwise."""
        return self.task_weights if self.shared_weights is None else self.shared_weights


class Balancer(keras.layers.Layer):
    """Base class of every balancer. Subclasses set `name_in_registry` and `supported_levels`;
    those whose shared update is `w @ J` subclass `Weighting` instead."""

    name_in_registry: ClassVar[str] = ""
    supported_levels: ClassVar[tuple[str, ...]] = ("representation", "parameters")
    default_level: ClassVar[str] = "representation"

    def __init__(self, level: str | None = None, **kwargs):
        kwargs.setdefault("name", self.name_in_registry or None)
        super().__init__(**kwargs)
        level = self.default_level if level is None else level
        if level not in self.supported_levels:
            raise ValueError(
                f"Balancer {self.name_in_registry!r} runs at level(s) {self.supported_levels}, "
                f"not {level!r}."
            )
        self.level = level
        self.num_tasks: int | None = None

    @property
    def needs_gradients(self) -> bool:
        return self.level != "losses"

    needs_hessian_term: ClassVar[bool] = False
    # True: after applying a step, the model evaluates the task losses again on the same batch and
    # passes them to `post_step_updates` (FAMO).
    needs_post_step_losses: ClassVar[bool] = False
    # True: `balance` accepts a float64 matrix and keeps its precision (`aggregate` passes one on).
    balances_float64: ClassVar[bool] = False

    def build(self, num_tasks, task_names=None, num_segments: int | None = None,
              num_columns: int | None = None):
        """Creates the state for `num_tasks` tasks.

        `task_names` lets a balancer accept a task by name (e.g. a target task);
        `num_segments` is the number of tensors the gradient matrix is made of at this balancer's
        level (per-tensor methods size their state with it; `None`: one segment); `num_columns`
        the matrix width D where it is fixed (the parameter level), for state shaped like a
        gradient.
        """
        if isinstance(num_tasks, tuple | list):  # Keras may pass a shape
            num_tasks = num_tasks[0]
        self.num_tasks = int(num_tasks)
        self.task_names = list(task_names) if task_names is not None else None
        self.num_segments = 1 if num_segments is None else int(num_segments)
        self.num_columns = None if num_columns is None else int(num_columns)
        self.build_state(self.num_tasks)
        self.built = True

    def build_state(self, num_tasks: int) -> None:
        """Creates state variables (`self.add_weight(..., trainable=False)`). Default: none."""

    def check_range(self, argument: str, value: float, low: float, high: float | None = None,
                    high_open: bool = False) -> float:
        """`value` as a float, or a ValueError naming the balancer, the argument and the range.

        NaN and ±inf are refused even where the range is unbounded: NaN fails every comparison
        (so a plain range check lets it through), and a non-finite hyper-parameter turns the
        balancer's state non-finite after one step, after which every step is skipped."""
        value = self.check_finite(argument, value)
        above = value > high or (high_open and value == high) if high is not None else False
        if value < low or above:
            upper = "∞)" if high is None else (f"{high})" if high_open else f"{high}]")
            raise ValueError(f"{self.name_in_registry} {argument} must lie in [{low}, {upper}, "
                             f"got {value}.")
        return value

    def check_finite(self, argument: str, value: float) -> float:
        """`value` as a finite float, or a ValueError naming the balancer and the argument."""
        return finite_float(value, f"{self.name_in_registry} {argument}")

    def check_finite_list(self, argument: str, values, low: float | None = None) -> list[float]:
        """`values` (a sequence of numbers) as finite floats, each `>= low` when `low` is given;
        a ValueError naming the balancer, the argument and the offending entry otherwise."""
        return finite_floats(values, f"{self.name_in_registry} {argument}", low)

    def check_choice(self, argument: str, value, choices) -> None:
        if value not in choices:
            raise ValueError(f"{self.name_in_registry} {argument} must be one of {tuple(choices)}, "
                             f"got {value!r}.")

    def task_index(self, task: int | str) -> int:
        """A task given by index or by name (names need the model's `task_names`)."""
        if isinstance(task, str):
            if not self.task_names or task not in self.task_names:
                raise ValueError(
                    f"Balancer {self.name_in_registry!r}: unknown task {task!r}; the tasks are "
                    f"{self.task_names}."
                )
            return self.task_names.index(task)
        if not 0 <= int(task) < self.num_tasks:
            raise ValueError(
                f"Balancer {self.name_in_registry!r}: task index {task} is out of range for "
                f"{self.num_tasks} tasks."
            )
        return int(task)

    def balance(self, matrix, losses, context: BalanceContext) -> BalanceResult:
        """One step: the combined gradient (None at the losses level), task weights, updates."""
        raise NotImplementedError

    def balance_blocks(self, blocks, losses, context: BalanceContext) -> BalanceResult:
        """`balance` on `blocks[k][s]`: task k's gradient w.r.t. tensor s, in its own shape.

        The matrix is `J[k] = concat_s flatten(blocks[k][s])`; a block may be structured (`None`
        for an exact zero, or an `OuterProductBlock`, see `keras_mtl.gradients.blocks`). This
        default materialises the blocks, builds the matrix and calls `balance`; `combined` stays
        flat. Methods that only need row norms, Gramians and weighted sums override it to work on
        the blocks as they come (on XLA's CPU backend building and re-reading the `[K, D]` matrix
        costs more than the maths); their `combined` is then a list of tensors shaped like the cut.
        """
        if any(not isinstance(b, tf.Tensor) for row in blocks for b in row):
            if context.layout.cut_tensors is None:
                raise ValueError("Structured gradient blocks need context.layout.cut_tensors "
                                 "(their shapes) to be materialised.")
            blocks = dense_blocks(blocks, context.layout.cut_tensors)
        matrix = tf.stack([tf.concat([tf.reshape(b, [-1]) for b in row], 0) for row in blocks])
        return self.balance(matrix, losses, context)

    def schedule(self, context: BalanceContext) -> tf.Tensor | None:
        """What this balancer needs at this step, asked before any task gradient is extracted.

        None (the default): the task gradients, every step. A boolean tensor: True where it needs
        them, False where it reuses `stored_result()` — the step then back-propagates the weighted
        loss sum once instead (`every=k`). A scheduling balancer's update is a weighting's
        (`w @ J`, heads with its task weights) on every step: the step back-propagates
        `Σ_k w_k L_k` with the weights either branch returns, and ignores `combined`."""
        return None

    def stored_result(self) -> BalanceResult:
        """The result reused on steps where `schedule` is False (weights, no combination)."""
        raise NotImplementedError(f"Balancer {self.name_in_registry!r} reuses no result.")

    def reduce(self, gradients: TaskGradients, context: BalanceContext) -> BalanceResult:
        """One training step: the balancing of what `keras_mtl.gradients` extracted at this
        balancer's level (blocks at the representation level, the matrix at the parameter level,
        losses alone at the losses level), with the gradients' layout in the context."""
        context = context._replace(layout=gradients.layout)
        if gradients.blocks is not None:
            return self.balance_blocks(gradients.blocks, gradients.losses, context)
        return self.balance(gradients.matrix, gradients.losses, context)

    def post_step_updates(self, losses_before, losses_after) -> tuple:
        """State updates from the losses before and after the step (`needs_post_step_losses`)."""
        return ()

    def aggregate(self, matrix, losses=None, context: BalanceContext | None = None) -> tf.Tensor:
        """Functional core: the `[D]` combination of the `[K, D]` `matrix`; state is not changed.

        A float64 matrix (a numpy array, say) is balanced in float64 where the method allows it
        (the Gramian methods: their Gramian and solvers then carry float64's precision); anything
        else in float32, as in training.
        """
        matrix = tf.convert_to_tensor(matrix)
        if matrix.dtype != tf.float64 or not self.balances_float64:
            matrix = tf.cast(matrix, tf.float32)
        if not self.built:
            self.build(int(matrix.shape[0]), num_columns=int(matrix.shape[1]))
        if losses is None:
            losses = tf.zeros([self.num_tasks], tf.float32)
        result = self.balance(matrix, tf.convert_to_tensor(losses, tf.float32),
                              context or BalanceContext.default())
        return result.combined

    def call(self, *args, **kwargs):
        raise TypeError("Balancers are not called on data; use balance() or aggregate().")

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.pop("trainable", None)
        config["level"] = self.level
        return config


class Weighting(Balancer):
    """A balancer whose shared update is a weighting of the task gradients: every result has
    `combined == shared_weights @ J`, with `shared_weights` set (TorchJD's *weightings*, as opposed
    to aggregators that combine the gradients some other way).

    Linear in `J`, so it gives the same shared update at every level (the representation-level
    result chained through the trunk equals the parameter-level one), shared parameters left out
    of the matrix get it as the loss sum `Σ_k w_k L_k`, and its weights can be kept and reused on
    later steps (`every=k`, which accepts exactly the instances of this class). What differs
    between weightings is the statistic the weights come from:

    - the losses and the clock: `task_weights(losses, context)`, this class's hook. Such a weighting
      also runs at the losses level (`Σ_k w_k L_k`, no per-task gradients: the default), and the
      heads are trained with the same weights;
    - the Gramian `G = J Jᵀ`: `gramian.GramianWeighting` (`weights_from_gramian`);
    - the matrix itself (norms of its rows, a running state of them): `task_weights(..., matrix)`
      with `needs_matrix` (GradNorm), or a `balance` of its own (MultiBalance, GradCraft).

    Balancers whose update is not `w @ J` (per coordinate, per tensor, or from a state other than
    the current `J`) subclass `Balancer` directly.
    """

    supported_levels: ClassVar[tuple[str, ...]] = LEVELS
    default_level: ClassVar[str] = "losses"
    # True: the weights read the gradient matrix, so the default block path materialises it
    # (`Balancer.balance_blocks`) instead of calling `task_weights` without one.
    needs_matrix: ClassVar[bool] = False

    def task_weights(self, losses, context: BalanceContext, matrix=None):
        """Returns `(weights [K], updates)`."""
        raise NotImplementedError

    def balance(self, matrix, losses, context):
        weights, updates = self.task_weights(losses, context, matrix)
        weights = tf.cast(weights, tf.float32)
        combined = None if matrix is None else weighted_sum(matrix, weights)
        return BalanceResult(combined, weights, tuple(updates), shared_weights=weights)

    def balance_blocks(self, blocks, losses, context):
        if self.needs_matrix:
            return super().balance_blocks(blocks, losses, context)
        weights, updates = self.task_weights(losses, context, None)
        weights = tf.cast(weights, tf.float32)
        return BalanceResult(block_weighted_sum(blocks, weights), weights, tuple(updates),
                             shared_weights=weights)
