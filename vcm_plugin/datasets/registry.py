"""The dataset registry: built-ins plus the ``vcm_plugin.datasets`` entry-point group."""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Any, TypeVar

from vcm_plugin.datasets.base import Dataset, DatasetError

ENTRY_POINT_GROUP = "vcm_plugin.datasets"
BUILTIN_MODULES = ("vcm_plugin.datasets.coco",)  # imported so that their @register_dataset runs
_REGISTRY: dict[str, type[Dataset]] = {}
_BROKEN: dict[str, str] = {}
_loaded = False

T = TypeVar("T", bound=type[Dataset])


def register_dataset(cls: T) -> T:
    """Class decorator: register a :class:`Dataset` subclass under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset class {cls.__qualname__} has no 'name'")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"dataset {name!r} is already registered by {existing.__module__}")
    _REGISTRY[name] = cls
    return cls


def _ensure_loaded() -> None:
    global _loaded
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    if _loaded:
        return
    _loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            _BROKEN[ep.name] = f"plugin {ep.value!r} failed to import: {exc}"
            continue
        if isinstance(obj, type) and issubclass(obj, Dataset) and obj.name not in _REGISTRY:
            register_dataset(obj)


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_dataset_class(name: str) -> type[Dataset]:
    """The class registered as ``name``; DatasetError (with a close match) when unknown or broken."""
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN:
        raise DatasetError(f"dataset {name!r}: {_BROKEN[name]}")
    close = difflib.get_close_matches(name, _REGISTRY, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DatasetError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}")


def get_dataset(name: str, **params: Any) -> Dataset:
    """Build the dataset registered as ``name`` with ``params`` (e.g. ``images_dir``, ``annotations``)."""
    cls = get_dataset_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise DatasetError(f"dataset {name!r}: bad parameters {sorted(params)}: {exc}") from exc
