"""YOLOv5 as a :class:`TaskModel`: the offline default COCO box detector.

Inference follows the published COCO mAP protocol of YOLOv5 (``val.py --img 640
--conf 0.001 --iou 0.65``):

* resize so the long side is ``img_size`` (cv2 INTER_AREA when shrinking, INTER_LINEAR
  when enlarging), then pad with grey 114, centred. ``letterbox="val"`` (default) pads
  to the per-image "rect" shape of val.py, ``ceil(side / 32 + 0.5) * 32`` (so a 640
  side becomes 672); ``"auto"`` pads to the next multiple of 32 (detect.py);
  ``"square"`` pads to ``img_size`` x ``img_size``;
* RGB / 255; confidence = objectness x class probability; with ``multi_label`` (val.py)
  every class scoring above ``conf_threshold`` gives a candidate; class-aware NMS
  (``torchvision.ops.batched_nms``) at ``iou_threshold``; at most ``max_det`` boxes;
* boxes mapped back to ORIGINAL image pixels and clipped; labels are COCO category ids.

The defaults (conf 0.001, IoU 0.65) are the mAP protocol. Deployment-style inference
(detect.py, as in ENVIRONMENT.md) uses conf 0.25 and IoU 0.45: set those fields for it.
The weights (``yolov5n.pt``, AGPL-3.0, see shared/weights/WEIGHTS.md) are found through
:func:`vcm_plugin.weights.find_weights` and checked against their known SHA-256.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks.base import INPUT, TaskModel, check_image
from vcm_plugin.tasks.coco_names import COCO_CATEGORIES, coco_ids_for_names
from vcm_plugin.tasks.predictions import Detections
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.tasks.split import OUTPUT, CutValue, ModelAdapter, freeze
from vcm_plugin.weights import find_weights

LETTERBOX_MODES = ("val", "auto", "square")
PAD_VALUE = 114
BACKBONE = "backbone"
_LAYER_POINT = re.compile(r"^layer\.(\d+)$")


@dataclass(frozen=True)
class Letterbox:
    """Where an (orig_h, orig_w) image lies in the (in_h, in_w) network input: resized to
    (new_h, new_w) pixels and placed at (top, left)."""

    orig_h: int
    orig_w: int
    new_h: int
    new_w: int
    in_h: int
    in_w: int
    top: int
    left: int

    @classmethod
    def fit(cls, height: int, width: int, img_size: int, mode: str = "val", stride: int = 32) -> Letterbox:
        """The geometry for an image of ``height`` x ``width`` pixels (see the module docstring)."""
        if mode not in LETTERBOX_MODES:
            raise TaskModelError(f"letterbox mode {mode!r} unknown; valid: {LETTERBOX_MODES}")
        r = img_size / max(height, width)
        new_h, new_w = max(1, round(height * r)), max(1, round(width * r))
        if mode == "square":
            in_h = in_w = int(math.ceil(img_size / stride) * stride)
        elif mode == "auto":
            in_h, in_w = (int(math.ceil(s / stride) * stride) for s in (new_h, new_w))
        else:
            in_h, in_w = (int(math.ceil(s / stride + 0.5) * stride) for s in (new_h, new_w))
        top, left = round((in_h - new_h) / 2 - 0.1), round((in_w - new_w) / 2 - 0.1)
        return cls(height, width, new_h, new_w, in_h, in_w, top, left)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize and pad an (orig_h, orig_w, 3) uint8 image to (in_h, in_w, 3)."""
        import cv2

        if (self.new_h, self.new_w) != (self.orig_h, self.orig_w):
            shrink = self.new_h * self.new_w < self.orig_h * self.orig_w
            image = cv2.resize(image, (self.new_w, self.new_h), interpolation=cv2.INTER_AREA if shrink
                               else cv2.INTER_LINEAR)
        out = np.full((self.in_h, self.in_w, 3), PAD_VALUE, dtype=np.uint8)
        out[self.top:self.top + self.new_h, self.left:self.left + self.new_w] = image
        return out

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from network-input pixels to original pixels, clipped to the image."""
        gx, gy = self.new_w / self.orig_w, self.new_h / self.orig_h
        out = (np.asarray(boxes, np.float64) - [self.left, self.top, self.left, self.top]) / [gx, gy, gx, gy]
        out[:, 0::2] = out[:, 0::2].clip(0, self.orig_w)
        out[:, 1::2] = out[:, 1::2].clip(0, self.orig_h)
        return out.astype(np.float32)


class YoloAdapter(ModelAdapter):
    """:class:`YOLOv5Detector` in pieces. Cut points: ``backbone`` (after layer 9: P3/P4/P5 of layers 4, 6,
    9) and ``layer.<k>`` for every layer before the Detect head; the value there is every layer output the
    rest reads, named by layer index. Points (distillation): ``input``, ``layer.0`` .. ``layer.<n-2>``,
    ``output``: the head's raw maps (the 1x1 convolutions' outputs of each detection level, before the
    sigmoid and box decoding). A learned codec carries ONE tensor, so its cut must be clean: cutting
    where later layers also read earlier outputs (e.g. after the backbone) is refused naming them."""

    def layer(self, point: str) -> int:
        """The index of the last layer run at cut point ``point``."""
        net = self.model.network()
        match = _LAYER_POINT.match(point)
        if point == BACKBONE:
            return int(net.backbone_end)
        if match and int(match.group(1)) < net.num_layers - 1:
            return int(match.group(1))
        raise TaskModelError(f"task model 'yolov5' has no cut point {point!r}; valid: {self.cut_points()} "
                             f"or 'layer.<k>' with k < {net.num_layers - 1}")

    def points(self) -> list[str]:
        return [INPUT] + [f"layer.{k}" for k in range(self.model.network().num_layers - 1)] + [OUTPUT]

    def cut_points(self) -> list[str]:
        return [INPUT, BACKBONE, *self.points()[1:-1]]

    def check_cut(self, point: str) -> str:
        self.layer(point)
        return point

    def check_single_cut(self, cut: str) -> str:
        layer = self.layer(cut)
        extra = [k for k in self.model.network().needed_after(layer) if k != layer]
        if extra:
            raise TaskModelError(f"task model 'yolov5': cutting after {cut!r} (layer {layer}) also needs the "
                                 f"outputs of layers {extra}; a learned codec carries one tensor: cut at a "
                                 f"layer whose output is the only one crossing (e.g. layer.2, layer.3, layer.4)")
        return f"layer.{layer}"

    def names(self, cut: str) -> list[str]:
        return [str(k) for k in self.model.network().needed_after(self.layer(cut))]

    def prepare(self, image: np.ndarray) -> Any:
        return self.model.input_tensor(image)[0]

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        return {str(k): t for k, t in self.model.network().forward_to(x, self.layer(cut)).items()}

    def rest(self, cut: str, value: CutValue) -> Detections:
        import torch

        m = self.model
        box = Letterbox.fit(*value.image_hw, m.img_size, m.letterbox)
        feats = {int(k): torch.as_tensor(t).to(torch.device(m.device), torch.float32) for k, t in value.tensors.items()}
        return m.detections(m.network().rest(feats, self.layer(cut))[0], box)

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        net, layer = self.model.network(), self.layer(cut)
        if point == cut:
            return [y1]
        stop = net.num_layers - 1 if point == OUTPUT else int(point.split(".")[1]) + 1
        cache = net._run({layer: y1}, layer + 1, stop)  # keeps what later layers (the head included) read
        if point == OUTPUT:
            return [conv(cache[src]) for conv, src in zip(net.detect.m, net.detect.sources)]
        return [cache[stop - 1]]

    def front_layers(self, cut: str) -> list[Any]:
        from vcm_plugin.tasks.yolov5.network import YoloFront

        net = self.model.network()
        return [YoloFront([net.model[i] for i in range(self.layer(cut) + 1)])]


@register_task_model
@dataclass
class YOLOv5Detector(TaskModel):
    """YOLOv5 (v6.x, any size) COCO box detector; the offline default.

    Fields: ``weights`` a checkpoint name found through the weights search path (or an
    absolute path): a release ``.pt`` (read by the restricted unpickler) or a plain
    state dict; ``search_path`` extra folders searched first; ``img_size`` the long side
    in pixels the image is resized to; ``letterbox`` the padding mode ("val", "auto",
    "square"); ``conf_threshold`` / ``iou_threshold`` in [0, 1]; ``max_det`` boxes per
    image; ``multi_label`` several classes per box (val.py); ``device`` a torch device;
    ``threads`` torch CPU threads (process-wide; None leaves torch's setting).
    """

    name: ClassVar[str] = "yolov5"
    task: ClassVar[str] = "detection"
    transient: ClassVar[tuple[str, ...]] = ("_net", "_label_ids")
    adapter_class: ClassVar[type] = YoloAdapter

    weights: str = "yolov5n.pt"
    search_path: list[str] | None = None
    img_size: int = 640
    letterbox: str = "val"
    conf_threshold: float = 0.001
    iou_threshold: float = 0.65
    max_det: int = 300
    multi_label: bool = True
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.img_size < 32 or self.img_size % 32:
            raise ValueError(f"yolov5: img_size {self.img_size} must be a positive multiple of 32")
        if self.letterbox not in LETTERBOX_MODES:
            raise ValueError(f"yolov5: letterbox {self.letterbox!r} unknown; valid: {LETTERBOX_MODES}")
        if not (0 <= self.conf_threshold <= 1 and 0 <= self.iou_threshold <= 1):
            raise ValueError(f"yolov5: conf_threshold {self.conf_threshold} and iou_threshold "
                             f"{self.iou_threshold} must lie in [0, 1]")
        if self.max_det < 1:
            raise ValueError(f"yolov5: max_det {self.max_det} must be >= 1")
        self.categories = dict(COCO_CATEGORIES)

    # -- weights -----------------------------------------------------------------------------
    def weights_path(self) -> Path:
        """The checkpoint file, found through the search path (verified when its hash is known)."""
        return find_weights(self.weights, self.search_path)

    def identity(self) -> dict[str, Any]:
        """Name, output-determining parameters and the weights file's SHA-256."""
        params = {k: v for k, v in self.params().items() if k not in ("search_path", "threads")}
        return {"name": self.name, "params": params, "weights_sha256": self.weights_sha256()}

    def _load(self) -> None:
        import torch

        from vcm_plugin.tasks.yolov5.checkpoint import load_yolov5_checkpoint
        from vcm_plugin.tasks.yolov5.network import build_network

        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        path = self.weights_path()
        self.weights_sha256()  # checked against the known hash of its name
        ckpt = load_yolov5_checkpoint(path)
        net = build_network(ckpt.yaml, ckpt.state_dict, str(path)).fuse()  # BN folded, as val.py does
        try:
            label_ids = coco_ids_for_names(ckpt.names)
            categories = dict(COCO_CATEGORIES)
        except KeyError:  # not a COCO model: labels are its contiguous class indices
            label_ids = np.arange(len(ckpt.names), dtype=np.int64)
            categories = dict(enumerate(ckpt.names))
        if len(label_ids) != net.detect.nc:
            raise TaskModelError(f"weights file {str(path)!r}: {len(label_ids)} class names for "
                                 f"{net.detect.nc} classes")
        self._label_ids, self.categories = label_ids, categories
        self._net = freeze(net).to(torch.device(self.device))

    # -- inference ---------------------------------------------------------------------------
    def input_tensor(self, image: np.ndarray) -> tuple[Any, Letterbox]:
        """(network input (1, 3, H', W') RGB in [0, 1], its letterbox geometry) of an (H, W, 3) uint8 RGB image."""
        import torch

        image = np.ascontiguousarray(check_image(image, self.name))
        box = Letterbox.fit(image.shape[0], image.shape[1], self.img_size, self.letterbox)
        padded = box.apply(image)
        x = torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        return x.to(torch.device(self.device)), box

    def _predict(self, image: np.ndarray) -> Detections:
        """Detections of an (H, W, 3) uint8 RGB image."""
        import torch

        net = self.network()
        with torch.inference_mode():
            x, box = self.input_tensor(image)
            return self.detections(net(x)[0], box)

    def detections(self, pred: Any, box: Letterbox) -> Detections:
        """(N, 5 + nc) decoded predictions of one image -> NMS'd Detections in original pixels."""
        import torch
        from torchvision.ops import batched_nms, box_convert

        pred = pred[pred[:, 4] > self.conf_threshold]
        scores = pred[:, 5:] * pred[:, 4:5]
        boxes = box_convert(pred[:, :4], "cxcywh", "xyxy")
        if self.multi_label:
            rows, cls = (scores > self.conf_threshold).nonzero(as_tuple=True)
            boxes, conf = boxes[rows], scores[rows, cls]
        else:
            conf, cls = scores.max(1)
            keep = conf > self.conf_threshold
            boxes, conf, cls = boxes[keep], conf[keep], cls[keep]
        if len(conf) > 30000:  # as published: only the 30k most confident candidates enter NMS
            top = conf.topk(30000).indices
            boxes, conf, cls = boxes[top], conf[top], cls[top]
        keep = batched_nms(boxes.float(), conf.float(), cls, self.iou_threshold)[: self.max_det]
        if len(keep) == 0:
            return Detections.empty()
        out_boxes = box.to_original(boxes[keep].cpu().numpy())
        labels = self._label_ids[cls[keep].cpu().numpy()]
        return Detections(out_boxes, conf[keep].cpu().to(torch.float32).numpy(), labels)
