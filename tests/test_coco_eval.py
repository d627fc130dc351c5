"""CocoEvaluator against pycocotools on the real shared COCO val subset (206 images)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vcm_plugin.datasets import CocoDataset, Sample
from vcm_plugin.evaluation.base import EvaluationError
from vcm_plugin.evaluation.coco_eval import METRICS, CocoEvaluator, coco_results_from_detections
from vcm_plugin.tasks.predictions import ClassScores, Detections

NO_ANNOTATION_IDS = (58636, 226111)
KEYS = [f"{t}/{m}" for t in ("bbox", "segm") for m in METRICS]


@pytest.fixture(scope="module")
def val_json(shared: Path) -> Path:
    return shared / "data" / "coco" / "annotations" / "instances_val2017_subset.json"


@pytest.fixture(scope="module")
def val(shared: Path, val_json: Path) -> CocoDataset:
    return CocoDataset(shared / "data" / "coco" / "val2017", val_json)


def gt_rle(ann: dict, height: int, width: int) -> dict:
    """A ground-truth polygon / RLE annotation as a compressed RLE with str counts."""
    segm = ann["segmentation"]
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_util.frPyObjects(segm, height, width)
    else:
        rle = dict(segm)
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle


def gt_detections(sample: Sample, score: float = 1.0, crowd: bool = True) -> Detections:
    anns = [a for a in sample.annotations if crowd or not a["iscrowd"]]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    return Detections(np.array(boxes, np.float64).reshape(-1, 4), np.full(len(anns), score),
                      [a["category_id"] for a in anns], [gt_rle(a, sample.height, sample.width) for a in anns])


def box_rle(box: list[float], sample: Sample) -> dict:
    x1, y1, x2, y2 = box
    rle = mask_util.merge(mask_util.frPyObjects([[x1, y1, x1, y2, x2, y2, x2, y1]], sample.height, sample.width))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def noisy_detections(sample: Sample, rng: np.random.Generator, category_ids: list[int]) -> Detections:
    """GT-derived detections with box noise, dropped objects, wrong labels, random scores and extra false positives."""
    boxes, labels, masks = [], [], []
    for ann in sample.annotations:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy, dw, dh = rng.normal(0, 0.08, 4) * [w, h, w, h]
        box = [x + dx, y + dy, x + dx + max(w + dw, 1.0), y + dy + max(h + dh, 1.0)]
        boxes.append(box)
        labels.append(ann["category_id"] if rng.random() < 0.85 else int(rng.choice(category_ids)))
        # half the masks exact, half the (noisy) box filled
        masks.append(gt_rle(ann, sample.height, sample.width) if rng.random() < 0.5 else box_rle(box, sample))
    for _ in range(rng.integers(0, 4)):
        x1, y1 = rng.uniform(0, sample.width - 20), rng.uniform(0, sample.height - 20)
        box = [x1, y1, rng.uniform(x1 + 5, sample.width), rng.uniform(y1 + 5, sample.height)]
        boxes.append(box)
        labels.append(int(rng.choice(category_ids)))
        masks.append(box_rle(box, sample))
    return Detections(np.array(boxes).reshape(-1, 4), rng.random(len(boxes)), labels, masks)


def reference_stats(val_json: Path, detections: dict[int, Detections], iou_type: str,
                    image_ids: list[int] | None) -> np.ndarray:
    """Plain pycocotools on the original file: loadRes + COCOeval, with the results built here."""
    results = []
    for image_id, det in detections.items():
        for box, score, label, mask in zip(det.boxes, det.scores, det.labels, det.masks):
            x1, y1, x2, y2 = (float(v) for v in box)
            result = {"image_id": image_id, "category_id": int(label), "score": float(score)}
            if iou_type == "bbox":
                result["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:  # mask area decides small/medium/large (as detectron2 evaluates segm)
                result["segmentation"] = mask
            results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_json))
        cocoeval = COCOeval(gt, gt.loadRes(results), iou_type)
        if image_ids is not None:
            cocoeval.params.imgIds = image_ids
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return np.asarray(cocoeval.stats[:6]) * 100


def test_ap_equals_pycocotools(val: CocoDataset, val_json: Path) -> None:
    rng = np.random.default_rng(2024)
    category_ids = sorted(val.categories)
    processed = val.image_ids[:170]  # a strict subset: evaluation is restricted to what was processed
    evaluator = val.evaluator("segmentation")
    detections = {}
    for sample in val:
        if sample.image_id in processed:
            detections[sample.image_id] = noisy_detections(sample, rng, category_ids)
            evaluator.process(sample, detections[sample.image_id])
    ours = evaluator.evaluate()
    assert sorted(ours) == sorted(KEYS)
    for iou_type in ("bbox", "segm"):
        expected = reference_stats(val_json, detections, iou_type, processed)
        got = np.array([ours[f"{iou_type}/{m}"] for m in METRICS])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=iou_type)
        assert 10 < ours[f"{iou_type}/AP"] < 90 and ours[f"{iou_type}/AP50"] > ours[f"{iou_type}/AP75"]
    # over all 206 images the unprocessed images' objects would count as misses: a different number
    assert reference_stats(val_json, detections, "bbox", None)[0] < ours["bbox/AP"] - 1
    assert len(evaluator.results_json()) == sum(len(d) for d in detections.values())


def test_ground_truth_as_detections_gives_100(val: CocoDataset) -> None:
    """Every GT object (crowd regions included: a detection on a crowd region is ignored, not a FP)."""
    evaluator = val.evaluator("segmentation")
    for sample in val:
        evaluator.process(sample, gt_detections(sample))
    metrics = evaluator.evaluate()
    assert sorted(metrics) == sorted(KEYS)
    for key in KEYS:
        assert metrics[key] == pytest.approx(100.0, abs=1e-9), key
    # and the dataset's ground truth is untouched by COCOeval (it turns polygons into RLE in place)
    assert all(isinstance(a["segmentation"], list) for a in val.coco.anns.values() if not a["iscrowd"])


def test_image_without_annotations_counts_false_positives(val: CocoDataset) -> None:
    # a category with a single GT object: two false positives ranked above it cut its AP to a third
    counts = {c: len(val.coco.getAnnIds(catIds=[c], iscrowd=False)) for c in val.categories}
    rare = min(counts, key=counts.get)
    assert counts[rare] == 1

    def run(extra: bool) -> dict[str, float]:
        evaluator = val.evaluator("detection")
        for sample in val:
            if sample.image_id in NO_ANNOTATION_IDS:
                assert sample.annotations == []
                det = Detections([[10, 20, 200, 220]], [1.0], [rare]) if extra else Detections.empty()
            else:
                det = gt_detections(sample, score=0.9, crowd=False)
            evaluator.process(sample, det)
        return evaluator.evaluate()

    clean, polluted = run(False), run(True)
    assert clean["bbox/AP"] == pytest.approx(100.0)
    assert polluted["bbox/AP"] == pytest.approx(100.0 - (100.0 - 100.0 / 3) / len(val.categories))


def test_only_images_without_ground_truth_is_undefined(val: CocoDataset) -> None:
    evaluator = val.evaluator("detection")
    for image_id in NO_ANNOTATION_IDS:
        evaluator.process(image_id, Detections([[10, 20, 200, 220]], [0.5], [1]))
    metrics = evaluator.evaluate()
    assert list(metrics) == [f"bbox/{m}" for m in METRICS] and all(math.isnan(v) for v in metrics.values())


def test_no_detections_at_all_gives_zero(val: CocoDataset) -> None:
    evaluator = val.evaluator("segmentation")
    for sample in val:
        evaluator.process(sample, Detections.empty())
    metrics = evaluator.evaluate()
    assert metrics == {key: 0.0 for key in KEYS}
    assert evaluator.results_json() == []


def test_sample_dataset_scores(val: CocoDataset) -> None:
    from vcm_plugin.datasets import get_dataset

    sample = get_dataset("sample")
    evaluator = sample.evaluator("detection")
    for s in sample:
        evaluator.process(s, gt_detections(s))
    metrics = evaluator.evaluate()
    assert metrics["bbox/AP"] == pytest.approx(100.0)
    with pytest.raises(EvaluationError, match="image id 139 is not in this evaluator's dataset"):
        evaluator.process(139, Detections.empty())


def test_result_dicts(val: CocoDataset) -> None:
    sample = val[0]
    rle = gt_rle(sample.annotations[0], sample.height, sample.width)
    rle["counts"] = rle["counts"].encode("ascii")  # bytes counts are accepted and written as str
    det = Detections([[10.5, 20.25, 30.5, 60.0]], [0.9], [sample.annotations[0]["category_id"]], [rle])
    (result,) = coco_results_from_detections(sample.image_id, det)
    assert result["bbox"] == [10.5, 20.25, 20.0, 39.75] and result["score"] == 0.9
    assert result["image_id"] == sample.image_id and isinstance(result["segmentation"]["counts"], str)
    evaluator = val.evaluator("segmentation")
    evaluator.process(sample, det)
    dumped = evaluator.results_json()
    assert json.loads(json.dumps(dumped)) == [result]
    dumped[0]["score"] = 0.1
    assert evaluator.results_json()[0]["score"] == 0.9
    # detection-only evaluation keeps no masks
    detection = val.evaluator("detection")
    detection.process(sample, det)
    assert "segmentation" not in detection.results_json()[0]
    evaluator.reset()
    assert evaluator.results_json() == [] and evaluator.processed_image_ids == []


def test_process_errors(val: CocoDataset) -> None:
    sample = val[0]
    evaluator = val.evaluator("segmentation")
    with pytest.raises(EvaluationError, match=rf"image id {sample.image_id}: label\(s\) \[12, 91\] are not category"):
        evaluator.process(sample, Detections([[0, 0, 5, 5]] * 3, [0.5] * 3, [1, 12, 91], [None] * 3))
    with pytest.raises(EvaluationError, match=f"image id {sample.image_id}: segm evaluation needs masks"):
        evaluator.process(sample, Detections([[0, 0, 5, 5]], [0.5], [1]))
    small = mask_util.encode(np.asfortranarray(np.ones((4, 4), np.uint8)))
    with pytest.raises(EvaluationError, match=rf"image id {sample.image_id}: mask 0 has size \[4, 4\]"):
        evaluator.process(sample, Detections([[0, 0, 5, 5]], [0.5], [1], [small]))
    with pytest.raises(EvaluationError, match=f"image id {sample.image_id}: detection 0 has x2 < x1"):
        val.evaluator("detection").process(sample, Detections([[9, 0, 5, 5]], [0.5], [1]))
    with pytest.raises(EvaluationError, match="non-finite"):
        val.evaluator("detection").process(sample, Detections([[0, 0, 5, np.nan]], [0.5], [1]))
    with pytest.raises(EvaluationError, match="needs Detections, got ClassScores"):
        evaluator.process(sample, ClassScores([0.1, 0.9]))
    with pytest.raises(EvaluationError, match="image id 1 is not in this evaluator's dataset"):
        evaluator.process(1, Detections.empty())
    with pytest.raises(EvaluationError, match="no image was processed"):
        evaluator.evaluate()
    evaluator.process(sample, Detections.empty())  # failed calls recorded nothing
    with pytest.raises(EvaluationError, match=f"image id {sample.image_id} was already processed"):
        evaluator.process(sample, Detections.empty())
    assert evaluator.processed_image_ids == [sample.image_id]


def test_constructor_checks(val: CocoDataset) -> None:
    with pytest.raises(EvaluationError, match="iou_types must be a non-empty subset"):
        CocoEvaluator(val.coco, ("keypoints",))
    with pytest.raises(EvaluationError, match=r"image ids \[7\] \(1 in all\) are not in the ground truth"):
        CocoEvaluator(val.coco, "bbox", [139, 7])
