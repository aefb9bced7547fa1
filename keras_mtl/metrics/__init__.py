from keras_mtl.metrics.auc import AUC
from keras_mtl.metrics.calibration import PCOC, ExpectedCalibrationError, LogLoss
from keras_mtl.metrics.factory import group_feature_of, make_metric, update_metric
from keras_mtl.metrics.gauc import GAUC
from keras_mtl.metrics.lifetime_value import DecileMAPE, NormalizedGini
from keras_mtl.metrics.ndcg import GroupNDCG
from keras_mtl.metrics.normalized_entropy import NormalizedEntropy

__all__ = ["AUC", "GAUC", "PCOC", "DecileMAPE", "ExpectedCalibrationError", "GroupNDCG", "LogLoss",
           "NormalizedEntropy", "NormalizedGini", "group_feature_of", "make_metric", "update_metric"]
