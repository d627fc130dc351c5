"""Cut points: torch.fx analysis of torchvision models (skip connections named) and `vcm layers`."""

from __future__ import annotations

import pytest
import torch
import torchvision

from vcm_plugin.cli import main
from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks.graph import analyse_cuts, check_cut


@pytest.fixture(scope="module")
def resnet18_cuts():
    return analyse_cuts(torchvision.models.resnet18(), torch.zeros(1, 3, 64, 64))


def test_stage_outputs_are_clean_cuts_with_shapes(resnet18_cuts) -> None:
    by_name = {c.name: c for c in resnet18_cuts}
    assert by_name["maxpool"].clean and by_name["maxpool"].shape == (1, 64, 16, 16)
    layer1 = check_cut(resnet18_cuts, "layer1", "resnet18")  # a module name: its last node
    assert layer1.name == "layer1.1.relu_1" and layer1.shape == (1, 64, 16, 16)
    assert by_name["fc"].shape == (1, 1000)


def test_a_cut_inside_a_residual_block_names_the_skip_tensor(resnet18_cuts) -> None:
    with pytest.raises(TaskModelError, match=r"layer1\.0\.conv1.*also needs \['maxpool'\]"):
        check_cut(resnet18_cuts, "layer1.0.conv1", "resnet18")
    with pytest.raises(TaskModelError, match="clean cut points"):
        check_cut(resnet18_cuts, "no.such.node", "resnet18")


def test_vcm_layers_lists_task_model_and_torchvision_cut_points(capsys) -> None:
    assert main(["layers", "cifar10-vgg", "--size", "32x32"]) == 0
    out = capsys.readouterr().out
    assert "block3                  1x112x4x4" in out and "fc                      1x10" in out
    assert main(["layers", "resnet18", "--size", "64x64", "--all"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.conv1" in out and "needs also: maxpool" in out
    assert main(["layers", "no-such-model"]) == 2
    assert "neither a task model" in capsys.readouterr().err


def test_vcm_layers_measures_the_value_range_at_a_cut(capsys, shared) -> None:
    """`--cut CUT --images FILES`: each tensor's [min, max] with the real weights, and the global range that
    fcm-vvc mode: ctc takes as value_range."""
    import numpy as np

    from vcm_plugin.images.io import read_image
    from vcm_plugin.tasks.registry import get_task_model

    images = sorted(str(p) for p in (shared / "data/cifar10/test/cat").glob("*.png"))[:5]
    assert main(["layers", "cifar10-vgg", "--cut", "block2", "--images", *images]) == 0
    out = capsys.readouterr().out
    model = get_task_model("cifar10-vgg")
    values = np.concatenate([model.front("block2", read_image(p)).tensor.numpy().ravel() for p in images])
    assert f"value_range: [{values.min():.6g}, {values.max():.6g}]   (over 5 image(s)" in out
    assert main(["layers", "cifar10-vgg", "--cut", "block2"]) == 2
    assert "--cut and --images go together" in capsys.readouterr().err
