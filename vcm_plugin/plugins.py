"""One registry mechanism for codecs, task models and datasets.

Shaped like torchvision's ``register_model`` / ``get_model`` / ``list_models`` and
timm's registry: a class decorator registers a class under its ``name``; built-in
modules are imported on first lookup; third-party packages add classes through an
entry-point group without editing this package. A plugin that fails to import is
remembered with its error instead of breaking the package.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from vcm_plugin.errors import VcmError
from vcm_plugin.params import validate_params

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    """Classes of one kind (``base``) by name, from built-in modules and an entry-point group."""

    def __init__(self, kind: str, base: type, group: str, builtin_modules: tuple[str, ...],
                 unknown_error: type[Exception], broken_error: type[Exception],
                 params_error: type[Exception] = VcmError) -> None:
        self.kind, self.base, self.group = kind, base, group
        self.builtin_modules = builtin_modules
        self.unknown_error, self.broken_error, self.params_error = unknown_error, broken_error, params_error
        self.classes: dict[str, type[T]] = {}
        self.broken: dict[str, str] = {}  # entry-point name -> why it could not be loaded
        self._entry_points_loaded = False

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.name``."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"register expects a {self.base.__name__} subclass, got {cls!r}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} class {cls.__qualname__} has no 'name'")
        existing = self.classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"{self.kind} name {name!r} is already registered by "
                             f"{existing.__module__}.{existing.__qualname__}")
        self.classes[name] = cls
        return cls

    def load(self) -> None:
        """Import the built-in modules, then (once) every entry point of the group."""
        for module in self.builtin_modules:
            importlib.import_module(module)
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the package
                self.broken[ep.name] = f"plugin {ep.value!r} failed to import: {exc}"
                continue
            if isinstance(obj, type) and issubclass(obj, self.base):
                if getattr(obj, "name", None) not in self.classes:
                    self.register(obj)
            elif ep.name not in self.classes:  # a module that registers on import is fine too
                self.broken[ep.name] = f"plugin {ep.value!r} is not a {self.base.__name__} subclass"

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.load()
        return sorted(self.classes)

    def get_class(self, name: str) -> type[T]:
        """The class registered as ``name``; the error suggests the nearest name and lists all."""
        self.load()
        if name in self.classes:
            return self.classes[name]
        if name in self.broken:
            raise self.broken_error(f"{self.kind} {name!r}: {self.broken[name]}")
        close = difflib.get_close_matches(name, self.classes, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise self.unknown_error(f"unknown {self.kind} {name!r}.{hint} "
                                 f"Known {self.kind}s: {', '.join(sorted(self.classes))}")

    def create(self, name: str, **params: Any) -> T:
        """Build the class registered as ``name`` with ``params``; bad parameters name it."""
        cls = self.get_class(name)
        # typed parameters: a flag given as "no" or 1, a string for a number, fail here naming the parameter
        validate_params(cls, params, f"{self.kind} {name!r}", self.params_error)
        try:
            return cls(**params)
        except VcmError:
            raise
        except (TypeError, ValueError) as exc:
            raise self.params_error(f"{self.kind} {name!r}: bad parameters {params}: {exc}") from exc

    def functions(self) -> tuple[Callable[[type[T]], type[T]], Callable[[str], type[T]], Callable[[], list[str]],
                                 Callable[..., T]]:
        """:meth:`register`, :meth:`get_class`, :meth:`names`, :meth:`create`: what a registry module exports
        under its own names (``register_codec``, ``get_codec_class``, ``codec_names``, ``get_codec``)."""
        return self.register, self.get_class, self.names, self.create
