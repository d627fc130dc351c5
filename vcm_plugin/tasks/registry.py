"""The task-model registry: built-ins plus the ``vcm_plugin.tasks`` entry-point group."""

from __future__ import annotations

import difflib
from importlib import metadata
from typing import Any, TypeVar

from vcm_plugin.errors import VcmError
from vcm_plugin.tasks.base import TaskModel, TaskModelError

ENTRY_POINT_GROUP = "vcm_plugin.tasks"
_REGISTRY: dict[str, type[TaskModel]] = {}
_BROKEN: dict[str, str] = {}
_loaded = False

T = TypeVar("T", bound=type[TaskModel])


def register_task_model(cls: T) -> T:
    """Class decorator: register a :class:`TaskModel` subclass under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"task model class {cls.__qualname__} has no 'name'")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"task model {name!r} is already registered by {existing.__module__}")
    _REGISTRY[name] = cls
    return cls


def _ensure_loaded() -> None:
    global _loaded
    import vcm_plugin.tasks.builtin  # noqa: F401

    if _loaded:
        return
    _loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            _BROKEN[ep.name] = f"plugin {ep.value!r} failed to import: {exc}"
            continue
        if isinstance(obj, type) and issubclass(obj, TaskModel) and obj.name not in _REGISTRY:
            register_task_model(obj)


def task_model_names() -> list[str]:
    """Every registered task-model name, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_task_model_class(name: str) -> type[TaskModel]:
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN:
        raise TaskModelError(f"task model {name!r}: {_BROKEN[name]}")
    close = difflib.get_close_matches(name, _REGISTRY, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise VcmError(f"unknown task model {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}")


def get_task_model(name: str, **params: Any) -> TaskModel:
    """Build the task model registered as ``name`` (weights load on first use)."""
    cls = get_task_model_class(name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise VcmError(f"task model {name!r}: bad parameters {params}: {exc}") from exc
