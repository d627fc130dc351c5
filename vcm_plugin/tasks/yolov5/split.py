"""YOLOv5 cut at ``layer.<k>`` for learned split / direct codecs (see :mod:`vcm_plugin.splitting.adapter`).

Points in order: ``input``, ``layer.0`` .. ``layer.<n-2>`` (every layer before the Detect
head), ``output``: the head's raw maps (the 1x1 convolutions' outputs of each detection
level, before the sigmoid and box decoding). A learned codec carries ONE tensor, so the
cut must be clean: cutting where later layers also read earlier outputs (e.g. after the
backbone, which the neck reads at P3, P4 and P5) is refused naming those layers. The
model's input geometry is the task model's own letterbox, so Y1 has exactly the shape the
harness's ``front`` gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcm_plugin.splitting.adapter import OUTPUT, SplitAdapter, freeze
from vcm_plugin.tasks.base import INPUT, TaskModelError


class YoloSplit(SplitAdapter):
    """:class:`~vcm_plugin.tasks.yolov5.detector.YOLOv5Detector` cut after one layer."""

    def __init__(self, model: Any, cut: str) -> None:
        super().__init__(model, cut)
        self.net = freeze(model.network())
        self.layer = model._cut_layer(cut)
        extra = [k for k in self.net.needed_after(self.layer) if k != self.layer]
        if extra:
            raise TaskModelError(f"task model 'yolov5': cutting after {cut!r} (layer {self.layer}) also needs the "
                                 f"outputs of layers {extra}; a learned codec carries one tensor: cut at a "
                                 f"layer whose output is the only one crossing (e.g. layer.2, layer.3, layer.4)")
        self.cut = f"layer.{self.layer}"

    def points(self) -> list[str]:
        return [INPUT] + [f"layer.{k}" for k in range(self.net.num_layers - 1)] + [OUTPUT]

    def input_tensor(self, image: np.ndarray) -> Any:
        x, _ = self.model._input_tensor(image)
        return x

    def front(self, x: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.net.front(x, self.layer)[self.layer]

    def mid(self, y1: Any, point: str) -> list[Any]:
        self.check_distillation_point(point)
        if point == f"layer.{self.layer}":
            return [y1]
        last = self.net.num_layers - 1
        stop = last if point == OUTPUT else int(point.split(".")[1]) + 1
        keep = set(self.net.detect.sources) if point == OUTPUT else {stop - 1}
        cache = {self.layer: y1}
        for i in range(self.layer + 1, stop):  # as YOLOv5._run, keeping what the target needs
            layer = self.net.model[i]
            srcs = layer.sources
            cache[i] = layer(cache[srcs[0]] if isinstance(layer.f, int) else [cache[j] for j in srcs])
            for k in [k for k in cache if k != i and k not in keep and self.net._last_use.get(k, -1) <= i]:
                del cache[k]
        if point == OUTPUT:
            detect = self.net.detect
            return [conv(cache[src]) for conv, src in zip(detect.m, detect.sources)]
        return [cache[stop - 1]]

    def front_module(self) -> Any:
        import copy

        from torch import nn

        class YoloFront(nn.Module):
            """Layers 0..k of YOLOv5 (a copy), run as YOLOv5._run does."""

            def __init__(self, layers: list[nn.Module]) -> None:
                super().__init__()
                self.layers = nn.ModuleList(layers)

            def forward(self, x: Any) -> Any:
                cache = {-1: x}
                for layer in self.layers:
                    srcs = layer.sources
                    cache[layer.i] = layer(cache[srcs[0]] if isinstance(layer.f, int) else [cache[j] for j in srcs])
                return cache[self.layers[-1].i]

        front = YoloFront([copy.deepcopy(self.net.model[i]) for i in range(self.layer + 1)])
        for p in front.parameters():
            p.requires_grad_(True)
        return front

    def to_value(self, y1: Any, image_hw: tuple[int, int]) -> Any:
        from vcm_plugin.tasks.yolov5.detector import YoloFeatures

        return YoloFeatures({self.layer: y1}, self.layer, (int(image_hw[0]), int(image_hw[1])))

    def from_value(self, value: Any) -> Any:
        tensors = getattr(value, "tensors", None)
        if not isinstance(tensors, dict) or self.layer not in tensors:
            raise TaskModelError(f"task model 'yolov5': expected YoloFeatures of layer {self.layer}, "
                                 f"got {type(value).__name__}")
        return tensors[self.layer]
