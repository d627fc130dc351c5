"""YOLOv5 (v6.x) without the YOLOv5 code: restricted checkpoint reader, network, COCO detector.

The network is written from the published architecture; the release weights
(``yolov5n.pt``) are AGPL-3.0 (Ultralytics), see shared/weights/WEIGHTS.md. The detector
module imports torch lazily, so registering it does not import torch.
"""
