"""The YOLOv5 v6.x detection network, built from its yaml description.

Written from the published architecture (Ultralytics YOLOv5 v6.0+): Conv = Conv2d
(no bias) + BatchNorm (eps 1e-3) + SiLU; C3 = two 1x1 branches, one through n
bottlenecks, concatenated and fused by a 1x1 Conv; SPPF = 1x1 Conv, three chained 5x5
max-pools, concatenation, 1x1 Conv; Detect = one 1x1 Conv2d per level predicting
``na x (5 + nc)`` values decoded with a sigmoid, ``xy * 2 - 0.5 + grid`` and
``(wh * 2)^2 * anchor``, in input pixels. Channel widths are
``make_divisible(c * width_multiple, 8)`` and repeats ``max(round(n * depth_multiple), 1)``,
so the n/s/m/l/x descriptions all build. Module and parameter names match the release
checkpoints' state-dict keys (``model.0.conv.weight``, ..., ``model.24.anchors``).

Cut points: the network can run up to layer ``k`` (:meth:`YOLOv5.forward_to`), returning
every layer output the rest still needs (e.g. after the backbone, layer 9: the P3, P4
and P5 maps of layers 4, 6 and 9), and resume from there (:meth:`YOLOv5.rest`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vcm_plugin.tasks.base import TaskModelError


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels unless ``p`` given) + BatchNorm + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 Conv to ``c2 * e`` channels, 3x3 Conv back to ``c2``; residual when shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convolutions: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: three chained k x k max-pools (stride 1) concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension`` (channels)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """Anchor-based detection head; inference output (B, N, 5 + nc): cx, cy, w, h (input pixels), obj, cls."""

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        # anchors in pixels until the strides are known; the checkpoint stores them in stride units
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)  # pixels per cell, set by YOLOv5

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, x in enumerate(xs):
            p = self.m[i](x)
            b, _, ny, nx = p.shape
            y = p.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny, device=p.device, dtype=y.dtype),
                                    torch.arange(nx, device=p.device, dtype=y.dtype), indexing="ij")
            grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)
            stride = self.stride[i].to(y.dtype)
            anchor_px = (self.anchors[i] * stride).view(1, self.na, 1, 1, 2).to(y.dtype)
            xy = (y[..., :2] * 2 - 0.5 + grid) * stride
            wh = (y[..., 2:4] * 2) ** 2 * anchor_px
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(out, 1)


_BLOCKS: dict[str, type[nn.Module]] = {"Conv": Conv, "C3": C3, "SPPF": SPPF}


class YOLOv5(nn.Module):
    """A YOLOv5 detector built from its description (the ``yaml`` dict of a checkpoint).

    ``forward(x)`` takes (B, 3, H, W) float RGB in [0, 1], H and W multiples of 32,
    and returns (B, N, 5 + nc) decoded predictions in input pixels.
    """

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__()
        try:
            layers, self.backbone_end = _parse(description)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TaskModelError(f"bad YOLOv5 description: {type(exc).__name__}: {exc}") from exc
        self.model = nn.Sequential(*layers)
        self.description = description
        # the layers that read each output (for freeing memory and finding what a cut must carry)
        self._last_use: dict[int, int] = {}
        for layer in layers:
            for src in layer.sources:
                self._last_use[src] = max(self._last_use.get(src, -1), layer.i)
        detect = self.detect
        with torch.no_grad():
            feats = self.forward_to(torch.zeros(1, 3, 256, 256), len(layers) - 2)
            sizes = [feats[j].shape[-2] for j in detect.sources]
        detect.stride = torch.tensor([256.0 / s for s in sizes])
        detect.anchors /= detect.stride.view(-1, 1, 1)

    @property
    def detect(self) -> Detect:
        return self.model[-1]  # type: ignore[return-value]

    @property
    def stride(self) -> list[int]:
        """Pixels per cell of each detection level, e.g. [8, 16, 32]."""
        return [int(s) for s in self.detect.stride.tolist()]

    @property
    def num_layers(self) -> int:
        return len(self.model)

    def needed_after(self, layer: int) -> list[int]:
        """Indices of the layer outputs (<= ``layer``) that layers after ``layer`` read."""
        return sorted(k for k, last in self._last_use.items() if k <= layer < last)

    def _run(self, cache: dict[int, torch.Tensor], start: int, stop: int) -> dict[int, torch.Tensor]:
        for i in range(start, stop):
            layer = self.model[i]
            srcs = layer.sources
            x = cache[srcs[0]] if isinstance(layer.f, int) else [cache[j] for j in srcs]
            cache[i] = layer(x)
            for k in [k for k in cache if k != i and self._last_use.get(k, -1) <= i]:
                del cache[k]
        return cache

    def forward_to(self, x: torch.Tensor, layer: int) -> dict[int, torch.Tensor]:
        """Run layers 0..``layer`` on the input; return {index: output} of what the rest needs."""
        if not -1 <= layer < self.num_layers - 1:
            raise TaskModelError(f"YOLOv5 cut layer {layer} out of range [-1, {self.num_layers - 2}]")
        cache = self._run({-1: x}, 0, layer + 1)
        return {k: cache[k] for k in self.needed_after(layer)}

    def rest(self, feats: dict[int, torch.Tensor], layer: int) -> torch.Tensor:
        """Run the layers after ``layer`` from :meth:`forward_to`'s outputs; return the decoded predictions."""
        missing = [k for k in self.needed_after(layer) if k not in feats]
        if missing:
            raise TaskModelError(f"YOLOv5 resuming after layer {layer} needs the outputs of layers {missing}")
        cache = self._run(dict(feats), layer + 1, self.num_layers)
        return cache[self.num_layers - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.forward_to(x, -1), -1)

    def fuse(self) -> YOLOv5:
        """Fold every BatchNorm into its convolution (inference only, as YOLOv5's val/detect do).

        Outputs change only by float rounding; the state dict no longer has ``bn`` keys.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.eval()
        for module in self.modules():
            if isinstance(module, Conv) and isinstance(module.bn, nn.BatchNorm2d):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                module.bn = nn.Identity()
        return self


class YoloFront(nn.Module):
    """Layers 0..k of a :class:`YOLOv5` (given as modules), run as :meth:`YOLOv5._run` does: the output of layer k."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = {-1: x}
        for layer in self.layers:
            srcs = layer.sources
            cache[layer.i] = layer(cache[srcs[0]] if isinstance(layer.f, int) else [cache[j] for j in srcs])
        return cache[self.layers[-1].i]


def _parse(d: dict[str, Any]) -> tuple[list[nn.Module], int]:
    """Build the layer list from a description; every layer gets ``i``, ``f`` and ``sources``."""
    nc, gd, gw = int(d["nc"]), float(d["depth_multiple"]), float(d["width_multiple"])
    anchors = d["anchors"]
    if isinstance(anchors, int):
        raise ValueError("anchors given as a count need auto-anchoring, which is not supported; list them")
    no = len(anchors[0]) // 2 * (nc + 5)
    names = {"None": None, "nc": nc, "anchors": anchors, "True": True, "False": False}
    specs = list(d["backbone"]) + list(d["head"])
    layers: list[nn.Module] = []
    ch: list[int] = [int(d.get("ch", 3))]
    for i, (f, n, kind, args) in enumerate(specs):
        args = [names.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        kind = str(kind)
        if kind in _BLOCKS:
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if kind == "C3":
                args.insert(2, n)
                n = 1
            cls: Any = _BLOCKS[kind]
        elif kind == "Concat":
            c2, cls = sum(ch[x] for x in f), Concat
        elif kind == "Detect":
            args = [args[0], args[1], [ch[x] for x in f]]
            c2, cls = ch[f[-1]], Detect
        elif kind in ("nn.Upsample", "Upsample"):
            c2, cls = ch[f], nn.Upsample
        else:
            raise ValueError(f"layer {i}: module type {kind!r} is not supported (Conv, C3, SPPF, nn.Upsample, "
                             "Concat, Detect)")
        module = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
        module.i, module.f = i, f
        module.sources = [i - 1 if j == -1 else j for j in ([f] if isinstance(f, int) else f)]
        layers.append(module)
        if i == 0:
            ch = []
        ch.append(c2)
    if not isinstance(layers[-1], Detect):
        raise ValueError("the last layer must be Detect")
    return layers, len(d["backbone"]) - 1


# The v6.x architecture (as in every release checkpoint's yaml); only the multiples differ by size.
V6_BACKBONE: list[list[Any]] = [
    [-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
    [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]], [-1, 9, "C3", [512]],
    [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]], [-1, 1, "SPPF", [1024, 5]],
]
V6_HEAD: list[list[Any]] = [
    [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
    [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
    [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
    [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],
]
V6_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
#: (depth_multiple, width_multiple) of the published sizes.
V6_MULTIPLES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}


def v6_description(size: str = "n", nc: int = 80) -> dict[str, Any]:
    """The description of YOLOv5{n,s,m,l,x} v6.x with ``nc`` classes."""
    if size not in V6_MULTIPLES:
        raise TaskModelError(f"unknown YOLOv5 size {size!r}; valid: {sorted(V6_MULTIPLES)}")
    gd, gw = V6_MULTIPLES[size]
    return {"nc": nc, "depth_multiple": gd, "width_multiple": gw, "anchors": V6_ANCHORS,
            "backbone": V6_BACKBONE, "head": V6_HEAD, "ch": 3}


def infer_description(state_dict: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, Any]:
    """Guess the v6.x size and class count of a plain YOLOv5 state dict from its tensor shapes."""
    try:
        stem = state_dict["model.0.conv.weight"].shape[0]
        repeats = len({k.split(".")[3] for k in state_dict if k.startswith("model.2.m.")})
        head = state_dict["model.24.m.0.weight"].shape[0]
    except (KeyError, IndexError) as exc:
        raise TaskModelError(f"{source!r} does not look like a YOLOv5 v6.x state dict (missing {exc}); "
                             "pass its description explicitly") from exc
    for size, (gd, gw) in V6_MULTIPLES.items():
        if make_divisible(64 * gw, 8) == stem and max(round(3 * gd), 1) == repeats:
            return v6_description(size, head // 3 - 5)
    raise TaskModelError(f"{source!r}: stem width {stem} and {repeats} bottlenecks match no YOLOv5 v6.x size; "
                         "pass its description explicitly")


def build_network(description: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
                  ) -> YOLOv5:
    """Build the network and load ``state_dict`` strictly (every key and shape must match), in eval mode."""
    net = YOLOv5(description)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise TaskModelError(f"the weights in {source!r} do not fit the YOLOv5 network their description builds: "
                             f"{exc}") from exc
    return net.eval()
