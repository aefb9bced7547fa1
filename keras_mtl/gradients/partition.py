"""Which trainable variables are shared (balanced) and which belong to one task's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class VariablePartition(NamedTuple):
    """A model's trainable variables by the role they play in balancing.

    - `variables`: every trainable variable, in the model's order (gradients are returned so).
    - `dense_shared`: shared dense parameters (the trunk, dense feature layers).
    - `tables`: shared embedding tables (their gradients are sparse).
    - `heads`: task-specific parameters (towers, logits, a backbone's per-task layers); they are
      trained on `Σ_k w_k L_k` with the balancer's task weights.
    - `dense_tables`: True when the tables are densified into the parameter-level matrix like
      every other shared parameter (costs vocabulary × dim per task); False leaves them out of it
      and updates them with `Σ_k w_k ∇L_k` (the balancer's shared weights).
    """

    variables: tuple
    dense_shared: tuple
    tables: tuple
    heads: tuple
    dense_tables: bool = False

    @property
    def shared(self) -> tuple:
        return self.dense_shared + self.tables

    @property
    def balanced(self) -> tuple:
        """The shared variables whose task gradients form the parameter-level matrix."""
        return self.dense_shared + self.tables if self.dense_tables else self.dense_shared

    @property
    def unbalanced_tables(self) -> tuple:
        """Embedding tables outside the parameter-level matrix (updated with the weighted sum)."""
        return () if self.dense_tables else self.tables


def partition_variables(variables: Sequence, shared: Sequence, heads: Sequence,
                        tables: Sequence, dense_tables: bool = False) -> VariablePartition:
    """Splits `shared` into dense parameters and embedding `tables`; a variable that is also in
    `heads` counts as a head's (a backbone's per-task layers are inside the backbone)."""
    head_ids = {id(v) for v in heads}
    table_ids = {id(v) for v in tables}
    shared = [v for v in shared if id(v) not in head_ids]
    return VariablePartition(
        variables=tuple(variables),
        dense_shared=tuple(v for v in shared if id(v) not in table_ids),
        tables=tuple(v for v in shared if id(v) in table_ids),
        heads=tuple(heads),
        dense_tables=bool(dense_tables),
    )
