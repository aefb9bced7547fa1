"""Balancer lookup by name: `keras_mtl.balancers.get("ew")`."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from keras_mtl.balancers.base import Balancer
from keras_mtl.balancers.every import EveryK
from keras_mtl.balancers.per_group import PerGroup

_REGISTRY: dict[str, type[Balancer]] = {}
# Other libraries' names for a registered method with the same maths (TorchJD's aggregators):
# `get` resolves them, `available` lists only the registered names.
_ALIASES: dict[str, str] = {
    "sum": "ew",          # TorchJD `Sum`: Σ_k g_k
    "constant": "static",  # TorchJD `Constant(weights)`: Σ_k w_k g_k
    "random": "rlw",       # TorchJD `Random`: softmax(z) @ J, z ~ N(0, I) each step
}


def register(name: str):
    """Class decorator: registers a balancer under `name` and for `.keras` serialisation."""

    def decorator(cls):
        cls.name_in_registry = name
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_mtl")(cls)

    return decorator


def available() -> list[str]:
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    """Other libraries' names that `get` accepts, and the registered name each resolves to."""
    return dict(_ALIASES)


def get(balancer: str | Balancer | dict | None = None, **hparams: Any) -> Balancer:
    """Returns a balancer from a registered name (with hyper-parameters), an instance or a config.

    `None` gives equal weighting (`"ew"`). TorchJD's names `sum`, `constant` and `random` resolve
    to `ew`, `static` and `rlw` (`aliases()`), whose maths they are. Unknown names and unknown
    hyper-parameters raise a `ValueError` that lists what is valid. `every=k` (k > 1), accepted
    by every weighting, recomputes the weights only every k steps and reuses them in between
    (`EveryK`). `groups=[...]`, accepted by every parameter-level balancer, balances each group of
    shared tensors with its own copy of the balancer (`PerGroup`).
    """
    if balancer is None:
        balancer = "ew"
    if isinstance(balancer, Balancer):
        if hparams:
            raise ValueError("Hyper-parameters go with a balancer name, not an instance.")
        return balancer
    if isinstance(balancer, dict):
        return keras.saving.deserialize_keras_object(balancer)
    if not isinstance(balancer, str):
        raise TypeError(f"A balancer is a name, a Balancer or a config dict; got {balancer!r}.")
    key = balancer.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"Unknown balancer {balancer!r}; valid names: {available()} "
                         f"(and the aliases {sorted(_ALIASES)}).")
    cls = _REGISTRY[key]
    every = hparams.pop("every", None)
    groups = hparams.pop("groups", None)
    if groups is not None:
        hparams.setdefault("level", "parameters")
    accepted = _accepted_arguments(cls)
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise ValueError(
            f"Balancer {key!r} has no hyper-parameter(s) {unknown}; it accepts {sorted(accepted)}."
        )
    balancer = cls(**hparams)
    if groups is not None:
        if every is not None and int(every) != 1:
            raise ValueError("groups and every cannot be combined yet.")
        return PerGroup(balancer, groups)
    if every is not None and int(every) != 1:
        return EveryK(balancer, every)
    return balancer


def _accepted_arguments(cls) -> set[str]:
    accepted = set()
    for klass in cls.__mro__:
        if klass in (Balancer, keras.layers.Layer) or not issubclass(klass, Balancer):
            continue
        params = inspect.signature(klass.__init__).parameters
        accepted |= {p for p in params if p not in ("self", "kwargs", "args")}
    return accepted | {"level"}
