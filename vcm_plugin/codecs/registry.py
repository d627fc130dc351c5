"""The codec registry: built-in codecs plus the ``vcm_plugin.codecs`` entry-point group.

Shaped like torchvision's ``register_model`` / ``get_model`` / ``list_models``: a
decorator registers a :class:`~vcm_plugin.codecs.base.Codec` subclass under its
``name``; third-party packages add codecs by declaring an entry point

    [project.entry-points."vcm_plugin.codecs"]
    mycodec = "my_package.module:MyCodec"

without editing this package. Entry points are loaded lazily, on the first lookup.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

from vcm_plugin.codecs.base import Availability, Codec
from vcm_plugin.errors import CodecUnavailableError, UnknownCodecError, VcmError

ENTRY_POINT_GROUP = "vcm_plugin.codecs"

_REGISTRY: dict[str, type[Codec]] = {}
_BROKEN_PLUGINS: dict[str, str] = {}  # entry-point name -> why it failed to load
_entry_points_loaded = False

C = TypeVar("C", bound=type[Codec])


def register_codec(cls: C) -> C:
    """Class decorator: register a :class:`Codec` subclass under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise TypeError(f"register_codec expects a Codec subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"codec class {cls.__qualname__} has no 'name'")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"codec name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the package
            _BROKEN_PLUGINS[ep.name] = f"plugin {ep.value!r} failed to import: {exc}"
            continue
        if isinstance(obj, type) and issubclass(obj, Codec):
            if getattr(obj, "name", None) not in _REGISTRY:
                register_codec(obj)
        elif ep.name not in _REGISTRY:  # a module that registers on import is fine too
            _BROKEN_PLUGINS[ep.name] = f"plugin {ep.value!r} is not a Codec subclass"


def _ensure_loaded() -> None:
    import vcm_plugin.codecs.builtin  # noqa: F401  (registers the built-in codecs)

    _load_entry_points()


def codec_names() -> list[str]:
    """Names of every registered codec, sorted (available here or not)."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_codec_class(name: str) -> type[Codec]:
    """The registered class for ``name``; the error lists the known names."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in _BROKEN_PLUGINS:
            raise CodecUnavailableError(f"codec {name!r}: {_BROKEN_PLUGINS[name]}") from None
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownCodecError(
            f"unknown codec {name!r}.{hint} Known codecs: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_codec(name: str, **params: Any) -> Codec:
    """Build the codec registered as ``name`` with its parameters."""
    cls = get_codec_class(name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise VcmError(f"codec {name!r}: bad parameters {params}: {exc}") from exc


@dataclass(frozen=True)
class CodecInfo:
    """One row of :func:`available_codecs`."""

    name: str
    availability: Availability
    quality: str
    output_point: str
    origin: str


def available_codecs(include_unavailable: bool = True) -> list[CodecInfo]:
    """Every registered codec with whether it can run here and why not."""
    _ensure_loaded()
    rows = []
    for name in sorted(_REGISTRY):
        cls = _REGISTRY[name]
        try:
            availability = cls().is_available()
        except Exception as exc:  # a codec needing parameters or failing its probe
            availability = Availability(False, f"cannot be built with default parameters: {exc}")
        if availability or include_unavailable:
            rows.append(CodecInfo(name, availability, str(cls.quality_range), cls.output_point, cls.__module__))
    for name, reason in sorted(_BROKEN_PLUGINS.items()):
        if include_unavailable:
            rows.append(CodecInfo(name, Availability(False, reason), "?", "?", "entry point"))
    return rows
