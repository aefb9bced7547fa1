"""keras_mtl: multi-task ranking models and gradient balancers for Keras 3 / TensorFlow.

Importing the package imports every submodule, so that every class is registered for `.keras`
loading right after `import keras_mtl`, whatever is imported next. Only the `keras-mtl` command
defers it to the first use of a public name (`km.MultiTaskModel`, `km.balancers`, ...): it parses
its arguments (`--help`, `--version`) without TensorFlow. TensorFlow's C++ start-up INFO lines are
left out when this package imports it first (`keras_mtl._startup`).
"""

import importlib as _importlib
import os as _os
import sys as _sys

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_SUBMODULES = ("balancers", "callbacks", "data", "datasets", "diagnostics", "features",
               "gradients", "layers", "metrics", "models", "serving", "tasks")
_NAMES = {
    "Categorical": "keras_mtl.features",
    "FeatureSpec": "keras_mtl.features",
    "Hashed": "keras_mtl.features",
    "IntegerId": "keras_mtl.features",
    "MultiValued": "keras_mtl.features",
    "Numeric": "keras_mtl.features",
    "Sequence": "keras_mtl.features",
    "Vector": "keras_mtl.features",
    "MultiTaskModel": "keras_mtl.models",
    "load_model": "keras_mtl.models",
    "Task": "keras_mtl.tasks",
}

__all__ = sorted([*_NAMES, *(m for m in _SUBMODULES if m not in ("models", "tasks"))])


def _load_all() -> None:
    """Imports every submodule (registering every class) and binds the public names."""
    from keras_mtl._startup import import_tensorflow

    import_tensorflow()  # without TensorFlow's C++ start-up lines
    for module in _SUBMODULES:
        globals()[module] = _importlib.import_module(f"keras_mtl.{module}")
    for name, module in _NAMES.items():
        globals()[name] = getattr(_importlib.import_module(module), name)


def __getattr__(name: str):
    if name in _NAMES or name in _SUBMODULES:
        _load_all()
        return globals()[name]
    raise AttributeError(f"module 'keras_mtl' has no attribute {name!r}")


def __dir__() -> list:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})


_PROGRAM = _os.path.splitext(_os.path.basename(_sys.argv[0] if _sys.argv else ""))[0]
if _PROGRAM != "keras-mtl":
    # Eager everywhere but the command line: a script that does `import keras_mtl`, then
    # `keras.models.load_model(...)` without touching a keras_mtl name, finds every class.
    _load_all()
