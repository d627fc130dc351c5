"""YOLOv5 (v6.x) without the YOLOv5 code: restricted checkpoint reader, network, COCO detector.

The network is written from the published architecture; the release weights
(``yolov5n.pt``) are AGPL-3.0 (Ultralytics), see shared/weights/WEIGHTS.md. Names are
imported lazily so that registering the detector does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "YoloCheckpoint": "checkpoint", "load_yolov5_checkpoint": "checkpoint", "unpickle_restricted": "checkpoint",
    "Letterbox": "detector", "YoloAdapter": "detector", "YOLOv5Detector": "detector",
    "YOLOv5": "network", "build_network": "network", "infer_description": "network", "v6_description": "network",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
