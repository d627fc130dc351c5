"""``vcm layers MODEL``: list a model's cut points (split inference) with tensor shapes."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import CLIError, parse_params


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm layers``."""
    p = sub.add_parser("layers", help="list a model's cut points (split inference) with tensor shapes")
    p.add_argument("model", help="a task model (yolov5, cifar10-vgg, ...) or a torchvision model (resnet50, ...)")
    p.add_argument("--size", default="224x224", help="input HxW in pixels (default 224x224)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="task-model parameter (repeatable)")
    p.add_argument("--all", action="store_true", help="also list nodes whose cut needs extra tensors")
    p.add_argument("--cut", help="with --images: the cut point whose tensor value ranges to measure")
    p.add_argument("--images", nargs="+", metavar="FILE",
                   help="measure each tensor's [min, max] at --cut over these images with the model's real weights "
                        "(the value_range of fcm-vvc mode: ctc)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Print the cut points of ``args.model`` with their shapes."""
    from vcm_plugin.splitting.layers import parse_size, task_model_layers, torchvision_layers
    from vcm_plugin.tasks.registry import TASK_MODELS

    if bool(args.cut) != bool(args.images):
        raise CLIError("--cut and --images go together: the cut point, and the images to measure its ranges on")
    if args.images:
        from vcm_plugin.splitting.layers import value_ranges

        if args.model not in TASK_MODELS.names():
            raise CLIError(f"--images needs a task model ({', '.join(TASK_MODELS.names())}), not {args.model!r}")
        ranges = value_ranges(args.model, parse_params(args.param), args.cut, args.images)
        for key, (low, high) in ranges.items():
            print(f"{key:<24}min {low:<14.6g}max {high:.6g}")
        low, high = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
        print(f"value_range: [{low:.6g}, {high:.6g}]   (over {len(args.images)} image(s), every tensor)")
        return 0
    height, width = parse_size(args.size)
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
