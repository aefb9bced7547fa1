from keras_mtl.features.encoder import FeatureEncoder
from keras_mtl.features.lists import PADDING
from keras_mtl.features.pooling import TargetAttention
from keras_mtl.features.spec import (
    Categorical,
    Feature,
    FeatureSpec,
    Hashed,
    IdList,
    IntegerId,
    MultiValued,
    Numeric,
    Sequence,
    Vector,
)

__all__ = ["PADDING", "Categorical", "Feature", "FeatureEncoder", "FeatureSpec", "Hashed", "IdList",
           "IntegerId", "MultiValued", "Numeric", "Sequence", "TargetAttention", "Vector"]
