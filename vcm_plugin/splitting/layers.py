"""``vcm layers MODEL``: the valid cut points of a model, with tensor shapes for a given input size.

``MODEL`` is a registered task model (``yolov5``, ``cifar10-vgg``, ...: its declared cut
points, run on a blank image of ``--size``) or any torchvision classification model name
(``resnet50``, ``mobilenet_v3_large``...: built with random weights, since only shapes
matter, and traced; every node is listed with the extra tensors a cut there would need).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np


def _shape(value: Any) -> str:
    if hasattr(value, "shape"):
        return "x".join(str(d) for d in value.shape)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in value.items()) + "}"
    if isinstance(getattr(value, "tensors", None), dict):  # values that carry several layers (skip connections)
        return f"{type(value).__name__} " + _shape(value.tensors)
    if hasattr(getattr(value, "tensor", None), "shape"):  # one tensor plus geometry (torchvision R-CNN cuts)
        return f"{type(value).__name__} " + _shape(value.tensor)
    return type(value).__name__


def task_model_layers(name: str, params: dict[str, Any], height: int, width: int) -> list[tuple[str, str]]:
    """(cut point, shape of the value there) of a registered task model on a blank HxW image."""
    from vcm_plugin.tasks.registry import get_task_model

    if isinstance(params.get("search_path"), str):  # --param search_path=DIR
        params = {**params, "search_path": [params["search_path"]]}
    model = get_task_model(name, **params)
    image = np.full((height, width, 3), 114, np.uint8)
    return [(point, "image " + f"{height}x{width}x3" if point == "input" else _shape(model.front(point, image)))
            for point in model.cut_points()]


def torchvision_layers(name: str, height: int, width: int):
    """:func:`~vcm_plugin.splitting.graph.analyse_cuts` of a torchvision model with random weights."""
    import torch
    import torchvision

    from vcm_plugin.splitting.graph import analyse_cuts

    model = torchvision.models.get_model(name, weights=None)
    return analyse_cuts(model, torch.zeros(1, 3, height, width))


def cmd_layers(args: argparse.Namespace) -> int:
    from vcm_plugin.cli import CLIError, parse_params
    from vcm_plugin.tasks.registry import TASK_MODELS

    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise CLIError(f"--size {args.size!r}: expected HxW, e.g. 224x224") from None
    if args.model in TASK_MODELS.names():
        for point, shape in task_model_layers(args.model, parse_params(args.param), height, width):
            print(f"{point:<24}{shape}")
        return 0
    import torchvision

    if args.model not in torchvision.models.list_models(module=torchvision.models):
        raise CLIError(f"model {args.model!r} is neither a task model ({', '.join(TASK_MODELS.names())}) nor a "
                       "torchvision classification model")
    cuts = torchvision_layers(args.model, height, width)
    for cut in cuts:
        if cut.clean or args.all:
            shape = "x".join(str(d) for d in cut.shape) if cut.shape else "?"
            needs = "" if cut.clean else f"  needs also: {', '.join(cut.extra)}"
            print(f"{cut.name:<28}{shape:<20}{needs}")
    if not args.all:
        print(f"({sum(c.clean for c in cuts)} clean cut points of {len(cuts)} nodes; --all lists every node)")
    return 0


def add_layers_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's cut points (split inference) with tensor shapes")
    p.add_argument("model", help="a task model (yolov5, cifar10-vgg, ...) or a torchvision model (resnet50, ...)")
    p.add_argument("--size", default="224x224", help="input HxW in pixels (default 224x224)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="task-model parameter (repeatable)")
    p.add_argument("--all", action="store_true", help="also list nodes whose cut needs extra tensors")
    p.set_defaults(func=cmd_layers)


__all__ = ["add_layers_parser", "task_model_layers", "torchvision_layers"]
