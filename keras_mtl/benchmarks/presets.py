"""Architectures and balancer specs by name: the one set the CLI (`train`, `bench`) and both
benchmarks build from, so that `--model ple` means the same network everywhere.

Kept free of TensorFlow/Keras at import time (they are imported by the builders): the CLI reads
`ARCHITECTURES` to build its argument parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keras_mtl.balancers.base import Balancer
    from keras_mtl.layers.backbone import Backbone
    from keras_mtl.models import MultiTaskModel

# In the CLI's order (its `--model` choices and help text list them so).
ARCHITECTURES = ("ple", "cgc", "mmoe", "shared-bottom", "dselect-mmoe", "omoe", "home", "pepnet",
                 "stem")
# Structure among the task heads (`keras-mtl train --task-graph`), over any of the above.
TASK_GRAPHS = ("aitm", "dbmtl")
# How tables and row labels name them.
TITLES = {"shared-bottom": "Shared-Bottom", "mmoe": "MMoE", "cgc": "CGC", "ple": "PLE",
          "dselect-mmoe": "MMoE (DSelect-k)", "omoe": "OMoE", "home": "HoME",
          "pepnet": "PEPNet", "stem": "STEM"}


def make_backbone(name: str, expert_units: Sequence[int], num_experts: int,
                  features: Any = None) -> Backbone:
    """The backbone called `name`, with `num_experts` as the total expert budget: MMoE gets all of
    them; CGC and PLE (2 levels) get half as shared experts (at least one) plus one per task;
    Shared-Bottom is one MLP of `expert_units`. `dselect-mmoe` is MMoE with DSelect-k gates at
    their defaults (k = 2, γ = 1, no entropy term: the official gate's defaults); OMoE gets all
    the experts under its one gate; HoME (one meta-task group: the preset cannot know the
    tasks' semantics) gets half as shared experts per level plus one group and one task expert,
    with its feature-gates (rank 4) and normalised Swish experts. PEPNet (it needs `features`,
    the model's spec) gates its towers (PPNet, `expert_units` wide) by every embedded feature
    and leaves EPNet off: which feature names the domain is the user's knowledge. STEM gets half
    the budget as shared experts and one expert per task on its own embeddings."""
    from keras_mtl import layers

    units = [int(u) for u in expert_units]
    # `max(1, ...)`: CGC/PLE refuse zero shared experts, so a budget of 1 still builds.
    shared = max(1, num_experts // 2)
    if name == "ple":
        return layers.PLE(num_levels=2, shared_experts=shared, task_experts=1, expert_units=units)
    if name == "cgc":
        return layers.CGC(shared_experts=shared, task_experts=1, expert_units=units)
    if name == "mmoe":
        return layers.MMoE(num_experts=num_experts, expert_units=units)
    if name == "shared-bottom":
        return layers.SharedBottom(units=units)
    if name == "dselect-mmoe":
        return layers.MMoE(num_experts=num_experts, expert_units=units, gate="dselect")
    if name == "omoe":
        return layers.OMoE(num_experts=num_experts, expert_units=units)
    if name == "home":
        return layers.HoME(shared_experts=shared, group_experts=1, task_experts=1,
                           expert_units=units)
    if name == "stem":
        return layers.STEM(num_shared_experts=shared, num_task_experts=1, expert_units=units)
    if name == "pepnet":
        if features is None:
            raise ValueError("The pepnet preset needs the feature spec (its priors).")
        priors = [n for n, _, embedded in features.encoded_layout() if embedded]
        return layers.PEPNet(prior_features=priors, tower_units=units)
    raise ValueError(f"Unknown model {name!r}; expected one of {ARCHITECTURES}.")


def make_task_graph(name: str, task_names: Sequence[str]) -> Any:
    """The task graph called `name` over the tasks in their order: `aitm` is AITM along
    `task_names` (each step transfers to the next; every step needs end-to-end binary labels),
    `dbmtl` is DBMTL where every task reads the relation outputs of all the tasks before it."""
    from keras_mtl import layers

    names = [str(n) for n in task_names]
    if name == "aitm":
        return layers.AITM(names)
    if name == "dbmtl":
        return layers.DBMTL({child: names[:k] for k, child in enumerate(names) if k})
    raise ValueError(f"Unknown task graph {name!r}; expected one of {TASK_GRAPHS}.")


def build_model(architecture: str, features: Any, tasks: Sequence[Any], expert_units: Sequence[int],
                num_experts: int, tower_units: Sequence[int] = (32,),
                task_graph: Any = None) -> MultiTaskModel:
    """A `MultiTaskModel` on `make_backbone(architecture, expert_units, num_experts)`, with
    `task_graph` (AITM, DBMTL) when given."""
    from keras_mtl.models import MultiTaskModel

    return MultiTaskModel(features=features, tasks=tasks,
                          backbone=make_backbone(architecture, expert_units, num_experts,
                                                 features),
                          tower_units=list(tower_units), task_graph=task_graph)


def parse_balancer(spec: str) -> tuple[str, dict]:
    """`"name"`, `"name@level"`, `"name*k"` or `"name@level*k"` (weights recomputed every k
    steps) → `(name, kwargs)`."""
    spec, _, every = spec.partition("*")
    name, _, level = spec.partition("@")
    kwargs: dict = {"level": level} if level else {}
    if every:
        kwargs["every"] = int(every)
    return name, kwargs


def make_balancer(spec: str, num_tasks: int) -> Balancer:
    """The balancer a spec names; `static` gets weights 1, 1/2, …, 1/K (with equal weights it
    would be `ew`)."""
    from keras_mtl import balancers

    name, kwargs = parse_balancer(spec)
    if name == "static":
        kwargs["weights"] = [1.0 / (k + 1) for k in range(num_tasks)]
    return balancers.get(name, **kwargs)


def balancer_label(spec: str) -> str:
    """A spec as a table row names it: the level is its own column, every-k is spelled out."""
    name, _, every = spec.partition("*")
    return name.partition("@")[0] + (f" (every {every})" if every else "")
