"""Optional dependencies: what each extra brings, and the error that names it when it is missing.

`pip install keras-mtl` trains, evaluates, exports and serves (REST bodies); the extras add
`[serving]` (tensorflow-serving-api: gRPC requests, warm-up files) and `[tutorials]` (matplotlib
for every `.plot()`, nbformat/nbclient/ipykernel to run the notebooks).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """`import module`, or an ImportError that says which extra provides it and for what."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{needed_for} needs {module.split('.')[0]!r}, which comes with the [{extra}] extra: "
            f"pip install 'keras-mtl[{extra}]'.") from error
