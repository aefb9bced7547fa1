from keras_mtl.metrics.auc import AUC
from keras_mtl.metrics.factory import group_feature_of, make_metric
from keras_mtl.metrics.gauc import GAUC
from keras_mtl.metrics.normalized_entropy import NormalizedEntropy

__all__ = ["AUC", "GAUC", "NormalizedEntropy", "group_feature_of", "make_metric"]
