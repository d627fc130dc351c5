"""The Open Images challenge metric on CSV files (the official driver's inputs), as ``vcm oid-eval`` runs it.

``vcm oid-eval --boxes B.csv --labels L.csv --labelmap M --detections D.csv [--masks M.csv]``
(:mod:`vcm_plugin.cli.oid_eval`) prints one JSON object; scores are FRACTIONS in [0, 1] (the
official metrics file's scale, not percent). The label map is a ``.txt`` / ``.pbtxt`` list of
the evaluated class names, or an Open Images ``class-descriptions*.csv`` (then ``LabelName``
columns hold MIDs and are translated).
Without ``--masks`` the detections are boxes (``ImageID,LabelName,Score,XMin,YMin,XMax,YMax``);
with it they are masks (``ImageID,ImageWidth,ImageHeight,LabelName,Score,Mask``).
"""

from __future__ import annotations

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
