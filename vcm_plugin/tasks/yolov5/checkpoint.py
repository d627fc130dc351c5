"""Read YOLOv5 checkpoints without the YOLOv5 code and without running pickled code.

The official release files (``yolov5n.pt`` ...) are pickled ``models.yolo.Model``
objects. :class:`RestrictedUnpickler` reads the zip archive torch writes
(``<prefix>/data.pkl`` + one raw file per storage) itself: the classes the pickle names
(YOLOv5 modules, the torch.nn modules they hold, ``OrderedDict``, ``set``) become
inert stand-ins that only keep their attribute dicts, tensors are rebuilt from the raw
storage bytes, and EVERY other global is refused before anything is called. The
stand-ins' ``_parameters``/``_buffers``/``_modules`` give the state dict; the model's
``yaml``, ``names`` and ``stride`` attributes give its description.

Plain state-dict files (``torch.save(model.state_dict())``) load with
``weights_only=True`` instead; their description is given or inferred from tensor shapes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vcm_plugin.tasks.base import TaskModelError
from vcm_plugin.weights import NotWeightsOnlyError, load_state_dict_safely

# (module, name) of the classes a YOLOv5 v6.x/v7.0 detection checkpoint pickles; all become inert stand-ins.
_MODULE_CLASSES = {
    ("models.yolo", "Model"), ("models.yolo", "DetectionModel"), ("models.yolo", "Detect"),
    ("models.common", "Conv"), ("models.common", "C3"), ("models.common", "Bottleneck"),
    ("models.common", "SPPF"), ("models.common", "Concat"),
    ("torch.nn.modules.conv", "Conv2d"), ("torch.nn.modules.batchnorm", "BatchNorm2d"),
    ("torch.nn.modules.activation", "SiLU"), ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.upsampling", "Upsample"), ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.container", "ModuleList"),
}
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


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


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, backward_hooks: Any = None) -> torch.Tensor:
    return data


# the other globals allowed, with what they stand for
_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor, ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's ``data.pkl`` allowing only known classes (as inert stand-ins).

    ``read_record(key)`` returns the raw bytes of storage ``key``. Any other global
    raises :class:`TaskModelError` naming ``source`` and the global.
    """

    def __init__(self, file: io.BufferedIOBase, source: str, read_record: Any, byteorder: str = "little") -> None:
        super().__init__(file)
        self._source = source
        self._read_record = read_record
        self._byteorder = byteorder
        self._storages: dict[str, torch.Tensor] = {}
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _MODULE_CLASSES:
            if key not in self._stubs:
                self._stubs[key] = type(name, (_Inert,), {"qualname": f"{module}.{name}"})
            return self._stubs[key]
        if key in _FUNCTIONS:
            return _FUNCTIONS[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise TaskModelError(f"checkpoint {self._source!r} references the global {module}.{name}, which the "
                             "restricted unpickler refuses (only YOLOv5 modules, torch.nn modules and tensors are "
                             "allowed); the file was not loaded and nothing in it was run")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TaskModelError(f"checkpoint {self._source!r}: unsupported persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            raw = self._read_record(key)
            tensor = torch.frombuffer(bytearray(raw), dtype=storage_type.dtype) if raw else \
                torch.empty(0, dtype=storage_type.dtype)
            if self._byteorder != "little" and tensor.element_size() > 1:
                tensor = torch.from_numpy(tensor.numpy().byteswap())
            if tensor.numel() != int(numel):
                raise TaskModelError(f"checkpoint {self._source!r}: storage {key} holds {tensor.numel()} elements, "
                                     f"expected {numel} (truncated file?)")
            self._storages[key] = tensor
        return self._storages[key]


def unpickle_restricted(path: str | os.PathLike[str]) -> Any:
    """Load a torch zip checkpoint through :class:`RestrictedUnpickler` (inert stand-ins, tensors on CPU)."""
    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("data.pkl") and n.count("/") == 1), None)
            if pkl is None:
                raise TaskModelError(f"checkpoint {source!r} is a zip file without data.pkl: not a torch checkpoint")
            prefix = pkl.rsplit("/", 1)[0]
            byteorder = "little"
            if f"{prefix}/byteorder" in names:
                byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip() or "little"

            def read_record(key: str) -> bytes:
                try:
                    return archive.read(f"{prefix}/data/{key}")
                except KeyError as exc:
                    raise TaskModelError(f"checkpoint {source!r} lacks storage record data/{key}") from exc

            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pkl)), source, read_record, byteorder)
            return unpickler.load()
    except TaskModelError:
        raise
    except FileNotFoundError as exc:
        raise TaskModelError(f"checkpoint {source!r} does not exist") from exc
    except zipfile.BadZipFile as exc:
        raise TaskModelError(f"checkpoint {source!r} is not a zip-format torch checkpoint (truncated, or saved by "
                             f"torch < 1.6 / legacy format, which is not supported): {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, zlib.error) as exc:
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
