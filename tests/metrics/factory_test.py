import keras
import pytest

from keras_mtl.metrics import GAUC, NormalizedEntropy, make_metric


def test_names_are_prefixed_by_task():
    assert make_metric("auc", "click").name == "click_auc"
    assert isinstance(make_metric("ne", "click"), NormalizedEntropy)
    assert make_metric("mae", "time").name == "time_mae"
    assert make_metric(keras.metrics.Precision(name="p"), "click").name == "click_p"
    assert make_metric(GAUC(group_feature="uid"), "click").group_feature == "uid"


def test_unknown_and_ambiguous_metrics_fail_clearly():
    with pytest.raises(ValueError, match="unknown metric 'aucc'"):
        make_metric("aucc", "click")
    with pytest.raises(ValueError, match="GAUC needs to know the user feature"):
        make_metric("gauc", "click")
