"""``vcm oid-eval``: the Open Images challenge metric on CSV files (the official driver's inputs).

``vcm oid-eval --boxes B.csv --labels L.csv --labelmap M --detections D.csv [--masks M.csv]``
prints one JSON object; scores are FRACTIONS in [0, 1] (the official metrics file's scale, not
percent). The label map is a ``.txt`` / ``.pbtxt`` list of the evaluated class names, or an Open
Images ``class-descriptions*.csv`` (then ``LabelName`` columns hold MIDs and are translated).
Without ``--masks`` the detections are boxes (``ImageID,LabelName,Score,XMin,YMin,XMax,YMax``);
with it they are masks (``ImageID,ImageWidth,ImageHeight,LabelName,Score,Mask``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vcm_plugin.evaluation.oid import IOU_THRESHOLD, evaluate_detections, evaluate_masks
from vcm_plugin.evaluation.oid_annotations import (
    read_boxes_csv,
    read_class_descriptions,
    read_detections_csv,
    read_label_map,
    read_labels_csv,
    read_mask_detections_csv,
    read_masks_csv,
)


def oid_eval(boxes: str | Path, labels: str | Path, labelmap: str | Path, detections: str | Path,
             masks: str | Path | None = None, iou: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Open Images challenge mAP of a prediction CSV, as a JSON-able dict (fractions in [0, 1]).

    Keys: ``metric``, ``iou``, ``units``, ``mAP`` (None when no class has ground truth),
    ``per_class``, ``num_gt``, ``classes`` (with ground truth), ``images``, ``detections``,
    ``scored``, ``true_positives``, ``ignored``. Bad files raise an ``EvaluationError`` naming them.
    """
    mid_to_name = read_class_descriptions(labelmap) if Path(labelmap).suffix.lower() == ".csv" else None
    class_names = read_label_map(labelmap)
    names = set(class_names)
    gt_boxes = read_boxes_csv(boxes, names, mid_to_name)
    verified = read_labels_csv(labels, names, mid_to_name)
    if masks is None:
        result = evaluate_detections(gt_boxes, verified, read_detections_csv(detections, None, mid_to_name),
                                     class_names, iou)
        metric = "open_images_challenge_detection"
    else:
        gt_masks = read_masks_csv(masks, names, mid_to_name)
        result = evaluate_masks(gt_boxes, verified, gt_masks, read_mask_detections_csv(detections, None, mid_to_name),
                                class_names, iou)
        metric = "open_images_challenge_instance_segmentation"
    out = {"metric": metric, "iou": iou, "units": "fraction"}
    out.update(result.to_json())
    out["classes"] = len(result.per_class)
    return out


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(oid_eval(args.boxes, args.labels, args.labelmap, args.detections, args.masks, args.iou),
                     indent=2))
    return 0


def add_oid_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``oid-eval`` sub-command to an ``argparse`` sub-parser set (sets ``func``)."""
    p = subparsers.add_parser(
        "oid-eval", help="Open Images challenge mAP of a prediction CSV (prints JSON, fractions)",
        description="Open Images challenge mAP@IoU of a prediction CSV against the official-format annotation "
                    "CSVs; prints JSON with fractions in [0, 1].")
    p.add_argument("--boxes", required=True, help="ground-truth boxes CSV (ImageID,LabelName,XMin,XMax,YMin,YMax,"
                                                  "IsGroupOf)")
    p.add_argument("--labels", required=True, help="verified image-level labels CSV (ImageID,LabelName,Confidence)")
    p.add_argument("--labelmap", required=True, help="evaluated classes: .txt, .pbtxt or class-descriptions .csv")
    p.add_argument("--detections", required=True, help="predictions CSV (boxes; masks with --masks)")
    p.add_argument("--masks", default=None, help="ground-truth instance masks CSV: instance-segmentation metric")
    p.add_argument("--iou", type=float, default=IOU_THRESHOLD, help="IoU threshold (default 0.5)")
    p.set_defaults(func=_run)
    return p
