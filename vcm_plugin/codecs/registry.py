"""The codec registry (a :class:`~vcm_plugin.plugins.PluginRegistry`): built-in codecs plus the
``vcm_plugin.codecs`` entry-point group, e.g. ``mycodec = "my_package.module:MyCodec"``."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from vcm_plugin.codecs.base import Availability, Codec
from vcm_plugin.errors import CodecUnavailableError, UnknownCodecError
from vcm_plugin.plugins import PluginRegistry

ENTRY_POINT_GROUP = "vcm_plugin.codecs"

# built-in codecs (imported on the first lookup): the image codecs, and the task-aware codecs of
# vcm_plugin.splitting (a layer above: found by name here, like a plug-in, so that codecs never import task models)
BUILTIN_MODULES = ("vcm_plugin.codecs.av1", "vcm_plugin.codecs.compressai_codec", "vcm_plugin.codecs.hevc",
                   "vcm_plugin.codecs.jpeg", "vcm_plugin.codecs.jxl", "vcm_plugin.codecs.vtm", "vcm_plugin.codecs.vvc",
                   "vcm_plugin.codecs.webp", "vcm_plugin.splitting.codecs")
CODECS: PluginRegistry[Codec] = PluginRegistry(
    "codec", Codec, ENTRY_POINT_GROUP, BUILTIN_MODULES, UnknownCodecError, CodecUnavailableError)

#: ``get_codec(name, **params)`` builds the codec registered as ``name`` with its parameters (dataclass fields)
register_codec, get_codec_class, codec_names, get_codec = CODECS.functions()


def modules_installed(*modules: str, hint: str = "") -> Availability:
    """Whether every top-level module of ``modules`` is installed here, WITHOUT importing it.

    For availability checks of codecs built on heavy libraries (torch, compressai): importing
    compressai takes seconds (it pulls in torch and torch_geometric), finding it takes
    microseconds (:func:`importlib.util.find_spec`). A module that is installed but fails to
    import is then reported when the codec is first used (an error naming the codec).
    ``hint`` (e.g. ``pip install compressai``) ends the reason when one is missing.
    """
    for module in modules:
        if module in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return Availability(False, f"{module} is not installed" + (f"; {hint}" if hint else ""))
    return Availability(True)


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
    rows = []
    for name in CODECS.names():
        cls = CODECS.classes[name]
        quality_range = cls.quality_range
        try:
            codec = cls()
            quality_range = codec.quality_range  # of the default configuration (an instance may narrow it)
            availability = codec.is_available()
        except Exception as exc:  # a codec needing parameters or failing its probe
            availability = Availability(False, f"cannot be built with default parameters: {exc}")
        if availability or include_unavailable:
            point = cls.output_point if isinstance(cls.output_point, str) else "a cut point (parameter `cut`)"
            rows.append(CodecInfo(name, availability, str(quality_range), point, cls.__module__))
    for name, reason in sorted(CODECS.broken.items()):
        if include_unavailable:
            rows.append(CodecInfo(name, Availability(False, reason), "?", "?", "entry point"))
    return rows
