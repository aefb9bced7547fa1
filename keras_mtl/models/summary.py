"""`MultiTaskModel.summary()`: the layers with their output shapes, the tasks, the balancer."""

from __future__ import annotations

import numpy as np

# What each kind's own loss is (Task.loss None), as a short name.
_KIND_LOSSES = {"binary": "bce", "regression": "mse", "multiclass": "softmax cross-entropy",
                "poisson": "poisson", "tweedie": "tweedie", "watch_time": "weighted logistic",
                "ziln": "ziln"}
# What a head serves, per kind.
_KIND_OUTPUTS = {"binary": "probability", "regression": "value", "multiclass": "probabilities",
                 "poisson": "mean", "tweedie": "mean", "watch_time": "expected time",
                 "ziln": "mean"}


def loss_name(task) -> str:
    """The task's loss in words: its `loss`, or its kind's own with the options that change it."""
    if task.esmm_parent is not None:
        return f"bce of p({task.esmm_parent})·p({task.name}) (ESMM)"
    if task.loss is not None:
        name = task.loss if isinstance(task.loss, str) else type(task.loss).__name__
    else:
        name = _KIND_LOSSES.get(task.kind, task.kind)
    options = []
    if task.kind == "tweedie":
        options.append(f"p={task.tweedie_power:g}")
    if task.pos_weight != 1.0:
        options.append(f"pos_weight={task.pos_weight:g}")
    if task.focal_gamma:
        options.append(f"focal γ={task.focal_gamma:g}")
    if task.label_smoothing:
        options.append(f"smoothing={task.label_smoothing:g}")
    if task.label_transform:
        options.append(task.label_transform)
    if task.label_scale != 1.0:
        options.append(f"label_scale={task.label_scale:g}")
    if task.group is not None:
        options.append(f"groups: {task.group}")
    return f"{name} ({', '.join(options)})" if options else name


def sample_space(task) -> str:
    if task.esmm_parent is not None:
        return f"all rows (ESMM under {task.esmm_parent})"
    return f"{task.sample_space} = 1" if task.sample_space else "all rows"


def task_rows(model) -> list[dict]:
    """One row per task: what `summary()` prints (also handy in a notebook as a DataFrame)."""
    rows = []
    for task, metrics in zip(model.tasks, model.step_metrics.task_metrics, strict=True):
        shape = "(None,)" if task.num_outputs == 1 else f"(None, {task.num_outputs})"
        rows.append({
            "task": task.name, "kind": task.kind, "loss": loss_name(task),
            "sample space": sample_space(task), "weight": f"{task.weight:g}",
            "metrics": ", ".join(m.name[len(task.name) + 1:] for m in metrics),
            "output": f"{_KIND_OUTPUTS.get(task.kind, 'value')} {shape}",
        })
    return rows


def layer_rows(model, expand_nested: bool = False) -> list[dict]:
    """The model's layers in data-flow order with their output shapes (batch: None), from one
    eager pass over the spec's example rows. The balancer is not a layer of the network: it is
    reported on its own line."""
    x = model._example_features()
    encoded = model.encoder(x)
    cut = model.backbone.trunk(encoded)
    task_repr, _ = model.backbone.heads(cut)
    towers = [tower(r) for tower, r in zip(model.towers, task_repr, strict=True)]
    logits = [out(t) for out, t in zip(model.logit_layers, towers, strict=True)]

    def shape(tensor) -> str:
        dims = ["None", *(str(d) for d in tensor.shape[1:])]
        return f"({', '.join(dims)})" if len(dims) > 1 else "(None,)"

    def shapes(tensors) -> str:
        described = [shape(t) for t in tensors]
        if len(set(described)) == 1 and len(described) > 1:
            return f"{len(described)} × {described[0]}"
        return ", ".join(described)

    rows = _row(model.encoder, shape(encoded), expand_nested)
    rows += _row(model.backbone, f"cut: {shapes(cut)}; per task: {shapes(task_repr)}",
                 expand_nested)
    rows += [r for layer, t in zip(model.towers, towers, strict=True)
             for r in _row(layer, shape(t), expand_nested)]
    rows += [r for layer, t in zip(model.logit_layers, logits, strict=True)
             for r in _row(layer, shape(t), expand_nested)]
    return rows


def _row(layer, output: str, expand_nested: bool, depth: int = 0) -> list[dict]:
    prefix = "  " * depth + ("└ " if depth else "")
    rows = [{"layer": f"{prefix}{layer.name} ({type(layer).__name__})",
             "output shape": output if not depth else "",
             "params": f"{layer.count_params():,}"}]
    if expand_nested:
        for sub in getattr(layer, "layers", None) or getattr(layer, "_layers", None) or []:
            rows += _row(sub, "", True, depth + 1)
    return rows


def table(rows: list[dict], columns: list[str], line_length: int | None = None) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("─" * min(line_length or 10_000, sum(widths.values()) + 2 * (len(columns) - 1)))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def summary_text(model, expand_nested: bool = False, line_length: int | None = None) -> str:
    balancer = model.balancer
    state = sum(int(np.prod(v.shape)) for v in balancer.weights)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    features = model.spec.names
    lines = [
        f'Model: "{model.name}" ({type(model).__name__}): {len(features)} features → '
        f"{type(model.backbone).__name__} → {len(model.tasks)} tasks",
        "",
        table(layer_rows(model, expand_nested), ["layer", "output shape", "params"], line_length),
        "",
        "Tasks",
        table(task_rows(model), ["task", "kind", "loss", "sample space", "weight", "metrics",
                                 "output"], line_length),
        "",
        f"Balancer: {balancer.name_in_registry or balancer.name} ({type(balancer).__name__}) at "
        f"the {balancer.level} level; {state:,} state value(s), not trained by the optimizer.",
        f"Total params: {total:,} (trainable {trainable:,}; non-trainable {total - trainable:,}: "
        "epoch counter, normalisation statistics, balancer state).",
    ]
    if getattr(model, "optimizer", None) is not None and model.optimizer.built:
        opt = sum(int(np.prod(v.shape)) for v in model.optimizer.variables)
        lines.append(f"Optimizer params: {opt:,} ({type(model.optimizer).__name__}).")
    return "\n".join(lines)
