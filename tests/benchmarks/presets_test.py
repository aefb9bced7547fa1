"""keras_mtl.benchmarks.presets: one set of architectures for the CLI and both benchmarks."""

import pytest

from keras_mtl import cli, datasets
from keras_mtl.benchmarks import presets, throughput


def _config(backbone) -> dict:
    config = backbone.get_config()
    config.pop("name")  # unique per instance
    return config


@pytest.mark.parametrize("architecture", presets.ARCHITECTURES)
def test_the_cli_and_throughput_build_the_same_backbone_for_a_name(architecture):
    assert cli.BACKBONES == presets.ARCHITECTURES  # `--model`'s choices are the presets
    data = datasets.make_synthetic(num_examples=200, seed=0)
    # `keras-mtl train --model A --num-experts 6 --expert-units 8` and a throughput row of A
    # with 6 experts × 8 units.
    trained = presets.build_model(architecture, data.features, data.tasks, expert_units=[8],
                                  num_experts=6, tower_units=[32])
    benched = throughput.build_model(architecture, data.features, data.tasks, experts=6, units=8)
    assert type(trained.backbone) is type(benched.backbone)
    assert _config(trained.backbone) == _config(benched.backbone)
    assert trained.count_params() == benched.count_params()


def test_the_expert_budget():
    assert presets.make_backbone("mmoe", [8], 6).num_experts == 6
    for name in ("cgc", "ple"):
        backbone = presets.make_backbone(name, [8], 6)
        assert (backbone.shared_experts, backbone.task_experts) == (3, 1)
        # A budget of one still builds (CGC/PLE refuse zero shared experts).
        assert presets.make_backbone(name, [8], 1).shared_experts == 1
    assert presets.make_backbone("ple", [8], 4).num_levels == 2
    assert _config(presets.make_backbone("shared-bottom", (16, 8), 4))["units"] == [16, 8]
    with pytest.raises(ValueError, match="Unknown model 'mmeo'"):
        presets.make_backbone("mmeo", [8], 4)


def test_balancer_specs():
    assert presets.parse_balancer("mgda") == ("mgda", {})
    assert presets.parse_balancer("ew@parameters") == ("ew", {"level": "parameters"})
    assert presets.balancer_label("mgda@parameters*3") == "mgda (every 3)"
    assert presets.make_balancer("ew@representation", 2).level == "representation"
    # Static weights 1, 1/2, 1/3: equal ones would make it `ew`.
    assert presets.make_balancer("static", 3).get_config()["weights"] == pytest.approx(
        [1.0, 0.5, 1 / 3])
