"""The Open Images challenge metric: each rule on a hand-computed case, real MPEG VCM files, masks, CLI.

Boxes are written (xmin, ymin, xmax, ymax), normalised. Expected APs are derived in comments:
entries ranked by score, P = cumulative TP / entries, R = cumulative TP / num_gt, AP = sum over
recall steps of (step width x the best precision at that recall or beyond).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vcm_plugin.cli.oid_eval import add_parser as add_oid_eval_parser
from vcm_plugin.datasets.base import Sample
from vcm_plugin.evaluation.base import EvaluationError
from vcm_plugin.evaluation.oid import (
    OpenImagesEvaluator,
    average_precision,
    evaluate_detections,
    evaluate_masks,
    ground_truth_as_detections,
    precision_recall,
)
from vcm_plugin.evaluation.oid_annotations import (
    DetBox,
    DetMask,
    GTBox,
    GTMask,
    VerifiedLabels,
    encode_mask_string,
    read_boxes_csv,
    read_label_map,
    read_labels_csv,
    write_detections_csv,
    write_mask_detections_csv,
)
from vcm_plugin.evaluation.oid_eval import oid_eval
from vcm_plugin.tasks.coco_names import COCO_CATEGORIES
from vcm_plugin.tasks.predictions import Detections

CLASSES = ["cat", "dog", "person", "elephant"]


def gt(label: str, x0: float, y0: float, x1: float, y1: float, group: bool = False) -> GTBox:
    return GTBox(label, x0, y0, x1, y1, group)


def det(label: str, score: float, x0: float, y0: float, x1: float, y1: float) -> DetBox:
    return DetBox(label, score, x0, y0, x1, y1)


def pos(*names: str, neg: tuple[str, ...] = ()) -> VerifiedLabels:
    return VerifiedLabels(frozenset(names), frozenset(neg))


@pytest.fixture(scope="module")
def vcm(shared: Path) -> Path:
    """The MPEG VCM OpenImages files in ../shared (the test skips without them)."""
    return shared / "data" / "openimages" / "mpeg-vcm"


# -- AP formula ----------------------------------------------------------------------------------
def test_ap_interpolation_on_a_three_detection_ranking():
    # 3 disjoint cats; ranking 0.9 TP, 0.8 FP, 0.7 TP -> P = 1, 1/2, 2/3 at R = 1/3, 1/3, 2/3.
    # Envelope: 1 at R 1/3, 2/3 at R 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    boxes = {"a": [gt("cat", 0.0, 0, 0.2, 0.2), gt("cat", 0.4, 0, 0.6, 0.2), gt("cat", 0.8, 0, 1.0, 0.2)]}
    dets = {"a": [det("cat", 0.9, 0.0, 0, 0.2, 0.2), det("cat", 0.8, 0.0, 0.5, 0.2, 0.7),
                  det("cat", 0.7, 0.4, 0, 0.6, 0.2)]}
    result = evaluate_detections(boxes, {"a": pos("cat")}, dets, CLASSES)
    assert result.per_class == {"cat": pytest.approx(5 / 9)}
    assert result.mAP == pytest.approx(5 / 9)
    assert (result.scored, result.true_positives, result.num_gt) == (3, 2.0, {"cat": 3.0})
    precision, recall = precision_recall(np.array([0.7, 0.9, 0.8]), np.array([1.0, 1.0, 0.0]), 3)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3])
    assert average_precision(precision, recall) == pytest.approx(5 / 9)
    # precision rising later lifts the earlier steps: P .5 then 1 at R .5, 1 -> envelope 1, 1 -> AP 1
    assert average_precision(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0


def official_ap(precision: list[float], recall: list[float]) -> float:
    """compute_average_precision written out as in VOCdevkit (loops, independent of the package)."""
    if not precision:
        return 0.0
    mrec = [0.0, *recall, 1.0]
    mpre = [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def reference_map(boxes, verified, dets, classes, thr=0.5):
    """A straightforward per-class re-implementation of the challenge rules (distinct scores assumed)."""
    def overlap(d, b, over_det):
        iw = max(0.0, min(d.xmax, b.xmax) - max(d.xmin, b.xmin))
        ih = max(0.0, min(d.ymax, b.ymax) - max(d.ymin, b.ymin))
        a_d = (d.xmax - d.xmin) * (d.ymax - d.ymin)
        a_b = (b.xmax - b.xmin) * (b.ymax - b.ymin)
        return iw * ih / (a_d if over_det else a_d + a_b - iw * ih)

    aps = {}
    images = sorted(set(boxes) | set(verified))
    for c in classes:
        entries, npos = [], 0
        for img in images:
            g = boxes.get(img, [])
            v = verified.get(img, VerifiedLabels())
            if c not in v.positive | v.negative | {b.label for b in g}:
                continue
            free = [b for b in g if b.label == c and not b.is_group_of]
            groups = [b for b in g if b.label == c and b.is_group_of]
            npos += len(free) + len(groups)
            ds = sorted((d for d in dets.get(img, []) if d.label == c and d.xmin < d.xmax and d.ymin < d.ymax),
                        key=lambda d: -d.score)
            taken, status = [False] * len(free), [None] * len(ds)
            for k, d in enumerate(ds):
                if free:
                    ious = [overlap(d, b, False) for b in free]
                    j = ious.index(max(ious))
                    if ious[j] >= thr and not taken[j]:
                        taken[j], status[k] = True, "tp"
            best: dict[int, float] = {}
            for k, d in enumerate(ds):
                if status[k] is None and groups:
                    ioas = [overlap(d, b, True) for b in groups]
                    j = ioas.index(max(ioas))
                    if ioas[j] >= thr:
                        status[k], best[j] = "group", max(best.get(j, 0.0), d.score)
            entries += [(d.score, 1.0 if s == "tp" else 0.0) for d, s in zip(ds, status) if s != "group"]
            entries += [(s, 1.0) for s in best.values() if s > 0]
        if npos == 0:
            continue
        entries.sort(key=lambda e: -e[0])
        tp = fp = 0.0
        precision, recall = [], []
        for _, label in entries:
            tp, fp = tp + label, fp + (label <= 0)
            precision.append(tp / (tp + fp))
            recall.append(tp / npos)
        aps[c] = official_ap(precision, recall)
    return aps


def test_random_case_matches_a_straightforward_implementation():
    rng = np.random.default_rng(7)

    def box(label, group=False):
        x0, y0 = rng.uniform(0, 0.8, 2)
        w, h = rng.uniform(0.05, 0.5, 2)
        return GTBox(label, x0, y0, min(1.0, x0 + w), min(1.0, y0 + h), group)

    boxes, verified, dets = {}, {}, {}
    for i in range(40):
        img = f"img{i:02d}"
        boxes[img] = [box(str(rng.choice(CLASSES)), bool(rng.random() < 0.2)) for _ in range(rng.integers(0, 6))]
        negatives = tuple(str(c) for c in rng.choice(CLASSES, 2, replace=False) if rng.random() < 0.3)
        verified[img] = pos(*{b.label for b in boxes[img]}, neg=tuple(set(negatives) - {b.label for b in boxes[img]}))
        dets[img] = []
        for b in boxes[img]:  # jittered copies of the ground truth (some duplicates, some inside group boxes)
            for _ in range(rng.integers(0, 3)):
                jit = rng.normal(0, 0.04, 4)
                dets[img].append(DetBox(b.label, 0.0, b.xmin + jit[0], b.ymin + jit[1], b.xmax + jit[2],
                                        b.ymax + jit[3]))
        for _ in range(rng.integers(0, 4)):  # strays
            b = box("x")
            dets[img].append(DetBox(str(rng.choice(CLASSES)), 0.0, b.xmin, b.ymin, b.xmax, b.ymax))
    scores = rng.permutation(sum(map(len, dets.values()))) / 1000 + 0.001  # distinct: no tie-order question
    k = 0
    for img in dets:
        dets[img] = [DetBox(d.label, float(scores[k + j]), d.xmin, d.ymin, d.xmax, d.ymax)
                     for j, d in enumerate(dets[img])]
        k += len(dets[img])
    expected = reference_map(boxes, verified, dets, CLASSES)
    result = evaluate_detections(boxes, verified, dets, CLASSES)
    assert set(result.per_class) == set(expected) and len(expected) == 4
    for c in expected:
        assert result.per_class[c] == pytest.approx(expected[c], abs=1e-12), c
    assert 0.2 < result.mAP < 0.95  # a non-trivial case
    assert result.ignored["group_of"] > 0 and result.ignored["unverified_class"] > 0


# -- per-image rules ----------------------------------------------------------------------------------
def test_unverified_class_is_ignored():
    # a: cat verified, dog NOT verified -> the dog detection on a is ignored.
    # dog: only b's 0.5 TP -> AP 1 (counted as FP it would be 0.95 FP, 0.5 TP -> AP 1/2).
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)], "b": [gt("dog", 0, 0, 0.5, 0.5)]}
    dets = {"a": [det("cat", 0.9, 0, 0, 0.5, 0.5), det("dog", 0.95, 0.6, 0.6, 0.9, 0.9)],
            "b": [det("dog", 0.5, 0, 0, 0.5, 0.5)]}
    result = evaluate_detections(boxes, {"a": pos("cat"), "b": pos("dog")}, dets, CLASSES)
    assert result.per_class == {"cat": 1.0, "dog": 1.0}
    assert result.ignored == {"unverified_class": 1}


def test_verified_negative_class_detections_are_false_positives():
    # same, but dog is verified ABSENT on a: dog ranking 0.95 FP, 0.5 TP, num_gt 1 -> P 0, 1/2 at R 0, 1 -> AP 1/2.
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)], "b": [gt("dog", 0, 0, 0.5, 0.5)]}
    dets = {"a": [det("cat", 0.9, 0, 0, 0.5, 0.5), det("dog", 0.95, 0.6, 0.6, 0.9, 0.9)],
            "b": [det("dog", 0.5, 0, 0, 0.5, 0.5)]}
    result = evaluate_detections(boxes, {"a": pos("cat", neg=("dog",)), "b": pos("dog")}, dets, CLASSES)
    assert result.per_class == {"cat": 1.0, "dog": pytest.approx(0.5)}
    assert result.mAP == pytest.approx(0.75)
    assert result.ignored == {}


def test_a_class_with_boxes_is_evaluated_without_an_image_level_label():
    # no labels at all on a, but cat has a box there: 0.9 FP (elsewhere), 0.8 TP -> AP 1/2
    # (were cat unverified, both would be ignored and AP 0).
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)]}
    dets = {"a": [det("cat", 0.9, 0.6, 0.6, 0.9, 0.9), det("cat", 0.8, 0, 0, 0.5, 0.5)]}
    assert evaluate_detections(boxes, {}, dets, CLASSES).per_class == {"cat": pytest.approx(0.5)}


def test_group_of_best_detection_counts_once_and_the_others_are_ignored():
    # person: group-of box G [0,0,.5,.5] and box B [.6,.6,.9,.9]; num_gt = 1 + 1 = 2.
    # Inside G (IoA 1, IoU small): 0.9, 0.8, 0.3 -> ONE TP at 0.9, 0.8 and 0.3 ignored.
    # 0.85 hits nothing -> FP; 0.7 on B -> TP. Ranking 0.9 TP, 0.85 FP, 0.7 TP:
    # P 1, 1/2, 2/3 at R 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # (inside-G as FP: 0.9 TP .85 FP .8 FP .7 TP .3 FP -> 1/2 + 1/2 * 1/2 = 3/4; each as TP: other values.)
    boxes = {"a": [gt("person", 0, 0, 0.5, 0.5, group=True), gt("person", 0.6, 0.6, 0.9, 0.9)]}
    dets = {"a": [det("person", 0.9, 0, 0, 0.1, 0.1), det("person", 0.85, 0.6, 0, 0.9, 0.3),
                  det("person", 0.8, 0.2, 0.2, 0.3, 0.3), det("person", 0.7, 0.6, 0.6, 0.9, 0.9),
                  det("person", 0.3, 0.3, 0.3, 0.45, 0.45)]}
    result = evaluate_detections(boxes, {"a": pos("person")}, dets, CLASSES)
    assert result.per_class == {"person": pytest.approx(5 / 6)}
    assert result.num_gt == {"person": 2.0}
    assert result.ignored == {"group_of": 3}
    assert (result.scored, result.true_positives) == (3, 2.0)


def test_group_of_box_without_detections_is_a_missed_instance():
    # G has nothing inside, B is found: one TP out of num_gt 2 -> AP = 1/2 * 1 = 1/2
    boxes = {"a": [gt("person", 0, 0, 0.5, 0.5, group=True), gt("person", 0.6, 0.6, 0.9, 0.9)]}
    dets = {"a": [det("person", 0.9, 0.6, 0.6, 0.9, 0.9)]}
    assert evaluate_detections(boxes, {"a": pos("person")}, dets, CLASSES).per_class == {"person": 0.5}


def test_duplicate_on_a_box_inside_a_group_of_box_is_absorbed_not_false():
    # B [.1,.1,.3,.3] inside group G [0,0,1,1]. 0.9 on B: TP. 0.8 also on B: B is taken -> not a TP,
    # so it goes on to the group-of test (IoA 1) and G yields a TP at 0.8. num_gt 2 -> AP 1.
    # (Kept as FP it would give 0.9 TP, 0.8 FP, AP 1/2.)
    boxes = {"a": [gt("cat", 0, 0, 1, 1, group=True), gt("cat", 0.1, 0.1, 0.3, 0.3)]}
    dets = {"a": [det("cat", 0.9, 0.1, 0.1, 0.3, 0.3), det("cat", 0.8, 0.1, 0.1, 0.3, 0.3)]}
    assert evaluate_detections(boxes, {"a": pos("cat")}, dets, CLASSES).per_class == {"cat": 1.0}


def test_duplicate_detection_on_one_box_is_a_false_positive():
    # A [0,0,.4,.4], B [.6,.6,1,1]; 0.9 on A TP, 0.8 on A again (IoU .9) FP, 0.7 on B TP:
    # P 1, 1/2, 2/3 at R 1/2, 1/2, 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6.
    boxes = {"a": [gt("dog", 0, 0, 0.4, 0.4), gt("dog", 0.6, 0.6, 1, 1)]}
    dets = {"a": [det("dog", 0.9, 0, 0, 0.4, 0.4), det("dog", 0.8, 0, 0, 0.4, 0.36),
                  det("dog", 0.7, 0.6, 0.6, 1, 1)]}
    assert evaluate_detections(boxes, {"a": pos("dog")}, dets, CLASSES).per_class == {"dog": pytest.approx(5 / 6)}


def test_a_detection_only_tries_its_best_overlapping_box():
    # A [0,0,.5,1], B [.3,0,.8,1]. 0.9 = A: TP. 0.8 [.14,0,.64,1]: IoU with A .36/.64 = .5625,
    # with B .34/.66 = .515 -> its best box is A, already taken -> FP (B is NOT tried), B missed.
    # Ranking TP, FP with num_gt 2 -> AP = 1/2 * 1 = 1/2 (a "best free box" rule would give 1).
    boxes = {"a": [gt("cat", 0, 0, 0.5, 1), gt("cat", 0.3, 0, 0.8, 1)]}
    dets = {"a": [det("cat", 0.9, 0, 0, 0.5, 1), det("cat", 0.8, 0.14, 0, 0.64, 1)]}
    assert evaluate_detections(boxes, {"a": pos("cat")}, dets, CLASSES).per_class == {"cat": 0.5}


@pytest.mark.parametrize(("width", "ap"), [(0.2501, 1.0), (0.25, 1.0), (0.2499, 0.0)])
def test_iou_threshold_is_inclusive(width, ap):
    # GT [0,0,.5,1] (area .5), detection [0,0,w,1] inside it: IoU = w / .5 -> .5002, exactly .5, .4998
    boxes = {"a": [gt("cat", 0, 0, 0.5, 1)]}
    dets = {"a": [det("cat", 0.9, 0, 0, width, 1)]}
    assert evaluate_detections(boxes, {"a": pos("cat")}, dets, CLASSES).per_class == {"cat": ap}


def test_iou_parameter():
    boxes = {"a": [gt("cat", 0, 0, 0.5, 1)]}
    near = {"a": [det("cat", 0.9, 0, 0, 0.4, 1)]}  # IoU .8
    far = {"a": [det("cat", 0.9, 0, 0, 0.35, 1)]}  # IoU .7
    assert evaluate_detections(boxes, {}, near, CLASSES, iou=0.75).per_class == {"cat": 1.0}
    assert evaluate_detections(boxes, {}, far, CLASSES, iou=0.75).per_class == {"cat": 0.0}
    with pytest.raises(EvaluationError, match="IoU threshold 0 is not in"):
        evaluate_detections(boxes, {}, far, CLASSES, iou=0)


def test_official_unit_test_case_with_group_of_weight_half():
    # The case of the TF OpenImagesChallengeEvaluatorTest (absolute coordinates, squares), weight 0.5:
    # cat num_gt = 1 + .5 + 2 = 3.5; entries 0.8 FP, 0.7 TP -> AP = (1/3.5) * 1/2 = 1/7.
    # elephant num_gt = 1 + .5; one group entry of weight .5 -> P 1 at R 1/3 -> AP 1/3.
    # dog: img1 (verified) 0.8 FP, 0.7 FP; img2 dog unverified -> ignored; img3 0.5 TP -> AP 1/3.
    boxes = {"img1": [gt("cat", 0, 0, 1, 1), gt("elephant", 0, 0, 2, 2), gt("cat", 0, 0, 3, 3, True)],
             "img2": [gt("cat", 10, 10, 11, 11), gt("cat", 500, 500, 510, 510), gt("elephant", 10, 10, 12, 12, True)],
             "img3": [gt("dog", 0, 0, 1, 1)]}
    verified = {"img1": pos("cat", "dog", "elephant")}
    dets = {"img1": [det("dog", 0.7, 10, 10, 11, 11), det("dog", 0.8, 100, 100, 120, 120)],
            "img2": [det("cat", 0.7, 10, 10, 11, 11), det("cat", 0.8, 100, 100, 120, 120),
                     det("dog", 0.5, 100, 100, 220, 220), det("elephant", 0.9, 10, 10, 11, 11)],
            "img3": [det("dog", 0.5, 0, 0, 1, 1)]}
    result = evaluate_detections(boxes, verified, dets, ["cat", "dog", "elephant"], group_of_weight=0.5)
    assert result.per_class == {"cat": pytest.approx(1 / 7), "dog": pytest.approx(1 / 3),
                                "elephant": pytest.approx(1 / 3)}
    assert result.mAP == pytest.approx(0.269841269)


def test_zero_area_ground_truth_is_kept_and_never_matched():
    # two cats, one of zero width; the detection on it is an empty box (dropped), so one TP of 2 -> AP 1/2
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5), gt("cat", 0.7, 0.2, 0.7, 0.6)]}
    dets = {"a": [det("cat", 0.9, 0, 0, 0.5, 0.5), det("cat", 0.8, 0.7, 0.2, 0.7, 0.6)]}
    result = evaluate_detections(boxes, {}, dets, CLASSES)
    assert result.per_class == {"cat": 0.5} and result.num_gt == {"cat": 2.0}
    assert result.ignored == {"invalid_box": 1}


def test_empty_detection_set_scores_zero_over_classes_with_ground_truth():
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)], "b": [gt("dog", 0, 0, 1, 1, group=True)]}
    result = evaluate_detections(boxes, {"a": pos("cat", neg=("person",))}, {}, CLASSES)
    assert result.per_class == {"cat": 0.0, "dog": 0.0}  # person (negative only) and elephant have no ground truth
    assert result.mAP == 0.0 and result.images == 2 and result.detections == 0
    assert math.isnan(evaluate_detections({}, {"a": pos(neg=("cat",))}, {}, CLASSES).mAP)


def test_unknown_classes_and_images():
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)]}
    dets = {"a": [det("cat", 0.9, 0, 0, 0.5, 0.5), det("zebra", 0.95, 0, 0, 0.5, 0.5)],
            "zzz": [det("cat", 0.9, 0, 0, 0.5, 0.5)]}
    result = evaluate_detections(boxes, {}, dets, CLASSES)
    assert result.per_class == {"cat": 1.0}
    assert result.ignored == {"unknown_class": 1, "unknown_image": 1} and result.detections == 3
    with pytest.raises(EvaluationError, match="image id a: ground-truth class 'horse' is not among the 4"):
        evaluate_detections({"a": [gt("horse", 0, 0, 1, 1)]}, {}, {}, CLASSES)
    with pytest.raises(EvaluationError, match="image id a: verified class 'horse'"):
        evaluate_detections({}, {"a": pos("horse")}, {}, CLASSES)


# -- real MPEG VCM files ---------------------------------------------------------------------------------
def nested_group_of_expectation(boxes: dict[str, list[GTBox]]) -> tuple[float, int]:
    """mAP of the ground truth fed back as detections, derived independently.

    Every non-group-of box finds itself (IoU 1). A group-of box is hit by its own detection
    unless an EARLIER group-of box of the same class contains it (IoA 1 with both: the first
    wins the tie); no detection is a false positive. So AP_c = (num_gt_c - shadowed_c) / num_gt_c.
    """
    total, shadowed = Counter(), Counter()
    for image_boxes in boxes.values():
        for j, b in enumerate(image_boxes):
            total[b.label] += 1
            if b.is_group_of and any(
                    a.is_group_of and a.label == b.label and a.xmin <= b.xmin and a.ymin <= b.ymin
                    and a.xmax >= b.xmax and a.ymax >= b.ymax for a in image_boxes[:j]):
                shadowed[b.label] += 1
    return sum((total[c] - shadowed[c]) / total[c] for c in total) / len(total), sum(shadowed.values())


@pytest.mark.parametrize(("boxes_csv", "labels_csv", "n_shadowed", "expected_map"), [
    ("detection_validation_5k_bbox.csv", "detection_validation_labels_5k.csv", 50, 0.9990144894065078),
    ("segmentation_validation_bbox_5k.csv", "segmentation_validation_labels_5k.csv", 84, 0.9991360817179425),
])
def test_ground_truth_as_detections_on_the_real_5k_files(vcm, boxes_csv, labels_csv, n_shadowed, expected_map):
    classes = read_label_map(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt")
    boxes = read_boxes_csv(vcm / boxes_csv, set(classes))
    verified = read_labels_csv(vcm / labels_csv, set(classes))
    result = evaluate_detections(boxes, verified, ground_truth_as_detections(boxes), classes)
    n_boxes = sum(map(len, boxes.values()))
    n_group = sum(b.is_group_of for v in boxes.values() for b in v)
    assert result.images == 5000 and len(result.per_class) == 47 and sum(result.num_gt.values()) == n_boxes
    # no false positive: every non-group box is a TP, every hit group-of box one TP
    assert result.scored == result.true_positives == n_boxes - n_shadowed
    assert result.ignored == {"group_of": n_group}
    expectation, shadowed = nested_group_of_expectation(boxes)
    assert shadowed == n_shadowed
    assert result.mAP == pytest.approx(expectation, abs=1e-12)
    assert result.mAP == pytest.approx(expected_map, abs=1e-12)
    # classes without nested group-of boxes are exactly perfect
    assert sum(ap == pytest.approx(1.0, abs=1e-12) for ap in result.per_class.values()) >= 40


# -- the streaming evaluator ----------------------------------------------------------------------------------
NAME_TO_COCO = {name.replace(" ", "_"): cid for cid, name in COCO_CATEGORIES.items()}


def to_detections(boxes: list[GTBox], width: int, height: int, extra: list[tuple] = ()) -> Detections:
    rows = [(NAME_TO_COCO[b.label], 1.0, b.xmin * width, b.ymin * height, b.xmax * width, b.ymax * height)
            for b in boxes] + list(extra)
    if not rows:
        return Detections.empty()
    arr = np.array(rows, dtype=np.float64)
    return Detections(arr[:, 2:], arr[:, 1], arr[:, 0].astype(np.int64))


def test_evaluator_on_real_images_in_pixels(vcm):
    classes = read_label_map(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt")
    boxes = read_boxes_csv(vcm / "detection_validation_5k_bbox.csv", set(classes))
    verified = read_labels_csv(vcm / "detection_validation_labels_5k.csv", set(classes))
    sizes = json.loads((vcm / "extra" / "Openimage_numpixel_test5000.json").read_text())  # id: [h, w, h*w]
    # 300 images without group-of boxes, so pixel round-off cannot change a tie
    ids = [i for i in sorted(boxes) if not any(b.is_group_of for b in boxes[i])][:300]
    evaluator = OpenImagesEvaluator(boxes, verified, classes)
    for image_id in ids:
        h, w, _ = sizes[image_id]
        # plus a chair (COCO 62, not evaluated: dropped) and a bed (65: not among the 47)
        extra = [(62, 0.99, 0, 0, w / 2, h / 2), (65, 0.98, 0, 0, w, h)]
        evaluator.process(Sample(image_id, Path(f"{image_id}.jpg"), h, w), to_detections(boxes[image_id], w, h, extra))
    metrics = evaluator.evaluate()
    present = {b.label for i in ids for b in boxes[i]}
    assert metrics["oid/mAP50"] == pytest.approx(100.0, abs=1e-9)
    assert {k for k, v in metrics.items() if not math.isnan(v)} == {"oid/mAP50"} | {f"oid/AP50/{c}" for c in present}
    assert len(metrics) == 48 and "oid/AP50/cell_phone" in metrics
    result = evaluator.result()
    assert result.ignored == {"unknown_class": 600} and result.images == 300
    # the same images through the CSV-level function agree
    sub = {i: boxes[i] for i in ids}
    assert evaluate_detections(sub, {i: verified[i] for i in ids}, ground_truth_as_detections(sub),
                               classes).mAP == pytest.approx(1.0, abs=1e-12)


def test_evaluator_bad_inputs_and_empty_detections():
    boxes = {"a": [gt("cell_phone", 0, 0, 0.5, 0.5)], "b": [gt("cat", 0, 0, 1, 1)]}
    evaluator = OpenImagesEvaluator(boxes, {}, ["cell_phone", "cat", "dog"])
    with pytest.raises(EvaluationError, match="no image was processed"):
        evaluator.evaluate()
    with pytest.raises(EvaluationError, match="image id nope is not in the Open Images annotations"):
        evaluator.process(Sample("nope", Path("x.jpg"), 10, 10), Detections.empty())
    evaluator.process(Sample("a", Path("a.jpg"), 100, 200), Detections.empty())
    with pytest.raises(EvaluationError, match="image id a was already processed"):
        evaluator.process(Sample("a", Path("a.jpg"), 100, 200), Detections.empty())
    with pytest.raises(EvaluationError, match=r"category id\(s\) \[12\] have no class name"):
        evaluator.process(Sample("b", Path("b.jpg"), 10, 10), Detections([[0, 0, 1, 1]], [0.5], [12]))
    metrics = evaluator.evaluate()  # only a processed: cell_phone 0, cat/dog without ground truth there
    assert metrics["oid/mAP50"] == 0.0 and metrics["oid/AP50/cell_phone"] == 0.0
    assert math.isnan(metrics["oid/AP50/cat"]) and math.isnan(metrics["oid/AP50/dog"])
    evaluator.reset()
    # 'cell phone' (COCO 77) -> cell_phone; pixels 0..100 x 0..50 of a 200 x 100 image = [0, 0, .5, .5]
    evaluator.process(Sample("a", Path("a.jpg"), 100, 200), Detections([[0, 0, 100, 50]], [0.5], [77]))
    assert evaluator.evaluate()["oid/mAP50"] == pytest.approx(100.0)
    with pytest.raises(EvaluationError, match="iou_type must be one of"):
        OpenImagesEvaluator(boxes, {}, ["cat"], iou_type="keypoints")


def test_evaluator_ignores_a_detection_of_an_unverified_class():
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)], "b": [gt("dog", 0, 0, 0.5, 0.5)]}
    evaluator = OpenImagesEvaluator(boxes, {"a": pos("cat")}, CLASSES)
    # a dog (COCO 18) on a, where dog is not verified: ignored -> dog AP stays 1 (as FP: 1/2)
    evaluator.process(Sample("a", Path("a.jpg"), 10, 10), Detections([[0, 0, 5, 5], [6, 6, 9, 9]], [0.9, 0.95],
                                                                      [17, 18]))
    evaluator.process(Sample("b", Path("b.jpg"), 10, 10), Detections([[0, 0, 5, 5]], [0.5], [18]))
    assert evaluator.evaluate()["oid/AP50/dog"] == pytest.approx(100.0)
    assert evaluator.result().ignored == {"unverified_class": 1}


# -- instance segmentation ---------------------------------------------------------------------------------
def rle(pixels: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode("ascii")}


def block(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    pixels = np.zeros(shape, np.uint8)
    pixels[r0:r1, c0:c1] = 1
    return pixels


def gt_mask(label: str, pixels: np.ndarray | None, box: tuple, group: bool = False) -> GTMask:
    h, w = (10, 10) if pixels is None else pixels.shape
    return GTMask(label, *box, group, w, h, None if pixels is None else rle(pixels)["counts"])


def det_mask(label: str, score: float, pixels: np.ndarray) -> DetMask:
    return DetMask(label, score, pixels.shape[1], pixels.shape[0], rle(pixels)["counts"])


def test_hand_computed_mask_iou():
    # GT rows 0-3 x cols 0-4 (20 px); detection rows 0-3 x cols 1-5 (20 px): 16 shared -> IoU 16/24 = 2/3.
    # Second detection cols 2-6: 12 shared, union 28 -> IoU 3/7 < 1/2.
    g = rle(block(0, 4, 0, 5))
    assert mask_utils.iou([rle(block(0, 4, 1, 6))], [g], [0])[0, 0] == pytest.approx(2 / 3)
    assert mask_utils.iou([rle(block(0, 4, 2, 7))], [g], [0])[0, 0] == pytest.approx(3 / 7)
    masks = {"a": [gt_mask("cat", block(0, 4, 0, 5), (0, 0, 0.5, 0.4))]}
    # 0.8 with IoU 3/7 (FP), then 0.5 with IoU 2/3 (TP): P 0, 1/2 at R 0, 1 -> AP 1/2
    dets = {"a": [det_mask("cat", 0.8, block(0, 4, 2, 7)), det_mask("cat", 0.5, block(0, 4, 1, 6))]}
    result = evaluate_masks(None, {}, masks, dets, CLASSES)
    assert result.per_class == {"cat": pytest.approx(0.5)}


def test_masks_not_boxes_decide_a_match():
    # GT mask: top half (rows 0-4) of a box covering the whole image.
    # Detection 0.9: bottom half -> mask IoU 0 (its box, rows 5-9, would have box IoU 1/2 with the GT box): FP.
    # Detection 0.8: rows 0-5 -> mask IoU 50/60 -> TP. Ranking FP, TP -> AP 1/2.
    masks = {"a": [gt_mask("dog", block(0, 5, 0, 10), (0, 0, 1, 1))]}
    dets = {"a": [det_mask("dog", 0.9, block(5, 10, 0, 10)), det_mask("dog", 0.8, block(0, 6, 0, 10))]}
    assert evaluate_masks(None, {}, masks, dets, CLASSES).per_class == {"dog": 0.5}


def test_mask_group_of_uses_ioa_and_box_without_mask_is_ignored():
    # person: group-of mask = top-left quadrant; two small detections inside (IoA 1, IoU 4/25 and 9/25):
    # one TP at 0.7, 0.6 ignored. A person box WITHOUT a mask at [.5,.5,1,1]: not counted; a detection
    # exactly there (by its mask's box, outside the group mask) is ignored, not FP.
    # num_gt 1, one TP entry -> AP 1; ignored: 2 absorbed by the group-of mask, 1 on the mask-less box.
    masks = {"a": [gt_mask("person", block(0, 5, 0, 5), (0, 0, 0.5, 0.5), group=True),
                   gt_mask("person", None, (0.5, 0.5, 1.0, 1.0))]}
    dets = {"a": [det_mask("person", 0.7, block(1, 3, 1, 3)), det_mask("person", 0.6, block(2, 5, 2, 5)),
                  det_mask("person", 0.95, block(5, 10, 5, 10))]}
    result = evaluate_masks(None, {}, masks, dets, CLASSES)
    assert result.per_class == {"person": 1.0} and result.num_gt == {"person": 1.0}
    assert result.ignored == {"group_of": 2, "box_only": 1}


def test_official_instance_segmentation_case():
    # The TF test_returns_correct_instance_segm_metric_values case on 3 x 4 masks (boxes normalised):
    # img1: cat with a 1-px mask, dog box without mask, cat group-of box without mask; img3: dog with a mask.
    # img1 dog detection lands on the mask-less dog box -> ignored; img1 cat detection has an empty mask
    # -> dropped; img3 dog TP. dog AP 1, cat (num_gt 1, nothing ranked) AP 0 -> mAP 1/2.
    px = np.zeros((3, 4), np.uint8)
    px[0, 0] = 1
    two = np.zeros((3, 4), np.uint8)
    two[0:2, 0:2] = 1
    masks = {"img1": [gt_mask("cat", px, (0, 0, 0.25, 1 / 3)), GTMask("dog", 0, 0, 0.5, 2 / 3, False, 4, 3, None),
                      GTMask("cat", 0, 0, 0.75, 1, True, 4, 3, None)],
             "img3": [gt_mask("dog", px, (0, 0, 0.25, 1 / 3))]}
    dets = {"img1": [det_mask("dog", 0.7, two), det_mask("cat", 0.8, np.zeros((3, 4), np.uint8))],
            "img3": [det_mask("dog", 0.5, px)]}
    result = evaluate_masks(None, {"img1": pos("cat", "dog")}, masks, dets, ["cat", "dog"])
    assert result.per_class == {"cat": 0.0, "dog": 1.0} and result.mAP == 0.5
    assert result.ignored == {"box_only": 1, "invalid_box": 1}


def test_boxes_join_masks_on_exact_coordinates():
    # the box row and the mask row describe the same cat; equal coordinates -> one instance (num_gt 1).
    # A 1e-7 difference (as in the MPEG VCM excerpt) -> a mask-less box (not counted) + a masked instance.
    pixels = block(0, 5, 0, 5)
    boxes = {"a": [gt("cat", 0, 0, 0.5, 0.5)]}
    same = {"a": [gt_mask("cat", pixels, (0, 0, 0.5, 0.5))]}
    shifted = {"a": [gt_mask("cat", pixels, (0, 0, 0.5000001, 0.5))]}
    dets = {"a": [det_mask("cat", 0.9, pixels)]}
    joined = evaluate_masks(boxes, {}, same, dets, CLASSES)
    apart = evaluate_masks(boxes, {}, shifted, dets, CLASSES)
    assert joined.num_gt == apart.num_gt == {"cat": 1.0}
    assert joined.per_class == apart.per_class == {"cat": 1.0}
    only_boxes = evaluate_masks(boxes, {}, {}, dets, CLASSES)  # no masks at all: nothing counted
    assert only_boxes.per_class == {} and only_boxes.ignored == {"box_only": 1}
    with pytest.raises(EvaluationError, match="detection mask 0 is 6x10"):
        evaluate_masks(boxes, {}, same, {"a": [det_mask("cat", 0.9, np.ones((6, 10), np.uint8))]}, CLASSES)


def test_segm_evaluator_takes_boxes_from_masks():
    masks = {"a": [gt_mask("cat", block(0, 5, 0, 5), (0, 0, 0.5, 0.5))]}
    evaluator = OpenImagesEvaluator({}, {}, CLASSES, gt_masks=masks, iou_type="segm")
    good = rle(block(0, 5, 0, 4))  # IoU 20/25
    # the detection box is far off, the mask decides: TP
    evaluator.process(Sample("a", Path("a.jpg"), 10, 10), Detections([[8, 8, 9, 9]], [0.9], [17], [good]))
    assert evaluator.evaluate() == {"oid_segm/mAP50": 100.0, **{f"oid_segm/AP50/{c}": pytest.approx(
        100.0 if c == "cat" else math.nan, nan_ok=True) for c in CLASSES}}
    evaluator.reset()
    with pytest.raises(EvaluationError, match="segm evaluation needs masks"):
        evaluator.process(Sample("a", Path("a.jpg"), 10, 10), Detections([[0, 0, 5, 5]], [0.9], [17]))
    with pytest.raises(EvaluationError, match=r"the ground-truth masks are 10x10 \(h x w\), the sample is 20x10"):
        evaluator.process(Sample("a", Path("a.jpg"), 20, 10), Detections.empty(with_masks=True))
    with pytest.raises(EvaluationError, match="needs gt_masks"):
        OpenImagesEvaluator({}, {}, CLASSES, iou_type="segm")


# -- command line ---------------------------------------------------------------------------------------------
def test_oid_eval_cli(tmp_path, capsys):
    (tmp_path / "b.csv").write_text("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n"
                                    "a,cat,0,0.2,0,0.2,0\na,cat,0.4,0.6,0,0.2,0\na,cat,0.8,1.0,0,0.2,0\n")
    (tmp_path / "l.csv").write_text("ImageID,LabelName,Confidence\na,cat,1\na,dog,0\n")
    (tmp_path / "m.txt").write_text("cat\ndog")
    write_detections_csv(tmp_path / "d.csv", {"a": [
        det("cat", 0.9, 0.0, 0, 0.2, 0.2), det("cat", 0.8, 0, 0.5, 0.2, 0.7), det("cat", 0.7, 0.4, 0, 0.6, 0.2),
        det("dog", 0.6, 0, 0, 1, 1)]})
    out = oid_eval(tmp_path / "b.csv", tmp_path / "l.csv", tmp_path / "m.txt", tmp_path / "d.csv")
    # the 3-detection ranking of test_ap_interpolation (5/9); dog has no ground truth -> not averaged
    assert out["mAP"] == pytest.approx(5 / 9) and out["per_class"] == {"cat": pytest.approx(5 / 9)}
    assert (out["images"], out["classes"], out["detections"], out["units"]) == (1, 1, 4, "fraction")
    json.dumps(out)

    parser = argparse.ArgumentParser()
    add_oid_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["oid-eval", "--boxes", str(tmp_path / "b.csv"), "--labels", str(tmp_path / "l.csv"),
                              "--labelmap", str(tmp_path / "m.txt"), "--detections", str(tmp_path / "d.csv")])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx(5 / 9)

    (tmp_path / "bad.txt").write_text("dog\n")  # cat is not in this label map
    with pytest.raises(EvaluationError, match=r"b\.csv:2: class 'cat' is not in the label map"):
        oid_eval(tmp_path / "b.csv", tmp_path / "l.csv", tmp_path / "bad.txt", tmp_path / "d.csv")


def test_oid_eval_cli_with_masks(tmp_path):
    pixels = block(0, 5, 0, 5)
    counts = rle(pixels)["counts"]
    (tmp_path / "b.csv").write_text("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\na,cat,0,0.5,0,0.5,0\n")
    (tmp_path / "l.csv").write_text("ImageID,LabelName,Confidence\na,cat,1\n")
    (tmp_path / "m.pbtxt").write_text('item { name: "cat" id: 1 }\n')
    (tmp_path / "masks.csv").write_text("ImageID,LabelName,ImageWidth,ImageHeight,XMin,YMin,XMax,YMax,IsGroupOf,"
                                        f"Mask,MaskPath\na,cat,10,10,0,0,0.5,0.5,0,{encode_mask_string(counts)},x.png\n")
    write_mask_detections_csv(tmp_path / "d.csv", {"a": [DetMask("cat", 0.9, 10, 10, counts)]})
    out = oid_eval(tmp_path / "b.csv", tmp_path / "l.csv", tmp_path / "m.pbtxt", tmp_path / "d.csv",
                   masks=tmp_path / "masks.csv")
    assert out["metric"] == "open_images_challenge_instance_segmentation"
    assert out["mAP"] == 1.0 and out["num_gt"] == {"cat": 1.0}


# -- tied scores: the official ranking order ------------------------------------------------------
# The TF Object Detection API ranks twice, both times with ``np.argsort(scores)`` reversed:
# per image, ``np_box_list_ops.sort_by_field`` (called through ``non_max_suppression`` with
# IoU threshold 1.0 in ``per_image_evaluation``) reorders the detections before matching;
# over all images, ``metrics.compute_precision_recall`` does
#     sorted_indices = np.argsort(scores); sorted_indices = sorted_indices[::-1]
# numpy's default argsort keeps two equal keys of a short array in input order ([0, 1]), so
# reversed, the entry listed LATER ranks first, at each of the two sorts.
# One image, one cat box, two detections with the same score 0.5:
# * TP listed first, FP second: per image the FP (index 1) is ranked first and the TP second, so
#   the image's entries are [FP, TP]; the final sort reverses them again: [TP, FP] ->
#   P = 1, 1/2 at R = 1, 1 -> AP = 1.0. (A stable, non-reversed ranking at the final sort gives
#   [FP, TP] -> P = 0, 1/2 at R = 0, 1 -> AP = 0.5.)
# * FP listed first, TP second: per image [TP, FP], final sort [FP, TP] -> AP = 0.5
#   (a stable final sort: 1.0).
# * Two identical detections on the box: per image the second-listed one takes the box (TP), the
#   first one is a duplicate (FP): entries [TP, FP]; the final sort gives [FP, TP] -> AP = 0.5.
TIE_BOX = gt("cat", 0.1, 0.1, 0.5, 0.5)
TIE_TP = det("cat", 0.5, 0.1, 0.1, 0.5, 0.5)
TIE_FP = det("cat", 0.5, 0.6, 0.6, 0.9, 0.9)  # no overlap with the box


@pytest.mark.parametrize(("dets", "expected"), [
    ([TIE_TP, TIE_FP], 1.0),
    ([TIE_FP, TIE_TP], 0.5),
    ([TIE_TP, TIE_TP], 0.5),
], ids=["tp-first", "fp-first", "duplicate"])
def test_tied_scores_rank_as_the_official_reversed_argsort(dets, expected) -> None:
    result = evaluate_detections({"a": [TIE_BOX]}, {"a": pos("cat")}, {"a": dets}, CLASSES)
    assert result.per_class == {"cat": pytest.approx(expected)}
    assert (result.scored, result.true_positives) == (2, 1.0)


def test_precision_recall_breaks_ties_as_reversed_argsort() -> None:
    # entries in the order given: [TP, FP] with equal scores -> ranked [FP, TP]
    precision, recall = precision_recall(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 1)
    np.testing.assert_allclose(precision, [0.0, 0.5])
    np.testing.assert_allclose(recall, [0.0, 1.0])
    order = np.argsort(np.array([0.5, 0.5]))[::-1]  # the official rule, evaluated here
    assert order.tolist() == [1, 0]
