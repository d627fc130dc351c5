"""COCO detection / instance-segmentation AP through pycocotools (COCO, COCOeval).

:class:`CocoEvaluator` streams: :meth:`~CocoEvaluator.process` turns one image's
:class:`~vcm_plugin.tasks.base.Detections` into COCO result dicts and keeps only those;
:meth:`~CocoEvaluator.evaluate` runs ``COCOeval`` restricted to the processed image ids.

Metrics are in PERCENT, as detectron2 reports them: ``"bbox/AP"`` (AP@[.50:.95]),
``"bbox/AP50"``, ``"bbox/AP75"``, ``"bbox/APs"``, ``"bbox/APm"``, ``"bbox/APl"`` and the
same under ``"segm/"``. A metric COCOeval leaves undefined (-1: no ground-truth object of
that size among the processed images) is reported as NaN, never as -100. No detections
at all gives 0.0 wherever ground truth exists (COCOeval runs on an empty result set).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vcm_plugin.evaluation.base import EvaluationError, Evaluator
from vcm_plugin.evaluation.coco_resample import CocoResampler
from vcm_plugin.tasks.predictions import Detections

IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six COCOeval.stats
BOX_DECIMALS = 4  # box coordinates kept to 1e-4 pixel in result dicts


def _image_id(sample: Any) -> int:
    """The COCO image id of a Sample (or of a bare id)."""
    value = getattr(sample, "image_id", sample)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise EvaluationError(f"COCO image ids are integers; got {value!r}")


def _score(value: np.float32) -> float:
    """A float32 score as the shortest decimal that reads back to the same float32 (order-preserving)."""
    return float(str(np.float32(value)))


def coco_results_from_detections(image_id: int, detections: Detections) -> list[dict[str, Any]]:
    """COCO result dicts (``loadRes`` format) for one image's detections.

    ``bbox`` is ``[x, y, w, h]`` in original-image pixels rounded to 1e-4 px; ``score`` the
    float32 score as its shortest decimal; ``category_id`` the label; ``segmentation`` the
    mask as an RLE dict with a ``str`` ``counts`` when the detections carry masks.
    Raises :class:`EvaluationError` (naming the image) on non-finite or inverted boxes.
    """
    boxes = detections.boxes.astype(np.float64)
    if not (np.isfinite(boxes).all() and np.isfinite(detections.scores).all()):
        raise EvaluationError(f"image id {image_id}: detections contain non-finite boxes or scores")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    if (xywh[:, 2:] < 0).any():
        bad = int(np.flatnonzero((xywh[:, 2:] < 0).any(axis=1))[0])
        raise EvaluationError(f"image id {image_id}: detection {bad} has x2 < x1 or y2 < y1: "
                              f"{detections.boxes[bad].tolist()} (boxes must be x1, y1, x2, y2)")
    results = []
    for k in range(len(detections)):
        result: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(detections.labels[k]),
            "bbox": [round(float(v), BOX_DECIMALS) for v in xywh[k]],
            "score": _score(detections.scores[k]),
        }
        if detections.masks is not None:
            mask = detections.masks[k]
            counts = mask["counts"]
            result["segmentation"] = {"size": [int(s) for s in mask["size"]],
                                      "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        results.append(result)
    return results


class CocoEvaluator(Evaluator):
    """COCO AP of :class:`Detections` against a ground-truth :class:`COCO` (percent).

    ``iou_types``: ``("bbox",)`` for detection, ``("bbox", "segm")`` for instance
    segmentation (``"segm"`` needs masks in every non-empty Detections).
    ``image_ids``: the images this evaluator accepts (default: every image of ``coco_gt``);
    :meth:`evaluate` scores exactly the images processed, which may be fewer.
    The ground truth is never modified (COCOeval runs on a copy of the processed images').
    """

    def __init__(self, coco_gt: COCO, iou_types: Sequence[str] = ("bbox",),
                 image_ids: Iterable[int] | None = None) -> None:
        if isinstance(iou_types, str):
            iou_types = (iou_types,)
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types:
            raise EvaluationError(f"CocoEvaluator: iou_types must be a non-empty subset of {IOU_TYPES}, "
                                  f"got {list(iou_types)}")
        self.coco_gt = coco_gt
        self.iou_types: tuple[str, ...] = tuple(dict.fromkeys(iou_types))
        # what reports plot and compute BD-rate on: mask AP when masks are scored
        self.primary_metric = "segm/AP" if "segm" in self.iou_types else "bbox/AP"
        gt_ids = set(coco_gt.getImgIds())
        if image_ids is None:
            self.image_ids = gt_ids
        else:
            self.image_ids = {_image_id(i) for i in image_ids}
            extra = sorted(self.image_ids - gt_ids)
            if extra:
                raise EvaluationError(f"CocoEvaluator: image ids {extra[:5]} ({len(extra)} in all) are not in "
                                      "the ground truth")
        self.category_ids = set(coco_gt.getCatIds())
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []
        self._processed: dict[int, None] = {}  # insertion-ordered set
        self._resampler: CocoResampler | None = None

    @property
    def processed_image_ids(self) -> list[int]:
        """Image ids processed since :meth:`reset`, in processing order."""
        return list(self._processed)

    def process(self, sample: Any, predictions: Detections) -> None:
        """Record one image's detections (``sample``: a Sample or its COCO image id).

        Raises :class:`EvaluationError` naming the image on an unknown image id, an image
        processed twice, predictions that are not Detections, labels outside the
        ground-truth categories, or missing / wrongly sized masks for ``"segm"``.
        """
        image_id = _image_id(sample)
        if image_id not in self.image_ids:
            raise EvaluationError(f"image id {image_id} is not in this evaluator's dataset")
        self._check_new(image_id, self._processed, predictions, Detections, "COCO evaluation")
        unknown = sorted({int(label) for label in predictions.labels} - self.category_ids)
        if unknown:
            raise EvaluationError(f"image id {image_id}: label(s) {unknown} are not category ids of the ground "
                                  f"truth (valid: {min(self.category_ids)}..{max(self.category_ids)}, "
                                  f"{len(self.category_ids)} ids); map the model's classes to dataset ids")
        if "segm" in self.iou_types and len(predictions):
            if predictions.masks is None:
                raise EvaluationError(f"image id {image_id}: segm evaluation needs masks, the detections have none")
            info = self.coco_gt.imgs[image_id]
            expected = [int(info["height"]), int(info["width"])]
            for k, mask in enumerate(predictions.masks):
                if [int(s) for s in mask["size"]] != expected:
                    raise EvaluationError(f"image id {image_id}: mask {k} has size {list(mask['size'])}, "
                                          f"the image is {expected} (h, w)")
        results = coco_results_from_detections(image_id, predictions)
        if "segm" not in self.iou_types:
            for result in results:
                result.pop("segmentation", None)
        self._results.extend(results)
        self._processed[image_id] = None

    def results_json(self) -> list[dict[str, Any]]:
        """Every recorded COCO result dict (a copy; ``json.dump``-able, ``COCO.loadRes``-able)."""
        return copy.deepcopy(self._results)

    def evaluate(self) -> dict[str, float]:
        """COCOeval over the processed images: ``{"bbox/AP": ..., ...}`` in percent (NaN: undefined)."""
        if not self._processed:
            raise EvaluationError("CocoEvaluator.evaluate: no image was processed")
        gt = self._processed_ground_truth()
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            stats = self._run_cocoeval(gt, iou_type, keep=self.primary_metric.startswith(f"{iou_type}/"))
            for name, value in zip(METRICS, stats):
                metrics[f"{iou_type}/{name}"] = float(value) * 100.0 if value >= 0 else math.nan
        return metrics

    def _processed_ground_truth(self) -> COCO:
        """A COCO holding only the processed images and (deep copies of) their annotations."""
        ids, dataset = self._processed, self.coco_gt.dataset
        return coco_from_dict(copy.deepcopy({
            "info": dataset.get("info", {}), "images": [img for img in dataset["images"] if img["id"] in ids],
            "annotations": [ann for ann in dataset["annotations"] if ann["image_id"] in ids],
            "categories": dataset["categories"]}))

    def resampler(self) -> CocoResampler:
        """The primary AP (percent) on image resamples, re-accumulated from :meth:`evaluate`'s per-image
        matches (:class:`~vcm_plugin.evaluation.coco_resample.CocoResampler`; positions in processing order)."""
        if self._resampler is None:
            raise EvaluationError("CocoEvaluator.resampler: call evaluate() first")
        return self._resampler

    def _run_cocoeval(self, gt: COCO, iou_type: str, keep: bool = False) -> np.ndarray:
        """COCOeval's stats; ``keep``: also keep its per-image matches for :meth:`resampler`."""
        results = [dict(r) for r in self._results]  # loadRes adds keys: keep ours clean
        for result in results:
            # segm: without "bbox", loadRes takes the area from the mask (detectron2 does the same);
            # bbox: the box alone.
            result.pop("bbox" if iou_type == "segm" else "segmentation", None)
        with contextlib.redirect_stdout(io.StringIO()):
            if results:
                dt = gt.loadRes(results)
            else:  # loadRes fails on an empty list; an empty result set scores 0 where GT exists
                dt = coco_from_dict({"images": list(gt.dataset["images"]), "annotations": [],
                                     "categories": copy.deepcopy(gt.dataset["categories"])})
            cocoeval = COCOeval(gt, dt, iouType=iou_type)
            cocoeval.params.imgIds = sorted(self._processed)
            cocoeval.evaluate()
            if keep:
                self._resampler = CocoResampler(cocoeval, list(self._processed))
            cocoeval.accumulate()
            cocoeval.summarize()
        return np.asarray(cocoeval.stats[: len(METRICS)], dtype=np.float64)


def coco_from_dict(dataset: dict[str, Any]) -> COCO:
    """A pycocotools COCO indexed from an in-memory dataset dict, quietly."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
