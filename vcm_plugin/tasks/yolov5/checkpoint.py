"""Read YOLOv5 checkpoints without the YOLOv5 code and without running pickled code.

The official release files (``yolov5n.pt`` ...) are pickled ``models.yolo.Model``
objects. :func:`unpickle_restricted` loads them with torch's ``weights_only`` unpickler,
allowing only the classes such a checkpoint names (YOLOv5 modules and the torch.nn
modules they hold) as inert stand-ins that keep their attribute dicts; EVERY other
global is refused before anything is called. The stand-ins' ``_parameters`` /
``_buffers`` / ``_modules`` give the state dict; the model's ``yaml``, ``names`` and
``stride`` attributes give its description.

Plain state-dict files (``torch.save(model.state_dict())``) load with
``weights_only=True`` directly; their description is given or inferred from tensor shapes.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vcm_plugin.tasks.base import TaskModelError
from vcm_plugin.weights import NotWeightsOnlyError, load_state_dict_safely

#: the classes a YOLOv5 v6.x/v7.0 detection checkpoint pickles; all become inert stand-ins
MODULE_CLASSES = (
    "models.yolo.Model", "models.yolo.DetectionModel", "models.yolo.Detect", "models.common.Conv", "models.common.C3",
    "models.common.Bottleneck", "models.common.SPPF", "models.common.Concat", "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
)


class _Inert:
    """Stand-in for a pickled class: construction and BUILD only store attributes, nothing runs."""

    qualname: ClassVar[str] = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


_STAND_INS = [(type(name.rsplit(".", 1)[1], (_Inert,), {"qualname": name}), name) for name in MODULE_CLASSES]


def unpickle_restricted(path: str | os.PathLike[str]) -> Any:
    """Load a torch checkpoint with ``weights_only=True``, YOLOv5's module classes as inert stand-ins (tensors
    on CPU); any other global is a :class:`TaskModelError` naming the file and the global."""
    source = str(path)
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise TaskModelError(f"checkpoint {source!r} does not exist") from exc
    except pickle.UnpicklingError as exc:  # torch's message: a paragraph about weights_only, then the global
        lines = [line for line in str(exc).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        raise TaskModelError(f"checkpoint {source!r} cannot be loaded by the restricted unpickler (only YOLOv5 "
                             f"modules, torch.nn modules and tensors are allowed; nothing in it was run): {why}") \
            from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError) as exc:
        raise TaskModelError(f"checkpoint {source!r} cannot be unpickled (damaged?): {type(exc).__name__}: {exc}") \
            from exc


@dataclass
class YoloCheckpoint:
    """What a YOLOv5 checkpoint holds: float32 ``state_dict``, the model ``yaml`` description,
    class ``names`` (contiguous index -> name) and the detection ``stride`` (pixels per cell)."""

    state_dict: dict[str, torch.Tensor]
    yaml: dict[str, Any]
    names: list[str]
    stride: list[int]
    source: str


def module_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of an inert module tree, in torch's order (own params, own buffers, children)."""
    out: dict[str, torch.Tensor] = {}
    attrs = getattr(module, "__dict__", {})
    for name, value in (attrs.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for name, value in (attrs.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in skip:
            out[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def to_float32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors to float32 (release checkpoints are fp16); integer buffers unchanged."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def load_yolov5_checkpoint(path: str | os.PathLike[str], description: dict[str, Any] | None = None) -> YoloCheckpoint:
    """Read a YOLOv5 checkpoint: a pickled release model, or a plain state dict (+ ``description``).

    For a state dict without ``description`` the variant (n/s/m/l/x, v6.x layout) and
    class count are inferred from tensor shapes, with COCO class names when it has 80.
    """
    from vcm_plugin.tasks.coco_names import COCO80_NAMES
    from vcm_plugin.tasks.yolov5.network import infer_description

    source = str(path)
    try:
        state_dict = load_state_dict_safely(path)
    except NotWeightsOnlyError:
        return _from_pickled_model(path)
    desc = dict(description) if description is not None else infer_description(state_dict, source)
    nc = int(desc.get("nc", 80))
    names = list(desc.get("names") or (COCO80_NAMES if nc == 80 else [str(i) for i in range(nc)]))
    return YoloCheckpoint(to_float32(state_dict), desc, names, [8, 16, 32], source)


def _from_pickled_model(path: str | os.PathLike[str]) -> YoloCheckpoint:
    source = str(path)
    ckpt = unpickle_restricted(path)
    if not isinstance(ckpt, dict):
        raise TaskModelError(f"checkpoint {source!r} holds a {type(ckpt).__name__}, not a YOLOv5 checkpoint dict")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, _Inert):
        raise TaskModelError(f"checkpoint {source!r} has no 'model' (keys: {sorted(map(str, ckpt))})")
    attrs = model.__dict__
    yaml = attrs.get("yaml")
    if not isinstance(yaml, dict) or "backbone" not in yaml or "head" not in yaml:
        raise TaskModelError(f"checkpoint {source!r}: the model has no yaml description with backbone and head")
    names = attrs.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list | tuple):
        raise TaskModelError(f"checkpoint {source!r}: the model has no class names")
    stride = attrs.get("stride")
    stride_list = [int(s) for s in (stride.tolist() if isinstance(stride, torch.Tensor) else stride or [8, 16, 32])]
    state_dict = module_state_dict(model)
    if not state_dict:
        raise TaskModelError(f"checkpoint {source!r}: no tensors found in the model")
    return YoloCheckpoint(to_float32(state_dict), dict(yaml), [str(n) for n in names], stride_list, source)
