"""torchvision backend: label mapping, output conversion, offline weights errors, the safe loading path.

No torchvision checkpoint exists offline, so the networks here are randomly initialised
(weights=None, seeded) or loaded from a state dict the test writes: the tests check the
plumbing (shapes, dtypes, bounds, label space, RLE, no network access), not accuracy.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.hub
from pycocotools import mask as mask_utils
from torchvision.models import get_model, get_model_weights

from vcm_plugin.errors import InvalidImageError, TaskModelError, VcmError, WeightsNotFoundError
from vcm_plugin.tasks import get_task_model, task_model_names
from vcm_plugin.tasks.coco_names import COCO_CATEGORIES
from vcm_plugin.tasks.predictions import Detections
from vcm_plugin.tasks.torchvision_backend import (
    TorchvisionDetector,
    TorchvisionSegmenter,
    coco_category_ids,
    hub_checkpoint_path,
    outputs_to_detections,
)

torch.set_num_threads(2)
COCO_IDS = set(COCO_CATEGORIES)


@pytest.fixture(scope="module")
def coco_image(shared: Path) -> np.ndarray:
    """A real COCO val2017 image, 3x downscaled (about 213x160): small enough for fast CPU runs."""
    from vcm_plugin import read_image

    image = read_image(shared / "data" / "coco" / "val2017" / "000000000139.jpg")
    return np.ascontiguousarray(image[::3, ::3])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download path raise, and record any attempt."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(str(args[:1]))
        raise AssertionError(f"network access attempted: {args[:1]}")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def check_detections(det: Detections, image: np.ndarray, masks: bool) -> None:
    height, width = image.shape[:2]
    assert isinstance(det, Detections)
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
    assert det.scores.dtype == np.float32 and det.labels.dtype == np.int64
    assert len(det) > 0
    assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= width).all()
    assert (det.boxes[:, 1] >= 0).all() and (det.boxes[:, 3] <= height).all()
    assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()
    assert ((det.scores >= 0) & (det.scores <= 1)).all()
    assert set(det.labels.tolist()) <= COCO_IDS
    assert (det.masks is not None) == masks


def test_index_to_coco_id_by_name() -> None:
    categories = get_model_weights("fasterrcnn_resnet50_fpn").COCO_V1.meta["categories"]
    ids = coco_category_ids(categories)
    assert ids[categories.index("person")] == 1
    assert ids[categories.index("traffic light")] == 10
    assert ids[categories.index("toothbrush")] == 90
    assert ids[0] == 0 and ids[categories.index("N/A")] == 0
    assert sorted(ids[ids > 0].tolist()) == sorted(COCO_IDS)  # all 80 classes, each once
    with pytest.raises(TaskModelError, match="'hotdog stand'"):
        coco_category_ids(["__background__", "person", "hotdog stand"])


def test_output_conversion_drops_background_and_clips() -> None:
    ids = coco_category_ids(get_model_weights("fasterrcnn_resnet50_fpn").COCO_V1.meta["categories"])
    output = {
        "boxes": torch.tensor([[-5.0, 2, 50, 40], [1, 1, 2, 2], [3, 3, 300, 90], [0, 0, 1, 1], [0, 0, 5, 5]]),
        "scores": torch.tensor([0.9, 0.8, 0.3, 0.7, 0.6]),
        "labels": torch.tensor([1, 0, 90, 12, 10]),  # person, background, toothbrush, N/A, traffic light
    }
    det = outputs_to_detections(output, ids, (80, 100))
    assert det.labels.tolist() == [1, 90, 10]
    np.testing.assert_allclose(det.boxes, [[0, 2, 50, 40], [3, 3, 100, 80], [0, 0, 5, 5]])
    np.testing.assert_allclose(det.scores, [0.9, 0.3, 0.6])
    assert outputs_to_detections(output, ids, (80, 100), score_threshold=0.5).labels.tolist() == [1, 10]

    rng = np.random.default_rng(0)
    probs = rng.random((5, 1, 80, 100)).astype(np.float32)
    det = outputs_to_detections({**output, "masks": torch.from_numpy(probs)}, ids, (80, 100), mask_threshold=0.7)
    assert det.masks is not None and len(det.masks) == 3
    decoded = mask_utils.decode([{**m, "counts": m["counts"].encode()} for m in det.masks])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), probs[[0, 2, 4], 0] > 0.7)
    assert all(isinstance(m["counts"], str) and m["size"] == [80, 100] for m in det.masks)
    with pytest.raises(TaskModelError, match="no masks"):
        outputs_to_detections(output, ids, (80, 100), mask_threshold=0.5)


# Random-init heads score everything low: the models' own score floors are lowered so that boxes come out,
# and the R-CNN proposals are cut to 50 to keep NMS fast on 2 CPU cores.
RCNN_FAST = {"min_size": 160, "max_size": 320,
             "model_kwargs": {"box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 50, "box_detections_per_img": 20}}
FCOS_FAST = {"min_size": 160, "max_size": 320, "model_kwargs": {"score_thresh": 0.0}}


def test_faster_rcnn_random_init(coco_image: np.ndarray, no_network: list[str]) -> None:
    detector = get_task_model("torchvision-detection", architecture="fasterrcnn_mobilenet_v3_large_fpn", weights=None,
                              **RCNN_FAST)
    det = detector.predict(coco_image)
    check_detections(det, coco_image, masks=False)
    assert detector.identity()["weights"] == {"random_init_seed": 0}
    assert not no_network


def test_fcos_random_init_is_seeded_and_score_threshold_filters(coco_image: np.ndarray,
                                                                  no_network: list[str]) -> None:
    a = TorchvisionDetector(architecture="fcos_resnet50_fpn", weights=None, **FCOS_FAST).predict(coco_image)
    detector = TorchvisionDetector(architecture="fcos_resnet50_fpn", weights=None, **FCOS_FAST)
    b = detector.predict(coco_image)
    check_detections(b, coco_image, masks=False)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(np.unique(b.scores)) > 1
    detector.score_threshold = float(np.median(b.scores))
    high = detector.predict(coco_image)
    assert 0 < len(high) < len(b) and (high.scores >= detector.score_threshold).all()
    assert not no_network


def test_mask_rcnn_masks_are_rle_at_image_size(coco_image: np.ndarray, no_network: list[str]) -> None:
    segmenter = get_task_model("torchvision-segmentation", weights=None, **RCNN_FAST)
    assert segmenter.task == "segmentation" and segmenter.architecture == "maskrcnn_resnet50_fpn"
    det = segmenter.predict(coco_image)
    check_detections(det, coco_image, masks=True)
    height, width = coco_image.shape[:2]
    for rle in det.masks:
        assert rle["size"] == [height, width] and isinstance(rle["counts"], str)
        assert mask_utils.decode({**rle, "counts": rle["counts"].encode()}).shape == (height, width)
    assert sum(mask_utils.area([{**m, "counts": m["counts"].encode()} for m in det.masks])) > 0
    again = Detections.from_json(det.to_json())
    assert again.masks == det.masks
    assert not no_network


RCNN_CUTS = ["input", *(f"body.{c}" for c in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                 "layer4")), "fpn"]


@pytest.mark.parametrize(("name", "architecture"), [("torchvision-segmentation", "maskrcnn_resnet50_fpn"),
                                                    ("torchvision-detection", "fasterrcnn_resnet50_fpn")])
def test_rcnn_front_then_run_from_equals_the_whole_model_at_every_cut_point(coco_image: np.ndarray, name: str,
                                                                           architecture: str) -> None:
    """Every body child and the FPN: the value carries what the rest reads, and the split run is exact."""
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from vcm_plugin.splitting.adapter import split_adapter

    model = get_task_model(name, architecture=architecture, weights=None, **{**RCNN_FAST, "max_size": 320,
                                                                                 "min_size": 320})
    whole = model.predict(coco_image)
    assert model.cut_points() == RCNN_CUTS
    values = {}
    for cut in RCNN_CUTS[1:]:
        values[cut] = model.front(cut, coco_image)
        split = model.run_from(cut, values[cut])
        assert len(split) == len(whole) > 0, cut
        np.testing.assert_array_equal(split.boxes, whole.boxes, err_msg=cut)
        np.testing.assert_array_equal(split.scores, whole.scores, err_msg=cut)
        np.testing.assert_array_equal(split.labels, whole.labels, err_msg=cut)
        assert split.masks == whole.masks and (whole.masks is not None) == (name == "torchvision-segmentation"), cut
    assert list(values["body.conv1"].tensors) == ["conv1"] and list(values["body.layer1"].tensors) == ["layer1"]
    assert list(values["body.layer3"].tensors) == ["layer1", "layer2", "layer3"]  # the FPN reads layer1, layer2
    assert list(values["fpn"].tensors) == model.adapter().names("fpn") == ["0", "1", "2", "3", "pool"]
    with pytest.raises(TaskModelError, match=r"'fpn' needs a CutValue of tensors \['0'"):
        model.run_from("fpn", values["body.layer3"])
    for cut in ("fpn", "body.layer2"):
        with pytest.raises(TaskModelError, match=f"{cut!r} carries .* tensors.*fcm-vvc"):
            split_adapter(model, cut)
    assert split_adapter(model, "body.layer1").cut == "body.layer1"
    with pytest.raises(TaskModelError, match=r"no cut point 'fpn2'; nearest: \['fpn'\]"):
        model.front("fpn2", coco_image)
    model.network().backbone.fpn.extra_blocks = LastLevelP6P7(256, 256)
    with pytest.raises(TaskModelError, match="LastLevelP6P7 are not known"):
        model.adapter().names("fpn")


def test_vcm_layers_lists_rcnn_cut_points_without_weights(capsys) -> None:
    """The DEFAULT weights are not cached offline: `vcm layers` builds the network with random weights."""
    from vcm_plugin.cli import main

    assert main(["layers", "torchvision-detection", "--size", "64x96", "--param", "min_size=64",
                 "--param", "max_size=96"]) == 0
    out = capsys.readouterr().out
    assert "body.layer1             1x256x16x24\n" in out
    assert "body.layer2             {layer1: 1x256x16x24, layer2: 1x512x8x12}" in out
    assert "fpn                     {0: 1x256x16x24, 1: 1x256x8x12, 2: 1x256x4x6, 3: 1x256x2x3, pool: 1x256x1x2}" in out


def test_missing_weights_offline_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        coco_image: np.ndarray, no_network: list[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    detector = TorchvisionDetector(architecture="fasterrcnn_resnet50_fpn")  # weights="DEFAULT"
    with pytest.raises(WeightsNotFoundError) as info:
        detector.predict(coco_image)
    message = str(info.value)
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "offline" in message
    assert not no_network
    ident = detector.identity()  # describing the model needs no weights
    assert ident["weights"]["url"].endswith("/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    assert ident["params"]["architecture"] == "fasterrcnn_resnet50_fpn"


def test_missing_weights_file_goes_through_find_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         coco_image: np.ndarray) -> None:
    monkeypatch.setenv("VCM_WEIGHTS", str(tmp_path))
    detector = TorchvisionDetector(architecture="ssdlite320_mobilenet_v3_large", weights_file="nothing_here.pth")
    with pytest.raises(WeightsNotFoundError, match="nothing_here.pth") as info:
        detector.predict(coco_image)
    assert str(tmp_path) in str(info.value)


def test_cached_file_with_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                coco_image: np.ndarray, no_network: list[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    detector = TorchvisionDetector(architecture="ssdlite320_mobilenet_v3_large", weights="COCO_V1")
    path = hub_checkpoint_path(detector.weights_enum().url)
    assert path == tmp_path / "hub" / "checkpoints" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the checkpoint")
    with pytest.raises(TaskModelError, match="SHA-256 .* does not start with a79551df"):
        detector.predict(coco_image)
    assert not no_network


def test_weights_file_builds_like_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              coco_image: np.ndarray, no_network: list[str]) -> None:
    """A state dict from a file goes into torchvision's own pretrained-weights builder, loaded weights_only."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from vcm_plugin.hashing import file_sha256

    torch.manual_seed(1)
    source = get_model("fasterrcnn_mobilenet_v3_large_fpn", weights=None, weights_backbone=None)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "my_frcnn.pth")
    monkeypatch.setenv("VCM_WEIGHTS", str(tmp_path))
    detector = TorchvisionDetector(architecture="fasterrcnn_mobilenet_v3_large_fpn", weights="COCO_V1",
                                   weights_file="my_frcnn.pth", **RCNN_FAST)
    check_detections(detector.predict(coco_image), coco_image, masks=False)
    net = detector._net
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())  # the pretrained configuration
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    enum_cls = type(detector.weights_enum())
    assert "get_state_dict" not in vars(enum_cls)  # the build-time hook is gone
    assert detector.identity()["weights"]["sha256"] == file_sha256(tmp_path / "my_frcnn.pth")
    assert not no_network


def test_bad_parameters_are_refused(coco_image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="keypointrcnn_resnet50_fpn"):
        TorchvisionDetector(architecture="keypointrcnn_resnet50_fpn")
    with pytest.raises(ValueError, match="predicts no masks"):
        TorchvisionSegmenter(architecture="fasterrcnn_resnet50_fpn")
    with pytest.raises(ValueError, match="fixed size"):
        TorchvisionDetector(architecture="ssd300_vgg16", min_size=200)
    with pytest.raises(ValueError, match="COCO_V1"):
        TorchvisionDetector(weights="IMAGENET1K_V2")
    with pytest.raises(VcmError, match="torchvision-detection"):
        get_task_model("torchvision-detection", architecture="resnet50")
    detector = TorchvisionDetector(architecture="ssdlite320_mobilenet_v3_large", weights=None)
    with pytest.raises(TaskModelError, match="cut point"):
        detector.run_from("backbone.body.layer2", coco_image)
    with pytest.raises(InvalidImageError):
        detector.predict(coco_image.astype(np.float32))
    assert detector._net is None  # validation happens before any build


def test_registered_with_categories() -> None:
    assert {"torchvision-detection", "torchvision-segmentation"} <= set(task_model_names())
    detector = TorchvisionDetector()
    assert detector.task == "detection" and detector.categories == COCO_CATEGORIES
