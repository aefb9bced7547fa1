from keras_mtl.features.encoder import FeatureEncoder
from keras_mtl.features.spec import (
    Categorical,
    Feature,
    FeatureSpec,
    Hashed,
    IntegerId,
    Numeric,
)

__all__ = ["Categorical", "Feature", "FeatureEncoder", "FeatureSpec", "Hashed", "IntegerId", "Numeric"]
