"""Cut points inside the backbone body of torchvision's R-CNN detectors (Faster / Mask R-CNN).

These detectors do not trace with torch.fx (data-dependent control flow in the RPN and ROI
heads), so the cut is made where their code is a plain sequence: the children of the
backbone's body (``IntermediateLayerGetter``: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` .. ``layer4`` for ResNet-50). Point names are ``body.<child>``. The FPN reads
every ``return_layers`` output, so a cut after ``layer2`` or later also needs ``layer1``'s
output: such cuts are refused naming the extra tensors; ``body.layer1`` (256 x H/4 x W/4)
and everything before it are clean.

The value at a cut is :class:`DetectorFeatures`: the tensor, the transformed batch's size
and per-image sizes (to rebuild the ``ImageList``) and the ORIGINAL image size (to map
boxes back).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcm_plugin.splitting.adapter import OUTPUT, SplitAdapter, freeze
from vcm_plugin.tasks.base import INPUT, TaskModelError

PREFIX = "body."


@dataclass
class DetectorFeatures:
    """Y1 of a torchvision R-CNN cut: ``tensor`` (1, C, h, w) after body child ``child``; ``batch_hw`` the
    padded batch (H, W); ``resized_hw`` the resized image inside it; ``image_hw`` the ORIGINAL (height,
    width), pixels."""

    tensor: Any
    child: str
    batch_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    image_hw: tuple[int, int]


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


def front_features(net: Any, child: str, tensor: Any, image_hw: tuple[int, int]) -> DetectorFeatures:
    """Run the transform and the body up to ``child`` on one (3, H, W) float image in [0, 1]."""
    images, _ = net.transform([tensor])
    x = images.tensors
    for name, module in _body(net).named_children():
        x = module(x)
        if name == child:
            break
    h, w = images.image_sizes[0]
    return DetectorFeatures(x, child, tuple(images.tensors.shape[-2:]), (int(h), int(w)), image_hw)


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


def run_rest(net: Any, feats: DetectorFeatures) -> dict[str, Any]:
    """The detector's output dict (in ORIGINAL pixels) from :class:`DetectorFeatures`."""
    from torchvision.models.detection.image_list import ImageList

    features = rest_features(net, feats.child, feats.tensor)
    images = ImageList(feats.tensor.new_zeros((1, 3, *feats.batch_hw)), [tuple(feats.resized_hw)])
    proposals, _ = net.rpn(images, features)
    detections, _ = net.roi_heads(features, proposals, images.image_sizes)
    return net.transform.postprocess(detections, images.image_sizes, [tuple(feats.image_hw)])[0]


class TorchvisionDetectorSplit(SplitAdapter):
    """A torchvision R-CNN cut after a body child; ``mid`` runs later body children; ``output`` = the FPN maps."""

    def __init__(self, model: Any, cut: str) -> None:
        super().__init__(model, cut)
        model.load()
        self.net = freeze(model._net)
        self.child = check_body_cut(self.net, cut, model.name)

    def points(self) -> list[str]:
        return [INPUT, *body_points(self.net), OUTPUT]

    def input_tensor(self, image: np.ndarray) -> Any:
        """The detector's normalised, resized and padded batch, mapped back to [0, 1] (1, 3, H, W): its
        padding is the mean colour, so ``front`` (which normalises) sees exactly the detector's batch."""
        import torch

        transform = self.net.transform
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        resized, _ = transform.resize(transform.normalize(tensor), None)
        batch = transform.batch_images([resized], size_divisible=transform.size_divisible)
        mean = torch.tensor(transform.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(transform.image_std).view(1, 3, 1, 1)
        return batch * std + mean

    def front(self, x: Any) -> Any:
        import torch

        transform = self.net.transform
        with torch.no_grad():
            y = transform.normalize(x[0]).unsqueeze(0) if x.shape[0] == 1 else torch.stack(
                [transform.normalize(i) for i in x])
            for name, module in _body(self.net).named_children():
                y = module(y)
                if name == self.child:
                    return y
        raise AssertionError("unreachable")

    def mid(self, y1: Any, point: str) -> list[Any]:
        point = self.check_distillation_point(point)
        if point == OUTPUT:
            return list(rest_features(self.net, self.child, y1).values())
        stop, x, started = point[len(PREFIX):], y1, False
        for name, module in _body(self.net).named_children():
            if started:
                x = module(x)
            if name == stop and (started or name == self.child):
                return [x]
            started = started or name == self.child
        raise TaskModelError(f"no body child {stop!r}")

    def to_value(self, y1: Any, image_hw: tuple[int, int]) -> Any:
        import torch

        transform = self.net.transform
        h, w = transform.resize(torch.zeros(3, int(image_hw[0]), int(image_hw[1])), None)[0].shape[-2:]
        k = transform.size_divisible
        return DetectorFeatures(y1, self.child, (-(-h // k) * k, -(-w // k) * k), (int(h), int(w)),
                                (int(image_hw[0]), int(image_hw[1])))

    def from_value(self, value: Any) -> Any:
        if not isinstance(value, DetectorFeatures):
            raise TaskModelError(f"task model {self.model.name!r}: expected DetectorFeatures, got "
                                 f"{type(value).__name__}")
        return value.tensor
