"""A model's valid cut points, with tensor shapes for a given input size (``vcm layers MODEL``).

``MODEL`` is a registered task model (``yolov5``, ``cifar10-vgg``, ...: its declared cut
points, run on a blank image of ``--size``) or any torchvision classification model name
(``resnet50``, ``mobilenet_v3_large``...: built with random weights, since only shapes
matter, and traced; every node is listed with the extra tensors a cut there would need).
With ``--cut CUT --images FILES``, :func:`value_ranges` measures each tensor's [min, max] at
the cut over real images: the dataset-global range that ``fcm-vvc`` ``mode: ctc`` quantises with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcm_plugin.errors import InputError


def _shape(value: Any) -> str:
    """"1x64x8x8" of a one-tensor value, "{name: shape, ...}" of several."""
    shapes = {k: "x".join(str(d) for d in t.shape) for k, t in value.tensors.items()}
    return next(iter(shapes.values())) if len(shapes) == 1 else "{" + ", ".join(f"{k}: {v}" for k, v in
                                                                                shapes.items()) + "}"


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` -> (height, width); :class:`~vcm_plugin.errors.InputError` naming ``--size`` otherwise."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected HxW, e.g. 224x224") from None
    return height, width


def task_model_layers(name: str, params: dict[str, Any], height: int, width: int) -> list[tuple[str, str]]:
    """(cut point, shape of the value there) of a registered task model on a blank HxW image."""
    from vcm_plugin.tasks.registry import get_task_model

    if isinstance(params.get("search_path"), str):  # --param search_path=DIR
        params = {**params, "search_path": [params["search_path"]]}
    model = get_task_model(name, **params).for_shapes()
    image = np.full((height, width, 3), 114, np.uint8)
    return [(point, "image " + f"{height}x{width}x3" if point == "input" else _shape(model.front(point, image)))
            for point in model.cut_points()]


def value_ranges(name: str, params: dict[str, Any], cut: str, images: list[str]) -> dict[str, tuple[float, float]]:
    """Tensor name -> (min, max) at ``cut`` of task model ``name`` (with its real weights) over ``images``."""
    from tqdm import tqdm

    from vcm_plugin.images.io import read_image
    from vcm_plugin.tasks.registry import get_task_model

    if not images:
        raise InputError("--images: give at least one image file")
    if isinstance(params.get("search_path"), str):
        params = {**params, "search_path": [params["search_path"]]}
    model = get_task_model(name, **params)
    ranges: dict[str, tuple[float, float]] = {}
    for path in tqdm(images, desc=f"{name} {cut} ranges", unit="image"):
        for key, tensor in model.front(cut, read_image(path)).tensors.items():
            low, high = float(tensor.min()), float(tensor.max())
            old = ranges.get(key, (low, high))
            ranges[key] = (min(old[0], low), max(old[1], high))
    return ranges


def torchvision_layers(name: str, height: int, width: int):
    """:func:`~vcm_plugin.tasks.graph.analyse_cuts` of a torchvision model with random weights."""
    import torch
    import torchvision

    from vcm_plugin.tasks.graph import analyse_cuts

    model = torchvision.models.get_model(name, weights=None)
    return analyse_cuts(model, torch.zeros(1, 3, height, width))


__all__ = ["parse_size", "task_model_layers", "torchvision_layers", "value_ranges"]
