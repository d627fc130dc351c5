"""The Open Images challenge metric (detection and instance segmentation), without TensorFlow.

No maintained library implements these rules outside the TensorFlow Object Detection API
(``object_detection.utils.object_detection_evaluation.OpenImagesChallengeEvaluator``,
``per_image_evaluation.PerImageEvaluation``, ``metrics.compute_average_precision``, driven by
``metrics/oid_challenge_evaluation.py``), so the rules are written here by hand, following that
code; overlaps and masks use numpy and pycocotools. The MPEG VCM OpenImages anchors were scored
with that driver (label map with a flat hierarchy: no label expansion is needed).

Rules, per image and class (``iou`` = 0.5 by default; coordinates normalised to the image):

1. Evaluated classes of an image: those with a verified image-level label (positive OR negative)
   and those with a ground-truth box there. Detections of any other class on that image are
   ignored (neither TP nor FP). A verified-negative class has no boxes, so all its detections
   are false positives. Detections with an empty box (``xmin >= xmax`` or ``ymin >= ymax``) are
   dropped, as is everything after the 10,000 best of a class on one image.
2. Detections are ranked by score (``numpy.argsort`` order reversed, as the official code).
   Each in turn takes the non-group-of box with which it has the highest IoU (first on ties);
   IoU >= ``iou`` and that box still free: true positive, the box is taken. Otherwise it stays
   a false positive (also when its best box is already taken, even if another box would fit).
3. Detections that are not true positives are then tested against the group-of boxes with IoA =
   intersection / DETECTION area: with IoA >= ``iou`` against its best group-of box, it is
   absorbed by that box. Each group-of box that absorbed detections yields ONE true positive with
   weight ``group_of_weight`` (1.0 in the challenge) and the highest absorbed score; the absorbed
   detections themselves are ignored. Zero-area ground-truth boxes are kept and never matched.
   Consequence: a group-of box lying inside an EARLIER group-of box of its class is never hit by
   detections inside both (the first box wins the tie), so ground truth fed back as detections
   scores below 1: 0.99901 on the MPEG VCM detection files (50 such boxes), 0.99914 with the
   segmentation boxes (84).
4. Per class, over all images: ``num_gt`` = non-group-of boxes + ``group_of_weight`` x group-of
   boxes. Precision/recall over the ranked entries (cumulative TP weight / entries, / ``num_gt``);
   AP = area under the precision envelope (precision made non-increasing from the right, the
   curve padded with (0, 0) and (1, 0), summed over the recall steps) as VOCdevkit / TF
   ``compute_average_precision``. No entries: AP 0. mAP = mean AP over the classes with
   ``num_gt`` > 0 (others are not reported).

Instance segmentation (the driver with ``--input_annotations_segm``): ground-truth boxes and mask
rows are outer-joined on the EXACT values of (ImageID, LabelName, XMin, XMax, YMin, YMax,
IsGroupOf), one to one; detection boxes are the bounding boxes of their masks. Rule 2 uses mask
IoU and rule 3 mask IoA (pycocotools ``iou``, crowd = IoA over the detection) for ground truth
with a mask; ground truth WITHOUT a mask is not counted in ``num_gt``, and detections it would
match by box (IoU, or IoA for group-of) are ignored. Because the join is exact, a box whose mask
row states slightly different coordinates (the MPEG VCM mask excerpt differs from the box CSV in
the 7th decimal) stays as a box without a mask AND the mask row is a separate instance; this is
what the official driver does with those files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vcm_plugin.evaluation.base import EvaluationError, Evaluator
from vcm_plugin.evaluation.oid_annotations import DetBox, DetMask, GTBox, GTMask, VerifiedLabels
from vcm_plugin.evaluation.oid_resample import OidResampler
from vcm_plugin.tasks.predictions import Detections

IOU_THRESHOLD = 0.5
GROUP_OF_WEIGHT = 1.0  # the challenge detection metric (OpenImagesChallengeEvaluator default)
MAX_DETECTIONS_PER_CLASS = 10_000  # per image and class (the official nms_max_output_boxes; no NMS is applied)
IOU_TYPES = ("bbox", "segm")


@dataclass(frozen=True)
class OIDResult:
    """Open Images challenge scores as fractions in [0, 1].

    ``mAP``: mean of ``per_class`` (NaN when no class has ground truth); ``per_class``: AP of each
    class with ``num_gt`` > 0; ``num_gt``: ground-truth instances per class (group-of boxes
    weighted); ``images``: images evaluated; ``detections``: detections given;
    ``scored``: entries ranked (including one per hit group-of box); ``true_positives``: their
    summed TP weight (with ``group_of_weight`` 1, ``scored - true_positives`` = false positives);
    ``ignored``: detections not ranked, by reason (unverified_class, unknown_class,
    unknown_image, invalid_box, group_of, box_only).
    """

    mAP: float
    per_class: dict[str, float]
    num_gt: dict[str, float]
    images: int
    detections: int
    scored: int
    true_positives: float
    ignored: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (NaN mAP becomes None)."""
        return {"mAP": None if np.isnan(self.mAP) else float(self.mAP),
                "per_class": {k: float(v) for k, v in self.per_class.items()},
                "num_gt": {k: float(v) for k, v in self.num_gt.items()},
                "images": self.images, "detections": self.detections, "scored": self.scored,
                "true_positives": float(self.true_positives), "ignored": dict(self.ignored)}


# -- precision / recall / AP ---------------------------------------------------------------
def precision_recall(scores: np.ndarray, labels: np.ndarray, num_gt: float) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each ranked entry (official ranking: ``argsort(scores)[::-1]``).

    ``labels``: TP weight of each entry (0 = false positive); ``num_gt`` > 0.
    """
    order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]
    tp = np.asarray(labels, dtype=np.float64)[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(tp <= 0)
    return cum_tp / (cum_tp + cum_fp), cum_tp / float(num_gt)


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOCdevkit / TF ``compute_average_precision``: area under the non-increasing precision envelope.

    The curve is padded with (recall 0, precision 0) and (1, 0); empty input gives 0.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.size == 0:
        return 0.0
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


# -- overlaps -------------------------------------------------------------------------------
def box_overlaps(det: np.ndarray, gt: np.ndarray, over_detection: bool = False) -> np.ndarray:
    """(n, m) IoU of ``xmin, ymin, xmax, ymax`` boxes, or IoA = intersection / detection area."""
    det = np.asarray(det, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    w = np.maximum(0.0, np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0]))
    h = np.maximum(0.0, np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1]))
    inter = h * w
    det_area = ((det[:, 3] - det[:, 1]) * (det[:, 2] - det[:, 0]))[:, None]
    if over_detection:
        return inter / det_area
    gt_area = ((gt[:, 3] - gt[:, 1]) * (gt[:, 2] - gt[:, 0]))[None, :]
    return inter / (det_area + gt_area - inter)


def mask_overlaps(det: Sequence[dict], gt: Sequence[dict], over_detection: bool = False) -> np.ndarray:
    """(n, m) mask IoU of COCO RLEs (pycocotools), or IoA = intersection / detection area."""
    if not len(det) or not len(gt):
        return np.zeros((len(det), len(gt)))
    out = mask_utils.iou(list(det), list(gt), [int(over_detection)] * len(gt))
    return np.asarray(out, dtype=np.float64).reshape(len(det), len(gt))


# -- per image and class --------------------------------------------------------------------
def _match_free(overlap: np.ndarray, threshold: float, tp: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    """Rule 2 on ranked detections: marks ``tp`` in place; returns the detections matched here."""
    matched = np.zeros(len(tp), dtype=bool)
    best = overlap.argmax(axis=1)
    candidates = ~tp & ~blocked & (overlap[np.arange(len(tp)), best] >= threshold)
    taken = np.zeros(overlap.shape[1], dtype=bool)
    for i in np.flatnonzero(candidates):
        if not taken[best[i]]:
            taken[best[i]] = True
            tp[i] = matched[i] = True
    return matched


def _match_group(overlap: np.ndarray, scores: np.ndarray, threshold: float, tp: np.ndarray,
                 blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule 3: (detections absorbed by a group-of box, best absorbed score per group-of box, 0 if none)."""
    best = overlap.argmax(axis=1)
    absorbed = ~tp & ~blocked & (overlap[np.arange(len(tp)), best] >= threshold)
    top = np.zeros(overlap.shape[1])
    np.maximum.at(top, best[absorbed], scores[absorbed])
    return absorbed, top


@dataclass
class _ImageGT:
    """One image's ground truth as arrays: class index, normalised boxes, group-of, masks (segm only)."""

    labels: np.ndarray
    boxes: np.ndarray
    group: np.ndarray
    evaluatable: set[int]
    rles: list[dict | None] | None = None  # segm: an RLE per box, None for a box without a mask

    @property
    def has_mask(self) -> np.ndarray:
        if self.rles is None:
            return np.zeros(len(self.labels), dtype=bool)
        return np.array([r is not None and int(mask_utils.area(r)) > 0 for r in self.rles], dtype=bool)


@dataclass
class _ImageDet:
    """One image's detections as arrays: class index, score, normalised box, masks (segm only)."""

    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    rles: list[dict] | None = None


class _Accumulator:
    """Collects per-image (score, TP weight) entries per class and the ground-truth counts."""

    def __init__(self, class_names: Sequence[str], iou: float, group_of_weight: float, segm: bool) -> None:
        if not 0.0 < iou <= 1.0:
            raise EvaluationError(f"IoU threshold {iou} is not in (0, 1]")
        self.classes = list(dict.fromkeys(class_names))
        if not self.classes:
            raise EvaluationError("no classes to evaluate")
        self.index = {name: i for i, name in enumerate(self.classes)}
        self.iou, self.weight, self.segm = float(iou), float(group_of_weight), segm
        self.entries: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self.num_gt = np.zeros(len(self.classes))
        self.image_gt: dict[str, np.ndarray] = {}  # per image: its contribution to num_gt (for resampling)
        self.detections = 0
        self.ignored: Counter[str] = Counter()

    def add(self, image_id: str, gt: _ImageGT, det: _ImageDet) -> None:
        """Match one image's detections (rules 1-3) and count its ground truth."""
        if image_id in self.entries:
            raise EvaluationError(f"image id {image_id} was already evaluated")
        has_mask = gt.has_mask if self.segm else np.ones(len(gt.labels), dtype=bool)
        counted = has_mask  # segm: boxes without a mask are not ground-truth instances
        here = np.zeros(len(self.classes))
        np.add.at(here, gt.labels[counted & ~gt.group], 1.0)
        np.add.at(here, gt.labels[counted & gt.group], self.weight)
        self.num_gt += here
        self.image_gt[image_id] = here

        self.detections += len(det.labels)
        keep = np.isin(det.labels, sorted(gt.evaluatable))
        self.ignored["unverified_class"] += int(np.count_nonzero(~keep & (det.labels >= 0)))
        self.ignored["unknown_class"] += int(np.count_nonzero(det.labels < 0))
        valid = (det.boxes[:, 0] < det.boxes[:, 2]) & (det.boxes[:, 1] < det.boxes[:, 3])
        self.ignored["invalid_box"] += int(np.count_nonzero(keep & ~valid))
        keep &= valid
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(det.labels[keep]):
            idx = np.flatnonzero(keep & (det.labels == c))
            idx = idx[np.argsort(det.scores[idx])[::-1]][:MAX_DETECTIONS_PER_CLASS]
            on = gt.labels == c
            rles = None if det.rles is None else [det.rles[i] for i in idx]
            out[int(c)] = self._match(det.scores[idx], det.boxes[idx], rles, gt, on, has_mask[on])
        self.entries[image_id] = out

    def _match(self, scores: np.ndarray, boxes: np.ndarray, rles: list[dict] | None, gt: _ImageGT,
               on: np.ndarray, has_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(scores)
        if not on.any():
            return scores, np.zeros(n)
        gt_boxes, group = gt.boxes[on], gt.group[on]
        gt_rles = [gt.rles[j] for j in np.flatnonzero(on)] if gt.rles is not None else None
        tp = np.zeros(n, dtype=bool)
        absorbed = np.zeros(n, dtype=bool)  # rule 3 (group-of)
        by_box = np.zeros(n, dtype=bool)  # segm: matched to a box without a mask
        group_scores = np.zeros(0)
        t = self.iou

        def overlaps(sel: np.ndarray, over_detection: bool) -> np.ndarray:
            """segm: mask overlaps with the selected ground truth; bbox (``has_mask`` all True): box overlaps."""
            if self.segm:
                return mask_overlaps(rles, [gt_rles[j] for j in np.flatnonzero(sel)], over_detection)
            return box_overlaps(boxes, gt_boxes[sel], over_detection)

        sel = has_mask & ~group
        if sel.any():
            _match_free(overlaps(sel, False), t, tp, absorbed)
        sel = has_mask & group
        if sel.any():
            hit, top = _match_group(overlaps(sel, True), scores, t, tp, absorbed)
            absorbed |= hit
            group_scores = top[top > 0] if self.weight > 0 else group_scores
        sel = ~has_mask & ~group  # segm only: ground truth without a mask, matched by box
        if sel.any():
            by_box |= _match_free(box_overlaps(boxes, gt_boxes[sel]), t, tp, absorbed)
        sel = ~has_mask & group
        if sel.any():
            hit, _ = _match_group(box_overlaps(boxes, gt_boxes[sel], True), scores, t, tp, absorbed)
            absorbed |= hit
            by_box |= hit
        self.ignored["box_only"] += int(np.count_nonzero(by_box & ~absorbed))
        self.ignored["group_of"] += int(np.count_nonzero(absorbed))
        valid = ~absorbed & ~by_box
        return (np.concatenate([scores[valid], group_scores]),
                np.concatenate([tp[valid].astype(np.float64), np.full(len(group_scores), self.weight)]))

    def result(self) -> OIDResult:
        """Rule 4 over every image added (entries concatenated in sorted image-id order)."""
        per_class: dict[str, float] = {}
        num_gt: dict[str, float] = {}
        scored, true_positives = 0, 0.0
        images = sorted(self.entries)
        for c, name in enumerate(self.classes):
            parts = [self.entries[i][c] for i in images if c in self.entries[i]]
            scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
            labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
            scored += len(scores)
            true_positives += float(labels.sum())
            if self.num_gt[c] <= 0:
                continue
            num_gt[name] = float(self.num_gt[c])
            per_class[name] = average_precision(*precision_recall(scores, labels, self.num_gt[c]))
        mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
        return OIDResult(mean, per_class, num_gt, len(images), self.detections, scored, true_positives,
                         {k: v for k, v in sorted(self.ignored.items()) if v})


# -- building per-image arrays ------------------------------------------------------------------
def _class_index(index: Mapping[str, int], name: str, image_id: str, what: str) -> int:
    try:
        return index[name]
    except KeyError:
        raise EvaluationError(f"image id {image_id}: {what} class {name!r} is not among the {len(index)} "
                              "evaluated classes") from None


def _evaluatable(index: Mapping[str, int], image_id: str, labels: VerifiedLabels | None,
                 gt_labels: np.ndarray) -> set[int]:
    verified = labels.verified if labels is not None else frozenset()
    return {_class_index(index, n, image_id, "verified") for n in sorted(verified)} | {int(c) for c in gt_labels}


def _gt_from_boxes(index: Mapping[str, int], image_id: str, boxes: Sequence[GTBox],
                   labels: VerifiedLabels | None) -> _ImageGT:
    cls = np.array([_class_index(index, b.label, image_id, "ground-truth") for b in boxes], dtype=np.int64)
    arr = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in boxes], dtype=np.float64).reshape(-1, 4)
    group = np.array([bool(b.is_group_of) for b in boxes], dtype=bool)
    return _ImageGT(cls, arr, group, _evaluatable(index, image_id, labels, cls))


def _merge_masks(image_id: str, boxes: Sequence[GTBox], masks: Sequence[GTMask]) -> tuple[list, tuple | None]:
    """Outer join of box rows and mask rows on exact (label, coordinates, group-of), one to one.

    Returns [(label, box, group, rle or None)] and the (height, width) of the image's masks.
    """
    sizes = {(m.height, m.width) for m in masks if m.counts is not None}
    if len(sizes) > 1:
        raise EvaluationError(f"image id {image_id}: ground-truth masks of different sizes {sorted(sizes)}")
    free: dict[tuple, list[GTMask]] = {}
    for m in masks:
        free.setdefault((m.label, m.xmin, m.xmax, m.ymin, m.ymax, bool(m.is_group_of)), []).append(m)
    rows = []
    for b in boxes:
        same = free.get((b.label, b.xmin, b.xmax, b.ymin, b.ymax, bool(b.is_group_of)))
        rle = same.pop(0).rle if same else None
        rows.append((b.label, (b.xmin, b.ymin, b.xmax, b.ymax), bool(b.is_group_of), rle))
    for left in free.values():
        rows.extend((m.label, (m.xmin, m.ymin, m.xmax, m.ymax), bool(m.is_group_of), m.rle) for m in left)
    return rows, (sizes.pop() if sizes else None)


def _gt_from_masks(index: Mapping[str, int], image_id: str, boxes: Sequence[GTBox], masks: Sequence[GTMask],
                   labels: VerifiedLabels | None) -> tuple[_ImageGT, tuple | None]:
    rows, size = _merge_masks(image_id, boxes, masks)
    cls = np.array([_class_index(index, r[0], image_id, "ground-truth") for r in rows], dtype=np.int64)
    arr = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4)
    group = np.array([r[2] for r in rows], dtype=bool)
    return _ImageGT(cls, arr, group, _evaluatable(index, image_id, labels, cls), [r[3] for r in rows]), size


def _boxes_from_rles(rles: Sequence[dict]) -> np.ndarray:
    """Normalised ``xmin, ymin, xmax, ymax`` of each mask's bounding box (empty mask: all 0)."""
    if not len(rles):
        return np.zeros((0, 4))
    xywh = np.asarray(mask_utils.toBbox(list(rles)), dtype=np.float64).reshape(-1, 4)
    hw = np.array([r["size"] for r in rles], dtype=np.float64)
    return np.stack([xywh[:, 0] / hw[:, 1], xywh[:, 1] / hw[:, 0], (xywh[:, 0] + xywh[:, 2]) / hw[:, 1],
                     (xywh[:, 1] + xywh[:, 3]) / hw[:, 0]], axis=1)


def _check_finite(image_id: str, scores: np.ndarray, boxes: np.ndarray) -> None:
    if not (np.isfinite(scores).all() and np.isfinite(boxes).all()):
        raise EvaluationError(f"image id {image_id}: detections contain non-finite boxes or scores")


def _det_from_boxes(index: Mapping[str, int], image_id: str, dets: Sequence[DetBox]) -> _ImageDet:
    labels = np.array([index.get(d.label, -1) for d in dets], dtype=np.int64)
    scores = np.array([d.score for d in dets], dtype=np.float64)
    boxes = np.array([[d.xmin, d.ymin, d.xmax, d.ymax] for d in dets], dtype=np.float64).reshape(-1, 4)
    _check_finite(image_id, scores, boxes)
    return _ImageDet(labels, scores, boxes)


def _det_from_masks(index: Mapping[str, int], image_id: str, dets: Sequence[DetMask], size: tuple | None) -> _ImageDet:
    if size is not None:
        for k, d in enumerate(dets):
            if (d.height, d.width) != size:
                raise EvaluationError(f"image id {image_id}: detection mask {k} is {d.height}x{d.width} (h x w), "
                                      f"the ground-truth masks are {size[0]}x{size[1]}")
    rles = [d.rle for d in dets]
    labels = np.array([index.get(d.label, -1) for d in dets], dtype=np.int64)
    scores = np.array([d.score for d in dets], dtype=np.float64)
    _check_finite(image_id, scores, np.zeros((0, 4)))
    return _ImageDet(labels, scores, _boxes_from_rles(rles), rles)


# -- public functions ---------------------------------------------------------------------------
def evaluate_detections(gt_boxes: Mapping[str, Sequence[GTBox]], verified: Mapping[str, VerifiedLabels],
                        detections: Mapping[str, Sequence[DetBox]], class_names: Collection[str],
                        iou: float = IOU_THRESHOLD, *, group_of_weight: float = GROUP_OF_WEIGHT) -> OIDResult:
    """Open Images challenge detection mAP (module rules) over every image of ``gt_boxes`` or ``verified``.

    ``class_names``: the evaluated classes; a ground-truth or verified class outside them is an
    :class:`EvaluationError`, a detection of a class outside them is ignored (``unknown_class``),
    as are detections on images without annotations (``unknown_image``). Boxes are normalised.
    """
    acc = _Accumulator(list(class_names), iou, group_of_weight, segm=False)
    images = set(gt_boxes) | set(verified)
    for image_id in sorted(images):
        gt = _gt_from_boxes(acc.index, image_id, gt_boxes.get(image_id, ()), verified.get(image_id))
        det = _det_from_boxes(acc.index, image_id, detections.get(image_id, ()))
        acc.add(image_id, gt, det)
    _count_unknown_images(acc, detections, images)
    return acc.result()


def evaluate_masks(gt_boxes: Mapping[str, Sequence[GTBox]] | None, verified: Mapping[str, VerifiedLabels],
                   gt_masks: Mapping[str, Sequence[GTMask]], detections: Mapping[str, Sequence[DetMask]],
                   class_names: Collection[str], iou: float = IOU_THRESHOLD, *,
                   group_of_weight: float = GROUP_OF_WEIGHT) -> OIDResult:
    """Open Images challenge instance-segmentation mAP (module rules) with mask IoU / IoA.

    Ground truth = ``gt_boxes`` outer-joined with ``gt_masks`` (``gt_boxes`` None: the mask rows
    alone); detection masks must have the size of the image's ground-truth masks.
    """
    acc = _Accumulator(list(class_names), iou, group_of_weight, segm=True)
    gt_boxes = gt_boxes or {}
    images = set(gt_boxes) | set(verified) | set(gt_masks)
    for image_id in sorted(images):
        gt, size = _gt_from_masks(acc.index, image_id, gt_boxes.get(image_id, ()), gt_masks.get(image_id, ()),
                                  verified.get(image_id))
        det = _det_from_masks(acc.index, image_id, detections.get(image_id, ()), size)
        acc.add(image_id, gt, det)
    _count_unknown_images(acc, detections, images)
    return acc.result()


def _count_unknown_images(acc: _Accumulator, detections: Mapping[str, Sequence[Any]], images: set[str]) -> None:
    unknown = sum(len(v) for k, v in detections.items() if k not in images)
    acc.detections += unknown
    if unknown:
        acc.ignored["unknown_image"] += unknown


# -- streaming evaluator ----------------------------------------------------------------------
def _coco_name_map(coco_to_name: Mapping[int, str] | None) -> dict[int, str]:
    if coco_to_name is None:
        from vcm_plugin.tasks.coco_names import COCO_CATEGORIES

        coco_to_name = COCO_CATEGORIES
    return {int(k): str(v).replace(" ", "_") for k, v in coco_to_name.items()}


class OpenImagesEvaluator(Evaluator):
    """Open Images challenge mAP@0.5 of :class:`Detections` on the processed images, in PERCENT.

    ``process`` maps each detection's COCO category id to a class name (``coco_to_name``, default
    the 80 COCO names, spaces -> underscores: ``cell phone`` -> ``cell_phone``), DROPS classes not
    in ``class_names``, normalises boxes by the sample's ``width`` / ``height`` and matches the
    image at once, keeping only (score, TP weight) entries. ``iou_type="segm"`` scores masks
    (``Detections.masks``, RLE at the image size; boxes are taken from the masks) against
    ``gt_boxes`` joined with ``gt_masks``. :meth:`evaluate` returns ``{"oid/mAP50": ...,
    "oid/AP50/<class>": ...}`` (``"oid_segm/..."`` for segm), NaN for a class without ground truth
    among the processed images; only processed images count (their ground truth included).
    """

    def __init__(self, gt_boxes: Mapping[str, Sequence[GTBox]], verified: Mapping[str, VerifiedLabels],
                 class_names: Collection[str], gt_masks: Mapping[str, Sequence[GTMask]] | None = None,
                 iou_type: str = "bbox", coco_to_name: Mapping[int, str] | None = None,
                 iou: float = IOU_THRESHOLD) -> None:
        if iou_type not in IOU_TYPES:
            raise EvaluationError(f"OpenImagesEvaluator: iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        if iou_type == "segm" and gt_masks is None:
            raise EvaluationError("OpenImagesEvaluator: iou_type 'segm' needs gt_masks")
        self.iou_type = iou_type
        self.gt_boxes, self.verified, self.gt_masks = gt_boxes, verified, gt_masks or {}
        self.class_names = list(dict.fromkeys(class_names))
        self.iou = iou
        self.prefix = "oid" if iou_type == "bbox" else "oid_segm"
        self.primary_metric = f"{self.prefix}/mAP50"  # what reports plot and compute BD-rate on
        self.image_ids = set(gt_boxes) | set(verified) | (set(self.gt_masks) if iou_type == "segm" else set())
        self._coco = _coco_name_map(coco_to_name)
        self.reset()

    def reset(self) -> None:
        self._acc = _Accumulator(self.class_names, self.iou, GROUP_OF_WEIGHT, segm=self.iou_type == "segm")

    def process(self, sample: Any, predictions: Detections) -> None:
        """Match one image's detections (``sample``: a Sample with ``image_id``, ``width``, ``height``).

        Raises :class:`EvaluationError` naming the image on an unknown or repeated image id,
        predictions that are not Detections, a category id without a name, non-finite or
        inverted boxes, or (segm) missing / wrongly sized masks.
        """
        image_id = str(getattr(sample, "image_id", sample))
        if image_id not in self.image_ids:
            raise EvaluationError(f"image id {image_id} is not in the Open Images annotations of this evaluator")
        self._check_new(image_id, self._acc.entries, predictions, Detections, "Open Images evaluation")
        try:
            width, height = int(sample.width), int(sample.height)
        except AttributeError:
            raise EvaluationError(f"image id {image_id}: the sample has no width/height to normalise boxes") from None
        unknown = sorted({int(c) for c in predictions.labels} - set(self._coco))
        if unknown:
            raise EvaluationError(f"image id {image_id}: category id(s) {unknown} have no class name")
        names = [self._coco[int(c)] for c in predictions.labels]
        keep = np.array([n in self._acc.index for n in names], dtype=bool)
        self._acc.ignored["unknown_class"] += int(np.count_nonzero(~keep))
        labels = np.array([self._acc.index[n] for n, k in zip(names, keep) if k], dtype=np.int64)
        scores = predictions.scores.astype(np.float64)[keep]
        index = self._acc.index
        if self.iou_type == "bbox":
            gt = _gt_from_boxes(index, image_id, self.gt_boxes.get(image_id, ()), self.verified.get(image_id))
            boxes = predictions.boxes.astype(np.float64)[keep] / np.array([width, height, width, height], np.float64)
            _check_finite(image_id, scores, boxes)
            if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
                raise EvaluationError(f"image id {image_id}: a detection has x2 < x1 or y2 < y1 "
                                      "(boxes must be x1, y1, x2, y2)")
            det = _ImageDet(labels, scores, boxes)
        else:
            gt, size = _gt_from_masks(index, image_id, self.gt_boxes.get(image_id, ()),
                                      self.gt_masks.get(image_id, ()), self.verified.get(image_id))
            if size is not None and size != (height, width):
                raise EvaluationError(f"image id {image_id}: the ground-truth masks are {size[0]}x{size[1]} (h x w), "
                                      f"the sample is {height}x{width}")
            if keep.any() and predictions.masks is None:
                raise EvaluationError(f"image id {image_id}: segm evaluation needs masks, the detections have none")
            rles = []
            for k in np.flatnonzero(keep):
                mask = predictions.masks[k]
                if [int(s) for s in mask["size"]] != [height, width]:
                    raise EvaluationError(f"image id {image_id}: mask {k} has size {list(mask['size'])}, "
                                          f"the image is {[height, width]} (h, w)")
                counts = mask["counts"]
                rles.append({"size": [height, width],
                             "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
            _check_finite(image_id, scores, np.zeros((0, 4)))
            det = _ImageDet(labels, scores, _boxes_from_rles(rles), rles)
        self._acc.detections += int(np.count_nonzero(~keep))
        self._acc.add(image_id, gt, det)

    def result(self) -> OIDResult:
        """The full :class:`OIDResult` (fractions) over the processed images."""
        if not self._acc.entries:
            raise EvaluationError("OpenImagesEvaluator.evaluate: no image was processed")
        return self._acc.result()

    def resampler(self) -> OidResampler:
        """mAP@0.5 (percent) on image resamples (positions in processing order), pooled from the per-image
        (score, TP weight) entries and ground-truth counts kept by :meth:`process` (nothing is matched again)."""
        if not self._acc.entries:
            raise EvaluationError("OpenImagesEvaluator.resampler: no image was processed")
        return OidResampler(self._acc.entries, self._acc.image_gt, len(self._acc.classes))

    def evaluate(self) -> dict[str, float]:
        """``{"<prefix>/mAP50": percent, "<prefix>/AP50/<class>": percent}`` over the processed images."""
        result = self.result()
        metrics = {f"{self.prefix}/mAP50": result.mAP * 100.0}
        for name in self.class_names:
            metrics[f"{self.prefix}/AP50/{name}"] = result.per_class.get(name, float("nan")) * 100.0
        return metrics


def ground_truth_as_detections(gt_boxes: Mapping[str, Iterable[GTBox]], score: float = 1.0) -> dict[str, list[DetBox]]:
    """Every ground-truth box as a detection with ``score`` (a sanity check: the metric should give 1)."""
    return {i: [DetBox(b.label, score, b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes] for i, boxes in gt_boxes.items()}
