"""`gradient_report` decides on the synthetic data where the answer is known."""

import matplotlib
import numpy as np
import pytest

import keras_mtl as km

matplotlib.use("Agg")


def _trained(correlation: float, label_scale: float = 1.0):
    data = km.datasets.make_synthetic(num_examples=2000, correlation=correlation, dim=10, seed=0)
    train = data.train.copy()
    train["y2"] *= label_scale
    model = km.MultiTaskModel(data.features, data.tasks, km.layers.SharedBottom(units=[16]),
                              tower_units=[8])
    model.compile("adam")
    # At initialisation the towers are random and so are the cosines; a short ew run first.
    model.fit(train, epochs=3, batch_size=64, verbose=0)
    return model, train


@pytest.mark.parametrize("correlation, label_scale, verdict", [
    (0.95, 1.0, "ew"),          # aligned tasks of the same size
    (-0.9, 1.0, "direction"),   # conflicting tasks
    (0.95, 30.0, "magnitude"),  # aligned, one task's labels (and gradients) 30× larger
])
def test_the_recommendation_on_synthetic_data(correlation, label_scale, verdict):
    model, train = _trained(correlation, label_scale)
    report = km.diagnostics.gradient_report(model, train, batches=8, batch_size=256)
    assert report.verdict == verdict, str(report)
    assert report.batches == 8 and list(report.tasks.index) == ["y1", "y2"]
    assert list(report.pairs.index) == ["y1 ~ y2"]
    if verdict == "magnitude":
        assert report.tasks.loc["y2", "ratio_to_smallest"] > 10
        assert "magnitude method" in report.recommendation
    if verdict == "direction":
        assert report.pairs.loc["y1 ~ y2", "negative_share"] >= 0.5
    assert "Rule:" in report.recommendation and "Rule:" in str(report)


def test_report_is_labelled_and_plots():
    from tests.helpers import small_batch, small_model

    x, y = small_batch(64)
    model = small_model()
    report = km.diagnostics.gradient_report(model, x, y, level="parameters", batches=3,
                                            batch_size=16)
    assert report.norms.shape == (3, 2) and report.cosine.shape == (3, 2, 2)
    assert list(report.cosines.columns) == ["click", "watch_time"]
    np.testing.assert_allclose(np.diag(report.cosines), 1.0, rtol=1e-6)
    assert report.pairs.loc["click ~ watch_time", "cosine_std"] >= 0
    figure = report.plot()
    assert len(figure.axes) == 2 and figure.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="level"):
        km.diagnostics.gradient_report(model, x, y, level="cut")
