"""detectron2 backend: the package works without detectron2, and Instances convert to COCO-id Detections."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks import get_task_model
from vcm_plugin.tasks.detectron2_backend import (
    detectron2_available,
    instances_to_detections,
    is_segmentation_config,
)

COCO80_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
              33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
              60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


@pytest.fixture
def no_detectron2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import detectron2`` fail, whether or not it is installed here."""
    monkeypatch.setitem(sys.modules, "detectron2", None)


def fake_instances(masks: bool = True, height: int = 40, width: int = 60) -> SimpleNamespace:
    mask_array = np.zeros((3, height, width), bool)
    mask_array[0, 5:20, 10:30] = True
    mask_array[1, 0:2, 0:60] = True
    mask_array[2, 30:40, 50:60] = True
    fields = dict(
        pred_boxes=SimpleNamespace(tensor=torch.tensor([[10.0, 5, 30, 20], [-3, 0, 70, 2], [50, 30, 60, 40]])),
        scores=torch.tensor([0.9, 0.4, 0.2]),
        pred_classes=torch.tensor([0, 9, 79]),  # person, traffic light, toothbrush
        image_size=(height, width),
    )
    if masks:
        fields["pred_masks"] = torch.from_numpy(mask_array)
    return SimpleNamespace(**fields)


def test_package_imports_and_lists_models_without_detectron2() -> None:
    code = ("import sys; sys.modules['detectron2'] = None\n"
            "import vcm_plugin, vcm_plugin.tasks as t\n"
            "names = t.task_model_names()\n"
            "assert 'detectron2' in names and 'torchvision-detection' in names, names\n"
            "from vcm_plugin.tasks.detectron2_backend import detectron2_available\n"
            "assert not detectron2_available()\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_using_it_without_detectron2_says_how_to_install(no_detectron2: None) -> None:
    assert not detectron2_available()
    with pytest.raises(TaskModelError, match=r"detectron2 is not installed: pip install 'vcm-plugin\[detectron2\]'"):
        get_task_model("detectron2", config="COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    from vcm_plugin.tasks.detectron2_backend import Detectron2Model

    with pytest.raises(TaskModelError, match="facebookresearch/detectron2"):
        Detectron2Model()


def test_instances_to_detections_maps_contiguous_ids_and_masks() -> None:
    det = instances_to_detections(fake_instances(), COCO80_IDS)
    assert det.labels.tolist() == [1, 10, 90]
    assert det.labels.dtype == np.int64 and det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    np.testing.assert_allclose(det.boxes[1], [0, 0, 60, 2])  # clipped to the 60x40 image
    np.testing.assert_allclose(det.scores, [0.9, 0.4, 0.2])
    assert det.masks is not None and all(m["size"] == [40, 60] and isinstance(m["counts"], str) for m in det.masks)
    decoded = mask_utils.decode([{**m, "counts": m["counts"].encode()} for m in det.masks]).transpose(2, 0, 1)
    np.testing.assert_array_equal(decoded.astype(bool), fake_instances().pred_masks.numpy())

    high = instances_to_detections(fake_instances(), COCO80_IDS, score_threshold=0.3)
    assert high.labels.tolist() == [1, 10] and len(high.masks) == 2
    assert instances_to_detections(fake_instances(), COCO80_IDS, with_masks=False).masks is None
    assert instances_to_detections(fake_instances(masks=False), COCO80_IDS).masks is None
    with pytest.raises(TaskModelError, match="no pred_masks"):
        instances_to_detections(fake_instances(masks=False), COCO80_IDS, with_masks=True)


def test_instances_to_detections_numpy_empty_and_bad_class() -> None:
    numpy_like = SimpleNamespace(pred_boxes=SimpleNamespace(tensor=np.array([[1.0, 2, 3, 4]])),
                                 scores=np.array([0.5]), pred_classes=np.array([2]))
    assert instances_to_detections(numpy_like, COCO80_IDS).labels.tolist() == [3]
    empty = SimpleNamespace(pred_boxes=SimpleNamespace(tensor=torch.zeros((0, 4))), scores=torch.zeros(0),
                            pred_classes=torch.zeros(0, dtype=torch.int64),
                            pred_masks=torch.zeros((0, 8, 8), dtype=torch.bool))
    det = instances_to_detections(empty, COCO80_IDS)
    assert len(det) == 0 and det.masks == []
    with pytest.raises(TaskModelError, match="80"):
        instances_to_detections(SimpleNamespace(pred_boxes=SimpleNamespace(tensor=torch.zeros((1, 4))),
                                                scores=torch.ones(1), pred_classes=torch.tensor([80])), COCO80_IDS)


def test_mapping_matches_coco_names_table() -> None:
    from vcm_plugin.tasks.coco_names import COCO80_IDS as table

    assert list(table) == COCO80_IDS


def test_segmentation_configs_are_recognised() -> None:
    assert is_segmentation_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert not is_segmentation_config("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    assert not is_segmentation_config("COCO-Detection/retinanet_R_50_FPN_1x.yaml")


@pytest.fixture(scope="module")
def random_mask_rcnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A Mask R-CNN R50-FPN model-zoo config and a checkpoint of random weights saved by DetectionCheckpointer."""
    pytest.importorskip("detectron2", reason="detectron2 is built by `make install` (patches/detectron2-cdo-0.5.patch)")
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    name = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(name))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("d2")
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("mask_rcnn_random")
    return name, str(folder / "mask_rcnn_random.pth")


def _model_and_sample_image(random_mask_rcnn: tuple[str, str], index: int) -> tuple[Any, np.ndarray]:
    """The random Mask R-CNN as a task model keeping every detection, and the sample's COCO image ``index``."""
    from vcm_plugin.images.io import read_image
    from vcm_plugin.sample import coco_images_dir

    config, weights = random_mask_rcnn
    model = get_task_model("detectron2", config=config, weights_file=weights,
                           config_overrides=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    return model, read_image(sorted(coco_images_dir().iterdir())[index])


def test_a_real_mask_rcnn_predicts_coco_ids_and_masks_on_the_sample(random_mask_rcnn: tuple[str, str]) -> None:
    model, image = _model_and_sample_image(random_mask_rcnn, 0)
    det = model.predict(image)
    assert model.task == "segmentation" and len(det) > 0 and det.masks is not None
    assert set(det.labels.tolist()) <= set(COCO80_IDS)
    assert det.masks[0]["size"] == list(image.shape[:2])
    assert (det.boxes[:, 2] <= image.shape[1]).all() and (det.boxes[:, 3] <= image.shape[0]).all()


def test_the_config_weights_search_path_reaches_detectron2(random_mask_rcnn: tuple[str, str], tmp_path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from vcm_plugin.weights import WeightsNotFoundError

    config, weights = random_mask_rcnn
    monkeypatch.delenv("VCM_WEIGHTS", raising=False)
    name = weights.rsplit("/", 1)[1]
    with pytest.raises(WeightsNotFoundError):
        get_task_model("detectron2", config=config, weights_file=name, search_path=[str(tmp_path)]).weights_path()
    found = get_task_model("detectron2", config=config, weights_file=name, search_path=[weights.rsplit("/", 1)[0]])
    assert str(found.weights_path()) == weights
    assert "search_path" not in found.identity()["params"]


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_keys(random_mask_rcnn: tuple[str, str],
                                                                         shared, caplog) -> None:
    config, _ = random_mask_rcnn
    yolo = str(shared / "weights" / "yolov5n_coco_state_dict.pt")
    with pytest.raises(TaskModelError, match=r"does not fit the model: missing \(\d+\): backbone\..*unexpected"):
        get_task_model("detectron2", config=config, weights_file=yolo).load()
    partial = get_task_model("detectron2", config=config, weights_file=yolo, allow_partial=True)
    partial.load()
    assert "allow_partial" in caplog.text and "missing" in caplog.text


@pytest.mark.slow
def test_a_mask_rcnn_without_a_task_key_is_scored_as_segmentation(random_mask_rcnn: tuple[str, str], tmp_path) -> None:
    import csv

    from vcm_plugin.config import config_from_dict
    from vcm_plugin.pipeline.run import run
    from vcm_plugin.results import load

    config, weights = random_mask_rcnn
    run_config = config_from_dict({
        "name": "d2", "output": str(tmp_path / "out"), "dataset": {"name": "sample", "max_images": 1},
        "tasks": {"objects": {"model": "detectron2", "config": config, "weights_file": weights,
                              "config_overrides": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]}},
        "codecs": {"jpeg": {"qualities": [40]}}, "anchors": []})
    run(run_config, quiet=True)
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["segm/AP"] != ""  # the instance's task (the class says detection: bbox columns only)
    assert {p.primary_name for p in load(tmp_path / "out").points} == {"segm/AP"}


@pytest.mark.parametrize(("overrides", "expected"), [
    (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1"],
     r"MODEL.ROI_HEADS.SCORE_THRESH_TEST expects a float \(default 0.05\), got .1. \(int\)"),
    (["MODEL.ROI_HEADS.SCORE_THRESH", "0.5"], r"no config key 'MODEL.ROI_HEADS.SCORE_THRESH'.*SCORE_THRESH_TEST"),
    (["MODEL.MASK_ON", "yes"], "MODEL.MASK_ON expects a bool"),
])
def test_bad_config_overrides_name_the_key_and_the_type(random_mask_rcnn: tuple[str, str], overrides: list[str],
                                                       expected: str) -> None:
    config, weights = random_mask_rcnn
    with pytest.raises(TaskModelError, match=expected):
        get_task_model("detectron2", config=config, weights_file=weights, config_overrides=overrides).load()


def test_a_model_zoo_name_that_does_not_exist_is_named(random_mask_rcnn: tuple[str, str]) -> None:
    with pytest.raises(TaskModelError, match="COCO-Detection/faster_rcnn_R_51_FPN_3x.yaml.*neither a file nor in"):
        get_task_model("detectron2", config="COCO-Detection/faster_rcnn_R_51_FPN_3x.yaml",
                       weights_file=random_mask_rcnn[1]).load()


def test_front_then_run_from_equals_the_whole_model_at_every_cut_point(random_mask_rcnn: tuple[str, str]) -> None:
    model, image = _model_and_sample_image(random_mask_rcnn, 1)
    whole = model.predict(image)
    assert model.cut_points() == ["input", "stem", "res2", "res3", "res4", "res5", "fpn"]
    for cut in model.cut_points()[1:]:
        value = model.front(cut, image)
        split = model.run_from(cut, value)
        assert len(split) == len(whole) > 0, cut
        np.testing.assert_array_equal(split.boxes, whole.boxes, err_msg=cut)
        np.testing.assert_array_equal(split.scores, whole.scores, err_msg=cut)
        np.testing.assert_array_equal(split.labels, whole.labels, err_msg=cut)
        assert [m["counts"] for m in split.masks] == [m["counts"] for m in whole.masks], cut
    assert sorted(model.front("fpn", image).tensors) == ["p2", "p3", "p4", "p5", "p6"]
    assert sorted(model.front("res3", image).tensors) == ["res2", "res3"]  # the FPN reads res2 too
    with pytest.raises(TaskModelError, match=r"no cut point 'res6'; nearest: \['res5'"):
        model.front("res6", image)
    from vcm_plugin.splitting.adapter import split_adapter

    assert split_adapter(model, "res2").cut == "res2"
    with pytest.raises(TaskModelError, match=r"'res3' carries 2 tensors \['res2', 'res3'\].*fcm-vvc"):
        split_adapter(model, "res3")  # learned codecs carry one tensor
    with pytest.raises(TaskModelError, match=r"'fpn' carries 5 tensors.*fcm-vvc"):
        split_adapter(model, "fpn")


def test_fcm_vvc_codes_the_fpn_cut_in_both_modes(random_mask_rcnn: tuple[str, str]) -> None:
    """fcm-vvc at detectron2's FPN cut (P2..P6): mode full (all in the stream) and mode ctc (one packed frame over a
    global range, the sizes out of band); both decode to a value the rest of the model scores."""
    from vcm_plugin import get_codec

    config, weights = random_mask_rcnn
    task_params = {"config": config, "weights_file": weights,
                   "config_overrides": ["INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "384"]}
    image = _model_and_sample_image(random_mask_rcnn, 1)[1]
    model = get_task_model("detectron2", **task_params)
    value = model.front("fpn", image)
    low = min(float(t.min()) for t in value.tensors.values())
    high = max(float(t.max()) for t in value.tensors.values())
    streams = {}
    for mode, extra in (("full", {}), ("ctc", {"value_range": [low, high]})):
        codec = get_codec("fcm-vvc", task_model="detectron2", task_params=task_params, cut="fpn", preset="faster",
                          mode=mode, **extra)
        streams[mode] = stream = codec.encode(image, 32)
        decoded = codec.decode(stream)
        assert list(decoded.tensors) == ["p2", "p3", "p4", "p5", "p6"]
        assert all(decoded.tensors[k].shape == value.tensors[k].shape for k in value.tensors)
        assert model.run_from("fpn", decoded).boxes.shape[1] == 4
    assert streams["full"].side_info == b"" and len(streams["ctc"].side_info) > 10
    assert streams["ctc"].num_bits < streams["full"].num_bits


def _network(model: Any) -> torch.nn.Module:
    model.load()
    return model._model


def test_random_weights_are_seeded_so_every_process_builds_the_same_network(random_mask_rcnn: tuple[str, str]) -> None:
    """``weights_file=random`` builds the network under torch seed 0 whatever the caller's random state: pool
    workers and the fcm-vvc encoder (another process) then run the same network, so a random-weights run is
    reproducible (``vcm verify``) and its front / run_from halves fit together. The fixture's checkpoint was built
    under seed 0 too, so all three hold the same parameters; the caller's generator is left as it was."""
    config, weights = random_mask_rcnn
    torch.manual_seed(123)
    first = _network(get_task_model("detectron2", config=config, weights_file="random")).state_dict()
    after = torch.rand(1)
    torch.manual_seed(123)
    torch.rand(5)
    second = _network(get_task_model("detectron2", config=config, weights_file="random")).state_dict()
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))  # the caller's random state is untouched
    saved = _network(get_task_model("detectron2", config=config, weights_file=weights)).state_dict()
    assert first.keys() == second.keys() == saved.keys()
    assert all(torch.equal(first[k], second[k]) and torch.equal(first[k], saved[k]) for k in first)
