"""Cut points inside the backbone body of torchvision's R-CNN detectors (Faster / Mask R-CNN).

These detectors do not trace with torch.fx (data-dependent control flow in the RPN and ROI
heads), so the cut is made where their code is a plain sequence: the children of the
backbone's body (``IntermediateLayerGetter``: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` .. ``layer4`` for ResNet-50). Point names are ``body.<child>``. The FPN reads
every ``return_layers`` output, so a cut after ``layer2`` or later also needs ``layer1``'s
output: such cuts are refused naming the extra tensors; ``body.layer1`` (256 x H/4 x W/4)
and everything before it are clean.

The value at a cut is a :class:`~vcm_plugin.tasks.split.CutValue` of one tensor; the
transformed batch's size and the resized image inside it (to rebuild the ``ImageList``)
are recomputed from the ORIGINAL image size, as the detector's transform computes them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from vcm_plugin.tasks.base import INPUT, TaskModelError
from vcm_plugin.tasks.split import OUTPUT, CutValue, ModelAdapter

PREFIX = "body."


def _body(net: Any) -> Any:
    body = getattr(getattr(net, "backbone", None), "body", None)
    if body is None or not hasattr(body, "return_layers") or not hasattr(net, "rpn"):
        raise TaskModelError(f"{type(net).__name__}: body cut points need an R-CNN with a backbone body "
                             "(Faster / Mask R-CNN)")
    return body


def body_points(net: Any) -> list[str]:
    """``body.<child>`` for every child of the backbone body, in order."""
    return [PREFIX + name for name, _ in _body(net).named_children()]


def check_body_cut(net: Any, point: str, model_name: str) -> str:
    """The child name of a clean cut ``point``; errors list valid points or the extra tensors needed."""
    import difflib

    points = body_points(net)
    if point not in points:
        near = difflib.get_close_matches(point, points, n=3, cutoff=0.3)
        raise TaskModelError(f"task model {model_name!r} has no cut point {point!r}; nearest: {near or points[:3]}; "
                             f"valid: {[INPUT, *points]}")
    names = [p[len(PREFIX):] for p in points]
    child = point[len(PREFIX):]
    earlier = names[:names.index(child)]
    extra = [n for n in earlier if n in _body(net).return_layers]
    if extra:
        raise TaskModelError(f"task model {model_name!r}: cutting after {point!r} also needs the outputs of "
                             f"{[PREFIX + n for n in extra]} (the FPN reads them); cut at or before body.layer1")
    return child


def rest_features(net: Any, child: str, y1: Any) -> OrderedDict:
    """The FPN features from Y1 at ``child`` (the body's remaining children, then the FPN)."""
    body = _body(net)
    out: OrderedDict = OrderedDict()
    started, x = False, y1
    for name, module in body.named_children():
        if started:
            x = module(x)
        if name in body.return_layers and (started or name == child):
            out[body.return_layers[name]] = x
        started = started or name == child
    return net.backbone.fpn(out)



class TorchvisionDetectorAdapter(ModelAdapter):
    """A torchvision R-CNN cut after a body child; ``mid`` runs later body children; ``output`` = the FPN maps."""

    def net(self) -> Any:
        self.model.load()
        return self.model._net

    def points(self) -> list[str]:
        return [INPUT, *body_points(self.net()), OUTPUT]

    def cut_points(self) -> list[str]:
        """``input``, then ``body.<child>`` of an R-CNN's backbone body (clean up to ``body.layer1``)."""
        try:
            return self.points()[:-1]
        except TaskModelError:
            return [INPUT]

    def check_cut(self, point: str) -> str:
        if not point.startswith(PREFIX):  # refused without building the network
            raise TaskModelError(f"task model {self.model.name!r} has no cut point {point!r}; valid: 'input', or "
                                 f"'{PREFIX}<child>' of an R-CNN's backbone body (`vcm layers {self.model.name}`)")
        check_body_cut(self.net(), point, self.model.name)
        return point

    @property
    def norm(self) -> tuple[Any, Any]:
        import torch

        transform = self.net().transform
        return (torch.tensor(transform.image_mean).view(1, 3, 1, 1),
                torch.tensor(transform.image_std).view(1, 3, 1, 1))

    def to_unit(self, x: Any) -> Any:
        """The normalised, resized and padded batch mapped back to [0, 1]: its padding is the mean colour, so
        :meth:`from_unit` gives exactly the detector's batch."""
        mean, std = self.norm
        return x * std + mean

    def prepare(self, image: np.ndarray) -> Any:
        images, _ = self.net().transform([self.model.tensor(image)])
        return images.tensors

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        child = cut[len(PREFIX):]
        for name, module in _body(self.net()).named_children():
            x = module(x)
            if name == child:
                return {"y": x}
        raise TaskModelError(f"no body child {child!r}")

    def rest(self, cut: str, value: CutValue) -> Any:
        import torch
        from torchvision.models.detection.image_list import ImageList

        net, y1 = self.net(), torch.as_tensor(value.tensor)
        transform, (height, width) = net.transform, value.image_hw
        h, w = transform.resize(torch.zeros(3, height, width), None)[0].shape[-2:]
        k = transform.size_divisible
        features = rest_features(net, cut[len(PREFIX):], y1)
        images = ImageList(y1.new_zeros((1, 3, -(-h // k) * k, -(-w // k) * k)), [(int(h), int(w))])
        proposals, _ = net.rpn(images, features)
        detections, _ = net.roi_heads(features, proposals, images.image_sizes)
        output = transform.postprocess(detections, images.image_sizes, [(height, width)])[0]
        return self.model.detections(output, (height, width))

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        net, child = self.net(), cut[len(PREFIX):]
        if point == OUTPUT:
            return list(rest_features(net, child, y1).values())
        stop, started = point[len(PREFIX):], False
        for name, module in _body(net).named_children():
            if started:
                y1 = module(y1)
            if name == stop and (started or name == child):
                return [y1]
            started = started or name == child
        raise TaskModelError(f"no body child {stop!r}")
