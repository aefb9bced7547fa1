"""Balance each group of shared parameters separately (TorchJD's grouping example)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.linalg import split_segments


@keras.saving.register_keras_serializable(package="keras_mtl")
class PerGroup(Balancer):
    """Wraps a parameter-level balancer: one independent copy of it per group of shared tensors.

    Get one with `balancers.get(name, groups=[...], ...)`. TorchJD's "grouping" example aggregates
    the Jacobian of each group of parameters on its own (e.g. the embeddings, the experts and the
    bottom), so a conflict inside one group does not shrink the update of another. Here the
    parameter-level matrix `J = [J_1 | … | J_S]` (one column block per balanced tensor) is split
    by `groups`, each group's `[K, D_g]` block goes to its own copy of the balancer (own state,
    built for that group's tensors and width), and the group updates are put back in place:

        d = [A_1(J_{G_1}) | … | A_n(J_{G_n})]        (in the tensors' own order)

    A group is either a list of segment indices (the model's balanced tensors, in
    `model.partition.balanced` order) or a string: every tensor whose variable path contains it
    (paths look like `"multi_task_model/m_mo_e/experts/kernel_0"`: `"experts/"`, `"encoder/"`,
    `"kernel"`). Tensors in no group form one more group at the end. A tensor in two
    groups, or a group that matches nothing, is an error. Heads are trained with the mean of the
    groups' task weights, and so are embedding tables left out of the matrix (not a weighting as
    a whole). Parameter level only: the cut of the representation level has no parameter groups.
    The model hands the tensors' paths and sizes over before building (`bind_segments`); for the
    functional core (`aggregate`), call `bind_segments(sizes=...)` yourself.
    """

    name_in_registry = "per_group"
    supported_levels = ("parameters",)
    default_level = "parameters"

    def __init__(self, balancer: Balancer | dict, groups: Sequence,
                 segment_paths: Sequence[str] | None = None,
                 segment_sizes: Sequence[int] | None = None, **kwargs):
        inner = balancer
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        if not isinstance(inner, Balancer):
            raise TypeError(f"PerGroup wraps a Balancer instance, got {balancer!r}; for a name use "
                            "keras_mtl.balancers.get(name, groups=[...]).")
        kwargs.pop("level", None)
        kwargs.setdefault("name", f"{inner.name}_per_group")
        super().__init__(level="parameters", **kwargs)
        if inner.level != "parameters":
            raise ValueError(f"groups split the parameter-level matrix; balancer "
                             f"{inner.name_in_registry!r} runs at level {inner.level!r}.")
        if inner.needs_post_step_losses or inner.needs_hessian_term:
            raise ValueError(f"Balancer {inner.name_in_registry!r} needs extra passes over all "
                             "parameters; it cannot run per group.")
        if isinstance(groups, str) or not groups:
            raise ValueError(f"groups must be a non-empty list of groups, got {groups!r}.")
        self.groups = [g if isinstance(g, str) else [int(i) for i in g] for g in groups]
        self.inner = inner
        self.bind_segments(segment_paths, segment_sizes)

    def bind_segments(self, paths: Sequence[str] | None = None,
                      sizes: Sequence[int] | None = None) -> None:
        """The balanced tensors' variable paths and sizes (the model calls this before build)."""
        self.segment_paths = None if paths is None else list(paths)
        self.segment_sizes = None if sizes is None else [int(s) for s in sizes]

    def resolved_groups(self, num_segments: int) -> list[list[int]]:
        """The groups as segment indices, the leftover tensors last."""
        owner: dict[int, int] = {}
        resolved = []
        for g, group in enumerate(self.groups):
            if isinstance(group, str):
                if self.segment_paths is None:
                    raise ValueError(f"per_group group {group!r} is a path pattern, but no tensor "
                                     "paths were bound (build through MultiTaskModel).")
                indices = [i for i, path in enumerate(self.segment_paths) if group in path]
            else:
                indices = group
            if not indices:
                raise ValueError(f"per_group group {group!r} matches no balanced tensor"
                                 + (f"; the paths are {self.segment_paths}." if self.segment_paths
                                    else "."))
            for i in indices:
                if not 0 <= i < num_segments:
                    raise ValueError(f"per_group segment index {i} is out of range for "
                                     f"{num_segments} balanced tensors.")
                if i in owner:
                    raise ValueError(f"per_group: tensor {i} is in groups {owner[i]} and {g}.")
                owner[i] = g
            resolved.append(sorted(indices))
        rest = [i for i in range(num_segments) if i not in owner]
        return resolved + ([rest] if rest else [])

    def build(self, num_tasks, task_names=None, num_segments=None, num_columns=None):
        num_segments = 1 if num_segments is None else int(num_segments)
        if self.segment_sizes is None:
            if num_segments == 1 and num_columns is not None:
                self.segment_sizes = [int(num_columns)]
            else:
                raise ValueError("per_group needs the balanced tensors' sizes: build it through "
                                 "MultiTaskModel, or call bind_segments(sizes=...) first.")
        if len(self.segment_sizes) != num_segments:
            raise ValueError(f"per_group was bound to {len(self.segment_sizes)} tensors but built "
                             f"for {num_segments}.")
        self.index_groups = self.resolved_groups(num_segments)
        self.copies = []
        for g, indices in enumerate(self.index_groups):
            # Fresh, unbuilt copies from the plain config (a serialized config would carry the
            # first group's build shapes); the first group's is the wrapped instance itself,
            # which a `.keras` load has already built for it.
            copy = self.inner if g == 0 else type(self.inner).from_config(self.inner.get_config())
            columns = sum(self.segment_sizes[i] for i in indices)
            if not copy.built:
                copy.build(num_tasks, task_names, len(indices), columns)
            elif (copy.num_tasks, copy.num_segments) != (num_tasks, len(indices)):
                raise ValueError(f"per_group: the wrapped balancer was built for "
                                 f"{copy.num_tasks} tasks and {copy.num_segments} tensors, its "
                                 f"group has {num_tasks} tasks and {len(indices)} tensors.")
            self.copies.append(copy)
        super().build(num_tasks, task_names, num_segments, num_columns)

    def balance(self, matrix, losses, context):
        blocks = split_segments(matrix, self.segment_sizes)
        combined: list = [None] * len(blocks)
        task_weights, updates = [], []
        for copy, indices in zip(self.copies, self.index_groups, strict=True):
            sizes = tuple(self.segment_sizes[i] for i in indices)
            sub = tf.concat([blocks[i] for i in indices], axis=1)
            result = copy.balance(sub, losses, context._replace(
                layout=context.layout._replace(segment_sizes=sizes)))
            for i, part in zip(indices, tf.split(result.combined, list(sizes)), strict=True):
                combined[i] = tf.cast(part, matrix.dtype)
            task_weights.append(tf.cast(result.task_weights, tf.float32))
            updates.extend(result.updates)
        return BalanceResult(tf.concat(combined, axis=0), tf.add_n(task_weights) / len(task_weights),
                             tuple(updates))

    def get_config(self):
        config = super().get_config()
        config.pop("level", None)
        return {**config, "balancer": keras.saving.serialize_keras_object(self.inner),
                "groups": self.groups, "segment_paths": self.segment_paths,
                "segment_sizes": self.segment_sizes}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
