"""The project's own CIFAR-10 classifier: a small VGG-style network and its task model ``cifar10-vgg``.

:class:`CifarVGG` is a stack of stages ``block1`` .. ``blockN`` (each: ``convs[i]`` times
conv3x3-BN-ReLU at ``widths[i]`` channels, then a 2x2 max-pool that halves the
resolution), a global average ``pool`` (flattened to a vector) and a linear head ``fc``
(dropout, then linear, giving logits). These module names are the cut points, in order::

    input -> block1 (16x16) -> block2 (8x8) -> block3 (4x4) -> block4 (2x2) -> block5 (1x1) -> pool -> fc

(resolutions for the default 5 stages on a 32x32 input). The value at ``input`` is the
(H, W, 3) uint8 RGB image; at ``blockK`` a (1, C, h, w) float32 tensor; at ``pool`` a
(1, C) tensor; at ``fc`` the (1, 10) logits. The network was trained by this project
(``vcm train classifier``) and ships in the project zoo as ``cifar10-vgg``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks.base import INPUT, TaskModel, check_image, state_dict_mismatch
from vcm_plugin.tasks.predictions import ClassScores
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.tasks.split import OUTPUT, CutValue, ModelAdapter, freeze

#: The CIFAR-10 class names in class-index order (the network's outputs; the ``cifar10`` dataset's labels).
CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                    "ship", "truck")
#: Per-channel mean / std of the CIFAR-10 train set on a 0..1 scale, used only when a checkpoint has none.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
INPUT_SIZE = 32  # pixels; other image sizes are resized to this
EXPORT_FORMAT = "vcm-cifar-vgg/1"


@dataclass(frozen=True)
class VGGConfig:
    """Architecture: ``widths[i]`` channels and ``convs[i]`` conv layers in stage i+1 (1 to 5 stages,
    each ending with a 2x2 max-pool); ``dropout`` probability before ``fc``; ``num_classes`` outputs."""

    widths: tuple[int, ...] = (32, 64, 112, 128, 128)
    convs: tuple[int, ...] = (1, 2, 2, 1, 1)
    num_classes: int = 10
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "convs", tuple(int(c) for c in self.convs))
        if not 1 <= len(self.widths) <= 5 or len(self.convs) != len(self.widths):
            raise ValueError(f"VGGConfig: 1 to 5 stages with one width and one conv count each, got widths "
                             f"{list(self.widths)} and convs {list(self.convs)}")
        if min(self.widths) < 1 or min(self.convs) < 1 or self.num_classes < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"VGGConfig: widths/convs/num_classes must be >= 1 and dropout in [0, 1): {self}")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (weights-only checkpoint friendly)."""
        d = asdict(self)
        return {**d, "widths": list(self.widths), "convs": list(self.convs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VGGConfig:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def cut_points(self) -> list[str]:
        """The module names in order: ``block1`` .. ``blockN``, ``pool``, ``fc``."""
        return [f"block{i + 1}" for i in range(len(self.widths))] + ["pool", "fc"]


class CifarVGG(nn.Module):
    """VGG-style CIFAR network; input (B, 3, 32, 32) normalised float32, output (B, classes) logits."""

    def __init__(self, cfg: VGGConfig) -> None:
        super().__init__()
        self.cfg = cfg
        in_ch = 3
        for i, (width, n) in enumerate(zip(cfg.widths, cfg.convs)):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                in_ch = width
            layers.append(nn.MaxPool2d(2))
            self.add_module(f"block{i + 1}", nn.Sequential(*layers))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_ch, cfg.num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self.cfg.cut_points()]

    def forward_to(self, x: torch.Tensor, point: str) -> torch.Tensor:
        """Run from the normalised input through the module ``point`` (inclusive)."""
        for name, module in self.stages():
            x = module(x)
            if name == point:
                return x
        raise KeyError(point)

    def forward_from(self, point: str, x: torch.Tensor) -> torch.Tensor:
        """Run the modules AFTER ``point`` (``"input"``: all of them) to the logits."""
        names = [INPUT] + self.cfg.cut_points()
        for _, module in self.stages()[names.index(point):]:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(INPUT, x)


def build_cifar_vgg(cfg: VGGConfig | None = None) -> CifarVGG:
    """A fresh :class:`CifarVGG` (default architecture when ``cfg`` is None)."""
    return CifarVGG(cfg or VGGConfig())


def read_export(path: str | Path) -> tuple[dict[str, Any], VGGConfig, list[float], list[float]]:
    """(state_dict, architecture, mean, std) from an exported checkpoint or a plain state_dict.

    A plain state_dict gets the default :class:`VGGConfig` and the CIFAR-10 mean/std.
    Loads with ``weights_only=True``; unreadable files raise :class:`TaskModelError`.
    """
    from vcm_plugin.weights import load_state_dict_safely

    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:
        load_state_dict_safely(path)  # raises a TaskModelError naming the file and the reason
        raise
    meta = obj if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else {"state_dict": obj}
    state = meta["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TaskModelError(f"weights file {str(path)!r} does not hold a state_dict (a dict of name -> tensor)")
    try:
        cfg = VGGConfig.from_dict(meta["arch"]) if "arch" in meta else VGGConfig()
    except (TypeError, ValueError) as exc:
        raise TaskModelError(f"weights file {str(path)!r}: invalid architecture {meta['arch']!r}: {exc}") from exc
    mean = [float(v) for v in meta.get("mean", CIFAR10_MEAN)]
    std = [float(v) for v in meta.get("std", CIFAR10_STD)]
    return state, cfg, mean, std


def load_cifar_vgg(path: str | Path) -> tuple[Any, list[float], list[float]]:
    """(network in eval mode, mean, std) from a checkpoint; a foreign state_dict is refused, keys named."""
    state, cfg, mean, std = read_export(path)
    net = build_cifar_vgg(cfg)
    mismatch = state_dict_mismatch({k: tuple(v.shape) for k, v in net.state_dict().items()}, state,
                                   ("missing", "unexpected", "shape mismatch"))
    if mismatch:
        raise TaskModelError(f"weights {str(path)!r} are not a cifar10-vgg network of architecture "
                             f"{cfg.to_dict()}; {mismatch}")
    net.load_state_dict(state)
    return net.eval(), mean, std


class CifarAdapter(ModelAdapter):
    """:class:`CifarVGGClassifier` cut after a stage; ``output`` is the logits (same as ``fc``)."""

    @property
    def norm(self) -> tuple[Any, Any]:
        return self.model.network().norm

    def points(self) -> list[str]:
        return [INPUT, *self.model.network().cfg.cut_points(), OUTPUT]

    def prepare(self, image: np.ndarray) -> Any:
        return self.model.input_tensor(image)

    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        return {"y": self.model.network().forward_to(x, cut)}

    def rest(self, cut: str, value: CutValue) -> ClassScores:
        x = torch.as_tensor(value.tensor, dtype=torch.float32)
        if x.ndim in (1, 3):
            x = x.unsqueeze(0)
        if x.shape[0] != 1:
            raise TaskModelError(f"task model {self.model.name!r}: cut point {cut!r} needs one tensor with "
                                 f"batch dim 1, got shape {tuple(x.shape)}")
        try:
            return self.model.scores(self.model.network().forward_from(cut, x))
        except RuntimeError as exc:
            raise TaskModelError(f"task model {self.model.name!r}: a tensor of shape {tuple(x.shape)} does not fit "
                                 f"cut point {cut!r}: {str(exc).splitlines()[0]}") from exc

    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        names = self.cut_points()
        stop = names[-1] if point == OUTPUT else point
        for _, module in self.model.network().stages()[names.index(cut):names.index(stop)]:
            y1 = module(y1)
        return [y1]

    def front_layers(self, cut: str) -> list[Any]:
        return [m for _, m in self.model.network().stages()[:self.cut_points().index(cut)]]


@register_task_model
@dataclass
class CifarVGGClassifier(TaskModel):
    """The project's CIFAR-10 classifier (10 softmax probabilities in CIFAR-10 class order).

    Fields: ``weights`` a project-zoo classifier name (default ``cifar10-vgg``, SHA-256
    verified) or else a checkpoint file name found through the weights search path (or an
    absolute path); ``search_path`` extra folders searched first. Images that are not
    32x32 are resized to 32x32 with bilinear interpolation (antialiased when shrinking,
    on the float 0..255 values, no rounding), then divided by 255 and normalised with the
    checkpoint's per-channel mean and std. Cut points: ``input``, ``block1`` .. ``block5``,
    ``pool``, ``fc`` (logits), in network order (:class:`CifarAdapter`).
    """

    name: ClassVar[str] = "cifar10-vgg"
    task: ClassVar[str] = "classification"
    transient: ClassVar[tuple[str, ...]] = ("_net",)  # the CifarVGG, with its input (mean, std) as ``norm``
    adapter_class: ClassVar[type] = CifarAdapter

    weights: str = "cifar10-vgg"
    search_path: list[str] | None = None

    def __post_init__(self) -> None:
        self.categories = dict(enumerate(CIFAR10_CLASSES))

    # -- weights -----------------------------------------------------------------------------
    def weights_path(self) -> Path:
        """The zoo file (SHA-256 verified) when ``weights`` names a zoo classifier, else found via the search path."""
        from vcm_plugin.weights import find_weights
        from vcm_plugin.zoo import zoo_entries, zoo_file

        entry = zoo_entries().get(self.weights)
        if entry is not None and entry.kind == "classifier":
            return zoo_file(entry)
        return find_weights(self.weights, self.search_path)

    def identity(self) -> dict[str, Any]:
        """Name, weights and the weights file's SHA-256."""
        return {"name": self.name, "params": {"weights": self.weights}, "weights_sha256": self.weights_sha256()}

    def _load(self) -> None:
        net, mean, std = load_cifar_vgg(self.weights_path())
        net.norm = (torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
        self._net = freeze(net)

    # -- inference ---------------------------------------------------------------------------
    def input_tensor(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> (1, 3, 32, 32) normalised float32 tensor."""
        image = check_image(image, self.name)
        self.network()
        x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)  # a copy
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        mean, std = self._net.norm
        return (x / 255.0 - mean) / std

    def scores(self, logits: Any) -> ClassScores:
        """(1, 10) logits -> the softmax probabilities."""
        return ClassScores(torch.softmax(logits.float(), dim=1)[0].numpy())

    def _predict(self, image: np.ndarray) -> ClassScores:
        """Class probabilities of an (H, W, 3) uint8 RGB image."""
        with torch.inference_mode():
            return self.scores(self.network().forward_from(INPUT, self.input_tensor(image)))
