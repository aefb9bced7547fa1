"""Gradient balancers. `get(name, **hparams)` returns one; `available()` lists the names."""

from keras_mtl.balancers.base import (
    LEVELS,
    BalanceContext,
    Balancer,
    BalanceResult,
    Weighting,
)
from keras_mtl.balancers.equal import EqualWeighting, StaticWeighting
from keras_mtl.balancers.ple_schedule import PLESchedule
from keras_mtl.balancers.registry import available, get, register

__all__ = [
    "LEVELS",
    "BalanceContext",
    "BalanceResult",
    "Balancer",
    "EqualWeighting",
    "PLESchedule",
    "StaticWeighting",
    "Weighting",
    "available",
    "get",
    "register",
]
