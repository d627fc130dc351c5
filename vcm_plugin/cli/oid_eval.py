"""``vcm oid-eval``: Open Images challenge mAP of a prediction CSV (prints JSON, fractions)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm oid-eval``."""
    from vcm_plugin.evaluation.oid import IOU_THRESHOLD

    p = sub.add_parser(
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
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print the metric as JSON."""
    from vcm_plugin.evaluation.oid_eval import oid_eval

    print(json.dumps(oid_eval(args.boxes, args.labels, args.labelmap, args.detections, args.masks, args.iou),
                     indent=2))
    return 0
