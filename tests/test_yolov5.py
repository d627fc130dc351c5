"""YOLOv5 without the YOLOv5 code: restricted unpickler, network, detector, COCO mAP."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm_plugin import read_image
from vcm_plugin.errors import InvalidImageError, TaskModelError, WeightsNotFoundError
from vcm_plugin.tasks import get_task_model
from vcm_plugin.tasks.coco_names import COCO80, COCO_CATEGORIES, coco_ids_for_names, contiguous_to_coco
from vcm_plugin.tasks.predictions import Detections, predictions_from_json
from vcm_plugin.tasks.split import CutValue
from vcm_plugin.tasks.yolov5.checkpoint import load_yolov5_checkpoint, unpickle_restricted
from vcm_plugin.tasks.yolov5.detector import Letterbox, YOLOv5Detector
from vcm_plugin.tasks.yolov5.network import YOLOv5, build_network, infer_description, v6_description

torch.set_num_threads(2)
IMAGE_ID = 183709  # people, cars and traffic lights


@pytest.fixture(scope="module")
def weights_dir(shared: Path) -> Path:
    return shared / "weights"


@pytest.fixture(scope="module")
def val_gt(shared: Path) -> dict:
    return json.loads((shared / "data" / "coco" / "annotations" / "instances_val2017_subset.json").read_text())


@pytest.fixture(scope="module")
def ckpt(weights_dir: Path):
    return load_yolov5_checkpoint(weights_dir / "yolov5n.pt")


@pytest.fixture(scope="module")
def detector(weights_dir: Path) -> YOLOv5Detector:
    model = get_task_model("yolov5", search_path=[str(weights_dir)])
    assert isinstance(model, YOLOv5Detector)
    return model


@pytest.fixture(scope="module")
def street(shared: Path) -> np.ndarray:
    return read_image(shared / "data" / "coco" / "val2017" / f"{IMAGE_ID:012d}.jpg")


@pytest.fixture(scope="module")
def street_dets(detector: YOLOv5Detector, street: np.ndarray) -> Detections:
    return detector.predict(street)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (N, 4) and b (M, 4)."""
    from torchvision.ops import box_iou

    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


# -- COCO names ---------------------------------------------------------------------------------
def test_coco_table_matches_the_official_categories(val_gt: dict, ckpt) -> None:
    assert [(c["id"], c["name"]) for c in val_gt["categories"]] == list(COCO80)
    assert list(coco_ids_for_names(ckpt.names)) == [cid for cid, _ in COCO80]  # YOLOv5 uses the COCO names
    assert list(contiguous_to_coco(np.array([0, 11, 79]))) == [1, 13, 90]
    assert COCO_CATEGORIES[72] == "tv"
    with pytest.raises(KeyError, match="tvmonitor"):
        coco_ids_for_names(["person", "tvmonitor"])


# -- checkpoint ---------------------------------------------------------------------------------
def test_restricted_unpickler_recovers_the_release_tensors(ckpt, weights_dir: Path) -> None:
    reference = torch.load(weights_dir / "yolov5n_coco_state_dict.pt", map_location="cpu", weights_only=True)
    assert len(ckpt.state_dict) == len(reference) == 349
    assert list(ckpt.state_dict) == list(reference)
    for key, tensor in reference.items():
        got = ckpt.state_dict[key]
        assert got.dtype == (torch.float32 if tensor.is_floating_point() else tensor.dtype), key
        assert torch.equal(got, tensor.to(got.dtype)), key
    assert ckpt.yaml["depth_multiple"] == 0.33 and ckpt.yaml["width_multiple"] == 0.25
    assert ckpt.yaml["anchors"][0] == [10, 13, 16, 30, 33, 23]
    assert len(ckpt.yaml["backbone"]) == 10 and ckpt.yaml["head"][-1][2] == "Detect"
    assert ckpt.names[:3] == ["person", "bicycle", "car"] and len(ckpt.names) == 80
    assert ckpt.stride == [8, 16, 32]


def test_plain_state_dict_loads_with_an_inferred_description(weights_dir: Path, ckpt) -> None:
    plain = load_yolov5_checkpoint(weights_dir / "yolov5n_coco_state_dict.pt")
    assert plain.yaml["width_multiple"] == 0.25 and plain.yaml["nc"] == 80
    assert plain.yaml["backbone"] == ckpt.yaml["backbone"] and plain.yaml["head"] == ckpt.yaml["head"]
    assert plain.names == ckpt.names
    assert all(torch.equal(plain.state_dict[k], v) for k, v in ckpt.state_dict.items())


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker), "epoch": -1}, evil)
    with pytest.raises(TaskModelError) as info:
        unpickle_restricted(evil)
    assert "evil.pt" in str(info.value) and "system" in str(info.value)
    with pytest.raises(TaskModelError, match="system"):  # the public entry: weights_only first, then restricted
        load_yolov5_checkpoint(evil)
    # a plain (non-zip) pickle is not even opened as a pickle
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(TaskModelError, match="raw.pt"):
        unpickle_restricted(raw)
    # a global hiding in an allowed module name is refused too
    sneaky = tmp_path / "sneaky.pt"
    torch.save({"model": torch.nn.Linear(1, 1)}, sneaky)  # torch.nn.modules.linear.Linear: not allowed
    with pytest.raises(TaskModelError, match=r"torch\.nn\.modules\.linear\.Linear"):
        unpickle_restricted(sneaky)
    assert not marker.exists()


# -- network ------------------------------------------------------------------------------------
def test_network_loads_strictly_and_matches_published_sizes(ckpt) -> None:
    net = build_network(ckpt.yaml, ckpt.state_dict)
    assert net.stride == [8, 16, 32]
    assert sum(p.numel() for p in net.parameters()) == 1_872_157  # "YOLOv5n summary: ... 1872157 parameters"
    assert sum(p.numel() for p in YOLOv5(v6_description("s")).parameters()) == 7_235_389  # YOLOv5s
    assert torch.allclose(net.detect.anchors, ckpt.state_dict["model.24.anchors"])
    broken = dict(ckpt.state_dict)
    broken.pop("model.3.bn.running_var")
    with pytest.raises(TaskModelError, match="model.3.bn.running_var"):
        build_network(ckpt.yaml, broken)
    with pytest.raises(TaskModelError, match="Focus"):
        YOLOv5({**ckpt.yaml, "backbone": [[-1, 1, "Focus", [64, 3]], *ckpt.yaml["backbone"][1:]]})
    assert infer_description(ckpt.state_dict) == v6_description("n")


def test_cut_after_backbone_gives_p3_p4_p5_and_the_same_output(ckpt) -> None:
    net = build_network(ckpt.yaml, ckpt.state_dict)
    x = torch.rand(1, 3, 224, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = net(x)
        feats = net.forward_to(x, net.backbone_end)
        resumed = net.rest(feats, net.backbone_end)
    assert sorted(feats) == [4, 6, 9]
    assert [tuple(feats[k].shape[-2:]) for k in (4, 6, 9)] == [(28, 40), (14, 20), (7, 10)]
    assert full.shape == (1, 3 * (28 * 40 + 14 * 20 + 7 * 10), 85)
    assert torch.equal(full, resumed)
    with pytest.raises(TaskModelError, match=r"\[4, 6\]"):
        net.rest({9: feats[9]}, net.backbone_end)


# -- detector -----------------------------------------------------------------------------------
def test_letterbox_geometry() -> None:
    val = Letterbox.fit(480, 640, 640, "val")
    assert (val.in_h, val.in_w, val.new_h, val.new_w, val.top, val.left) == (512, 672, 480, 640, 16, 16)
    auto = Letterbox.fit(427, 640, 640, "auto")
    assert (auto.in_h, auto.in_w, auto.top, auto.left) == (448, 640, 10, 0)
    square = Letterbox.fit(100, 50, 640, "square")
    assert (square.in_h, square.in_w, square.new_h, square.new_w) == (640, 640, 640, 320)
    boxes = np.array([[square.left, square.top, square.left + 320, square.top + 640]], np.float32)
    np.testing.assert_allclose(square.to_original(boxes), [[0, 0, 50, 100]], atol=1e-4)
    assert square.apply(np.zeros((100, 50, 3), np.uint8))[0, 0, 0] == 114


def test_street_scene_detections_match_ground_truth(street_dets: Detections, street: np.ndarray,
                                                    val_gt: dict) -> None:
    dets = street_dets
    h, w = street.shape[:2]
    assert 0 < len(dets) <= 300 and dets.boxes.dtype == np.float32
    assert (dets.boxes[:, 0] >= 0).all() and (dets.boxes[:, 2] <= w).all()
    assert (dets.boxes[:, 1] >= 0).all() and (dets.boxes[:, 3] <= h).all()
    assert (dets.boxes[:, 2] >= dets.boxes[:, 0]).all() and (dets.boxes[:, 3] >= dets.boxes[:, 1]).all()
    assert set(dets.labels.tolist()) <= set(COCO_CATEGORIES)
    assert np.all(np.diff(dets.scores) <= 0)  # sorted by confidence
    gt = [a for a in val_gt["annotations"] if a["image_id"] == IMAGE_ID and not a["iscrowd"]]
    for category in (1, 3):  # person, car
        gt_boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in
                             (a["bbox"] for a in gt if a["category_id"] == category)])
        strong = (dets.labels == category) & (dets.scores > 0.5)
        iou = _iou(dets.boxes[strong], gt_boxes)
        assert (iou.max(axis=1) > 0.3).all(), (COCO_CATEGORIES[category], iou.max(axis=1))  # no hallucination
        matched = {int(j) for j in iou.argmax(axis=1)[iou.max(axis=1) > 0.7]}  # distinct GT objects found
        assert len(matched) >= 3, (COCO_CATEGORIES[category], iou.max(axis=1))
        assert iou[0].max() > 0.7  # the most confident one is right


def test_blank_image_gives_no_confident_detection(detector: YOLOv5Detector) -> None:
    dets = detector.predict(np.full((480, 640, 3), 128, np.uint8))
    assert not (dets.scores > 0.25).any()


def test_backbone_cut_point_round_trip(detector: YOLOv5Detector, street: np.ndarray,
                                       street_dets: Detections) -> None:
    assert "backbone" in detector.cut_points()
    feats = detector.front("backbone", street)
    assert isinstance(feats, CutValue) and sorted(feats.tensors) == ["4", "6", "9"]
    assert feats.image_hw == street.shape[:2]
    resumed = detector.run_from("backbone", feats)
    np.testing.assert_array_equal(resumed.labels, street_dets.labels)
    np.testing.assert_allclose(resumed.boxes, street_dets.boxes, atol=1e-3)
    with pytest.raises(TaskModelError, match="p9"):
        detector.run_from("p9", feats)
    with pytest.raises(TaskModelError, match=r"needs a CutValue of tensors \['4'\]"):
        detector.run_from("layer.4", feats)


def test_detections_json_round_trip(street_dets: Detections) -> None:
    back = predictions_from_json(json.loads(json.dumps(street_dets.to_json())))
    assert isinstance(back, Detections)
    np.testing.assert_array_equal(back.boxes, street_dets.boxes)
    np.testing.assert_array_equal(back.scores, street_dets.scores)
    np.testing.assert_array_equal(back.labels, street_dets.labels)


def test_identity_names_the_weights_hash(detector: YOLOv5Detector, weights_dir: Path) -> None:
    ident = detector.identity()
    assert ident["weights_sha256"] == "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"
    assert ident["params"]["conf_threshold"] == 0.001 and ident["params"]["iou_threshold"] == 0.65
    clone = pickle.loads(pickle.dumps(detector))  # process pools ship models as parameters
    assert clone.identity() == ident and clone._net is None
    other = YOLOv5Detector(weights="yolov5n_coco_state_dict.pt", search_path=[str(weights_dir)])
    assert other.identity()["weights_sha256"] != ident["weights_sha256"]
    assert detector.categories[1] == "person" and len(detector.categories) == 80


def test_missing_weights_and_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        detector: YOLOv5Detector) -> None:
    monkeypatch.setenv("VCM_WEIGHTS", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = get_task_model("yolov5", search_path=[str(tmp_path / "cfg")])  # building never loads weights
    with pytest.raises(WeightsNotFoundError) as info:
        model.predict(np.zeros((32, 32, 3), np.uint8))
    assert all(str(tmp_path / d) in str(info.value) for d in ("cfg", "env", "home"))
    impostor = tmp_path / "cfg" / "yolov5n.pt"  # a known name with other content: refused by its hash
    impostor.parent.mkdir()
    impostor.write_bytes((detector.weights_path().parent / "yolov5n_coco_state_dict.pt").read_bytes())
    with pytest.raises(TaskModelError, match="4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"):
        model.predict(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(InvalidImageError, match="uint8"):
        detector.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLOv5Detector(img_size=650)


# -- COCO mAP on the real val2017 subset --------------------------------------------------------
@pytest.mark.slow
def test_coco_val_box_map(detector: YOLOv5Detector, shared: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = shared / "data" / "coco"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco / "annotations" / "instances_val2017_subset.json"))
    results, seconds = [], 0.0
    for info in gt.dataset["images"]:
        image = read_image(coco / "val2017" / info["file_name"])
        start = time.perf_counter()
        dets = detector.predict(image)
        seconds += time.perf_counter() - start
        for (x1, y1, x2, y2), score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
            results.append({"image_id": info["id"], "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = evaluator.stats[:2]
    print(f"\nYOLOv5n on {len(gt.dataset['images'])} val2017 images: box AP {ap:.3f}, AP50 {ap50:.3f}, "
          f"{seconds / len(gt.dataset['images']):.3f} s/image")
    assert 0.20 <= ap <= 0.40  # published 28.0 on all of val2017; this subset is not uniform
    assert ap50 > ap
