"""BD-rate intervals (paired image bootstrap) and the n/a note with the qualities to add (--fill-overlap).

The COCO and Open Images resamplers are checked against a full evaluation of the resampled image set:
real ground truth (the 206-image COCO val2017 subset, the MPEG VCM Open Images 5k files) with
detections made from it (boxes jittered, random scores, extra false positives).
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.config import config_from_dict
from vcm_plugin.datasets.base import Sample
from vcm_plugin.evaluation.bootstrap import PerImage, PerImageMean, bd_resamples, bootstrap_bd, resample_points
from vcm_plugin.evaluation.classification import ClassificationEvaluator
from vcm_plugin.evaluation.coco_eval import CocoEvaluator, coco_from_dict
from vcm_plugin.evaluation.oid import OpenImagesEvaluator
from vcm_plugin.evaluation.oid_annotations import read_boxes_csv, read_label_map, read_labels_csv
from vcm_plugin.pipeline.fill import run_filling_overlap
from vcm_plugin.pipeline.run import run
from vcm_plugin.tasks.coco_names import COCO_CATEGORIES
from vcm_plugin.tasks.predictions import ClassScores, Detections


def noisy_detections(rng: np.random.Generator, boxes_xyxy: np.ndarray, labels: np.ndarray, width: float,
                     height: float, label_pool: list[int]) -> Detections:
    """Jittered copies of the ground truth (some dropped) plus random false positives, random scores."""
    keep = rng.random(len(boxes_xyxy)) < 0.8
    boxes = boxes_xyxy[keep] + rng.normal(0, 6, (int(keep.sum()), 4))
    labels = labels[keep]
    n_fp = int(rng.integers(0, 6))
    x0, y0 = rng.uniform(0, width * 0.7, n_fp), rng.uniform(0, height * 0.7, n_fp)
    fp = np.stack([x0, y0, x0 + rng.uniform(5, width * 0.3, n_fp), y0 + rng.uniform(5, height * 0.3, n_fp)], 1)
    boxes = np.concatenate([boxes.reshape(-1, 4), fp])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    labels = np.concatenate([labels, rng.choice(label_pool, n_fp)]).astype(np.int64)
    return Detections(boxes, rng.random(len(boxes)).astype(np.float32), labels)


@pytest.fixture(scope="module")
def coco_case(shared: Path):
    gt = coco_from_dict(json.loads((shared / "data/coco/annotations/instances_val2017_subset.json").read_text()))
    rng = np.random.default_rng(0)
    ids = sorted(gt.getImgIds())
    preds = {}
    for i in ids:
        anns = gt.imgToAnns[i]
        xyxy = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                         for a in anns]).reshape(-1, 4)
        info = gt.imgs[i]
        preds[i] = noisy_detections(rng, xyxy, np.array([a["category_id"] for a in anns]), info["width"],
                                    info["height"], sorted(gt.getCatIds()))
    order = list(rng.permutation(ids))  # processing order differs from the sorted id order
    evaluator = CocoEvaluator(gt)
    for i in order:
        evaluator.process(int(i), preds[i])
    full = evaluator.evaluate()["bbox/AP"]
    return gt, preds, order, evaluator, full


def test_coco_reaccumulation_equals_cocoeval_on_the_resampled_images(coco_case) -> None:
    gt, preds, order, evaluator, full = coco_case
    resample = evaluator.resampler()
    n = len(order)
    assert resample(np.arange(n)) == pytest.approx(full, abs=1e-9)
    rng = np.random.default_rng(1)
    subset = rng.choice(n, 80, replace=False)  # without repeats: an evaluator on those images alone
    alone = CocoEvaluator(gt)
    for k in subset:
        alone.process(int(order[k]), preds[order[k]])
    assert resample(subset) == pytest.approx(alone.evaluate()["bbox/AP"], abs=1e-9)
    # with repeats: COCOeval on a ground truth where each image appears as often as drawn (copies adjacent)
    idx = rng.integers(0, n, n)
    counts = np.bincount(idx, minlength=n)
    images, annotations, copies = [], [], []
    for k in np.argsort(order):
        image_id = int(order[k])
        for c in range(counts[k]):
            new = image_id * 10 + c
            images.append({**gt.imgs[image_id], "id": new})
            annotations += [{**copy.deepcopy(a), "image_id": new, "id": len(annotations) + j + 1}
                            for j, a in enumerate(gt.imgToAnns[image_id])]
            copies.append((new, preds[image_id]))
    dup_gt = coco_from_dict({"images": images, "annotations": annotations, "categories": gt.dataset["categories"]})
    dup = CocoEvaluator(dup_gt)
    for new, p in copies:
        dup.process(new, p)
    assert resample(idx) == pytest.approx(dup.evaluate()["bbox/AP"], abs=1e-9)
    assert resample(idx) != pytest.approx(full, abs=1e-3)  # a resample is not the full set


def test_oid_pooling_equals_the_metric_on_the_resampled_images(shared: Path) -> None:
    vcm = shared / "data" / "openimages" / "mpeg-vcm"
    classes = read_label_map(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt")
    boxes = read_boxes_csv(vcm / "detection_validation_5k_bbox.csv", set(classes))
    verified = read_labels_csv(vcm / "detection_validation_labels_5k.csv", set(classes))
    name_to_coco = {name.replace(" ", "_"): cid for cid, name in COCO_CATEGORIES.items()}
    rng = np.random.default_rng(2)
    ids = sorted(boxes)[:120]  # group-of boxes included
    samples, preds = {}, {}
    for i in ids:
        w, h = 640, 480
        xyxy = np.array([[b.xmin * w, b.ymin * h, b.xmax * w, b.ymax * h] for b in boxes[i]]).reshape(-1, 4)
        labels = np.array([name_to_coco[b.label] for b in boxes[i]])
        samples[i] = Sample(i, Path(f"{i}.jpg"), h, w)
        preds[i] = noisy_detections(rng, xyxy, labels, w, h, [name_to_coco[c] for c in classes])

    def evaluator_on(image_ids: list[str], gt_boxes=boxes, labels=verified) -> OpenImagesEvaluator:
        ev = OpenImagesEvaluator(gt_boxes, labels, classes)
        for i in image_ids:
            ev.process(Sample(i, Path(f"{i}.jpg"), 480, 640), preds[i.split("#")[0]])
        return ev

    order = list(rng.permutation(ids))
    ev = evaluator_on(order)
    resample = ev.resampler()
    n = len(order)
    assert resample(np.arange(n)) == pytest.approx(ev.evaluate()["oid/mAP50"], abs=1e-9)
    subset = rng.choice(n, 50, replace=False)
    assert resample(subset) == pytest.approx(evaluator_on([order[k] for k in subset]).evaluate()["oid/mAP50"],
                                             abs=1e-9)
    idx = rng.integers(0, n, n)
    counts = np.bincount(idx, minlength=n)
    dup_ids = [f"{order[k]}#{c}" for k in np.argsort(order) for c in range(counts[k])]  # copies sort adjacent
    dup_boxes = {d: boxes[d.split("#")[0]] for d in dup_ids}
    dup_labels = {d: verified[d.split("#")[0]] for d in dup_ids if d.split("#")[0] in verified}
    assert resample(idx) == pytest.approx(evaluator_on(dup_ids, dup_boxes, dup_labels).evaluate()["oid/mAP50"],
                                          abs=1e-9)


def test_top1_is_a_per_image_mean_and_identical_curves_give_a_zero_interval() -> None:
    ev = ClassificationEvaluator(3)
    rng = np.random.default_rng(0)
    for i in range(40):
        ev.process(Sample(i, Path("x"), 1, 1, [{"class_index": i % 3}]), ClassScores(rng.random(3)))
    idx = rng.integers(0, 40, 40)
    assert ev.resampler()(idx) == pytest.approx(np.mean([ev.per_image()[i]["top1"] for i in idx]))
    points = [PerImage(rng.integers(1000, 2000, 40) * (q + 1.0), np.full(40, 1e4),
                       PerImageMean(rng.random(40) * 10 + 10 * q)) for q in range(5)]
    values = bootstrap_bd(points, points, 50, seed=3)
    assert len(values["rate"]) == 50 and np.allclose(values["rate"], 0.0, atol=1e-9)
    draws = resample_points(points, np.random.default_rng(0).integers(0, 40, (20, 40)))
    assert draws.shape == (5, 20, 2)
    assert np.isfinite(bd_resamples(draws, draws * [1.1, 1.0])).all()  # 10 % more bits: +10 % BD-rate
    assert np.allclose(bd_resamples(draws, draws * [1.1, 1.0]), 10.0)


def sample_config(out: Path, codecs: dict, **extra) -> dict:
    return {"name": "bs", "output": str(out), "dataset": {"name": "sample", **extra.pop("dataset", {})},
            "tasks": {"quality": {"model": "image-quality"}}, "codecs": codecs, "anchors": ["jpeg"], **extra}


def read_rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # about 12 s: three codecs on the six sample images, then one image
def test_report_intervals_contain_the_estimate_and_one_image_says_why_there_is_none(tmp_path) -> None:
    codecs = {"jpeg": {"qualities": [10, 20, 40, 70]}, "webp": {"qualities": [10, 30, 60, 90]},
              "jpeg_again": {"codec": "jpeg", "qualities": [10, 20, 40, 70]}}
    run(config_from_dict(sample_config(tmp_path / "a", codecs, report={"bootstrap": 200, "seed": 1})), quiet=True)
    rows = {r["codec"]: r for r in read_rows(tmp_path / "a" / "bd_rate.csv")}
    webp, same = rows["webp"], rows["jpeg_again"]
    assert webp["ci_method"] == "percentile" and webp["bootstrap_b"] == "200" and webp["bootstrap_seed"] == "1"
    assert float(webp["ci_low"]) <= float(webp["bd_rate_percent"]) <= float(webp["ci_high"])
    assert float(same["ci_low"]) == float(same["ci_high"]) == 0.0 and same["differs_95"] == "no"
    md = (tmp_path / "a" / "bd_rate.md").read_text()
    assert f"[{float(webp['ci_low']):+.2f}, {float(webp['ci_high']):+.2f}]" in md and "B = 200" in md
    run(config_from_dict(sample_config(tmp_path / "b", codecs, dataset={"max_images": 1})), quiet=True)
    row = read_rows(tmp_path / "b" / "bd_rate.csv")[0]
    assert row["ci_low"] == "" and "interval undefined with 1 image" in row["note"]


def test_na_for_overlap_proposes_qualities_and_fill_overlap_runs_only_those(tmp_path) -> None:
    codecs = {"jpeg": {"qualities": [5, 8, 12, 16]}, "jpeg_hi": {"codec": "jpeg", "qualities": [70, 80, 90, 95]}}
    config = config_from_dict(sample_config(tmp_path / "o", codecs, report={"bootstrap": 20},
                                            dataset={"max_images": 3}))
    first = run(config, quiet=True)
    row = read_rows(tmp_path / "o" / "bd_rate.csv")[0]
    assert row["bd_rate_percent"] == "" and "n/a: BD-rate needs the curves to overlap" in row["note"]
    assert "to reach the overlap add qualities" in row["note"] and "to jpeg_hi" in row["note"]
    logged: list[str] = []
    summary = run_filling_overlap(config, quiet=True, log=logged.append)
    added = [int(q) for q in logged[0].split("qualities ")[1].split(", ")]
    assert added and all(1 <= q < 70 for q in added)
    assert summary.units_computed == 3 * len(added)  # only the new points' units: nothing else twice
    assert summary.units_cached == first.units_total
    row = read_rows(tmp_path / "o" / "bd_rate.csv")[0]
    assert row["bd_rate_percent"] != "" and row["ci_method"] == "percentile"
