"""keras_mtl.optional: a missing extra is named in the error, with the install command."""

import sys

import pytest

from keras_mtl.optional import require


def test_a_present_module_is_returned():
    assert require("json", "serving", "x") is sys.modules["json"]


def test_a_missing_module_names_its_extra_and_what_needed_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"GradientReport\.plot needs 'matplotlib', which comes "
                                          r"with the \[tutorials\] extra: pip install "
                                          r"'keras-mtl\[tutorials\]'"):
        require("matplotlib.pyplot", "tutorials", "GradientReport.plot")
