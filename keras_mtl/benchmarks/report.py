"""What every benchmark writes the same way: its JSON file, the machine it ran on, table cells.

No TensorFlow at import time: `cpu_allocator_statistics` must be entered before TensorFlow
allocates anything, so the CLI imports this module first.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import platform
from collections.abc import Iterator
from typing import Any


def save_json(result: dict, path: str) -> None:
    """`result` as indented JSON; NumPy/TensorFlow scalars left in it are written as floats."""
    import numpy as np

    with open(path, "w") as handle:
        json.dump(result, handle, indent=2, default=lambda o: float(np.asarray(o)))


def save_text(text: str, path: str) -> None:
    """`text` and a final newline (the `--markdown` file)."""
    with open(path, "w") as handle:
        handle.write(text + "\n")


def cpu_count() -> int:
    """The cores this process may run on (a container's or `taskset`'s limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> dict:
    """The machine and library versions a result was measured with (a result's `machine`)."""
    import keras
    import tensorflow as tf

    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__}


# TensorFlow keeps allocator statistics on CPU (peak memory) only with its BFC allocator.
ALLOCATOR_FLAG = "TF_CPU_ALLOCATOR_USE_BFC"


@contextlib.contextmanager
def cpu_allocator_statistics() -> Iterator[None]:
    """Sets `TF_CPU_ALLOCATOR_USE_BFC=true` (unless set) for the block. TensorFlow reads it when it
    first allocates, so the block must start before that; the flag is removed again afterwards so
    that processes started later (e.g. by a test run) do not inherit it."""
    added = ALLOCATOR_FLAG not in os.environ
    os.environ.setdefault(ALLOCATOR_FLAG, "true")
    try:
        yield
    finally:
        if added:
            os.environ.pop(ALLOCATOR_FLAG, None)


def number(value: Any, pattern: str) -> str:
    """A table cell: `value` formatted with `pattern`, empty where there is no value (None or
    NaN: a ratio that is not defined for the row, a gain without a baseline)."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return ""
    return format(value, pattern)
