"""keras_mtl: multi-task ranking models and gradient balancers for Keras 3 / TensorFlow."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_mtl import (  # noqa: E402
    balancers,
    data,
    datasets,
    diagnostics,
    features,
    gradients,
    layers,
    metrics,
    serving,
)
from keras_mtl.features import (  # noqa: E402
    Categorical,
    FeatureSpec,
    Hashed,
    IntegerId,
    MultiValued,
    Numeric,
    Sequence,
    Vector,
)
from keras_mtl.models import MultiTaskModel, load_model  # noqa: E402
from keras_mtl.tasks import Task  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Categorical",
    "FeatureSpec",
    "Hashed",
    "IntegerId",
    "MultiTaskModel",
    "MultiValued",
    "Numeric",
    "Sequence",
    "Task",
    "Vector",
    "balancers",
    "data",
    "datasets",
    "diagnostics",
    "gradients",
    "features",
    "layers",
    "load_model",
    "metrics",
    "serving",
]
