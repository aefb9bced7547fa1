"""The registry: what `balancers.get` refuses, and how its errors name what is valid."""

import pytest

from keras_mtl import balancers


def test_unknown_names_and_hyperparameters_list_what_is_valid():
    with pytest.raises(ValueError, match=r"Unknown balancer 'mgdaa'; valid names: \[.*'ew'"):
        balancers.get("mgdaa")
    with pytest.raises(ValueError, match=r"no hyper-parameter\(s\) \['wieghts'\].*'weights'"):
        balancers.get("static", wieghts=[1, 2])
    with pytest.raises(ValueError, match="runs at level"):
        balancers.get("ew", level="pixels")


@pytest.mark.parametrize("name, hparams, message", [
    ("gradcraft", {"tau": 2.0}, r"gradcraft tau must lie in \[0.0, 1.0\], got 2.0"),
    ("metabalance", {"beta": 1.0}, r"metabalance beta must lie in \[0.0, 1.0\), got 1.0"),
    ("multibalance", {"norm": "row"}, r"multibalance norm must be one of \('batch', 'example'\)"),
    ("cograd", {"eta": 0.0}, r"cograd eta .* must be > 0"),
    ("cograd", {"level": "representation"}, r"runs at level\(s\) \('parameters',\)"),
    ("metabalance", {"target_task": "nope"}, None),
])
def test_bad_hyperparameters_name_the_balancer_and_argument(name, hparams, message):
    if message is None:  # a task name is checked when the balancer meets the model's tasks
        with pytest.raises(ValueError, match=r"unknown task 'nope'; the tasks are \['a', 'b'\]"):
            balancers.get(name, **hparams).build(2, task_names=["a", "b"])
        return
    with pytest.raises(ValueError, match=message):
        balancers.get(name, **hparams)
