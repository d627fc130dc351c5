"""``vcm doctor``: what can run here and why not, one :class:`EnvironmentItem` per thing.

ffmpeg and the encoders / decoders the codecs use (:data:`vcm_plugin.ffmpeg.CODEC_COMPONENTS`), every
registered codec's availability, the VTM programs, the optional libraries (detectron2, TFLite through
``ai_edge_litert``, Dask), the weights files on the search path (:mod:`vcm_plugin.weights`), the torch
thread and CPU counts, and the free disk of the working directory and an output folder. A probe that
fails is reported as an item that is not ok, never raised.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Optional libraries: module -> what it enables.
OPTIONAL_MODULES = {"detectron2": "detectron2 task models (MPEG CTC X101-FPN)",
                    "ai_edge_litert": "TFLite task models (MobileNetV2)", "dask": "vcm run on Dask",
                    "compressai": "learned codecs", "torch": "task models, learned codecs"}


@dataclass(frozen=True)
class EnvironmentItem:
    """One line of the report: what, whether it is usable here, and the detail (the reason when not)."""

    item: str
    ok: bool
    detail: str


def _probe(item: str, probe: Callable[[], tuple[bool, str]]) -> EnvironmentItem:
    try:
        ok, detail = probe()
    except Exception as exc:  # a doctor reports, never raises
        ok, detail = False, f"probe failed: {type(exc).__name__}: {exc}"
    return EnvironmentItem(item, ok, detail)


def _probe_many(item: str, probe: Callable[[], list[EnvironmentItem]]) -> list[EnvironmentItem]:
    try:
        return probe()
    except Exception as exc:
        return [EnvironmentItem(item, False, f"probe failed: {type(exc).__name__}: {exc}")]


def _ffmpeg_items() -> list[EnvironmentItem]:
    from vcm_plugin.ffmpeg import CODEC_COMPONENTS, FFMPEG_ENV, component_versions, ffmpeg_build, find_ffmpeg

    executable = find_ffmpeg()
    if executable is None:
        missing = f"no ffmpeg: set {FFMPEG_ENV} or pip install imageio-ffmpeg"
        return [EnvironmentItem("ffmpeg", False, missing),
                *(EnvironmentItem(f"ffmpeg {kind} {name}", False, missing) for kind, name in CODEC_COMPONENTS)]
    items = [EnvironmentItem("ffmpeg", True, f"{executable} ({ffmpeg_build(executable)})")]
    for (kind, name), version in component_versions(executable).items():
        items.append(EnvironmentItem(f"ffmpeg {kind} {name}", version is not None,
                                     f"version {version}" if version else f"not in this ffmpeg ({executable})"))
    return items


def _codec_items() -> list[EnvironmentItem]:
    from vcm_plugin.codecs.registry import available_codecs

    return [EnvironmentItem(f"codec {c.name}", bool(c.availability),
                            f"available ({c.quality}; output {c.output_point}; {c.origin})" if c.availability
                            else c.availability.reason) for c in available_codecs()]


def _vtm() -> tuple[bool, str]:
    from vcm_plugin.codecs.vtm import VTMCodec

    codec = VTMCodec()
    availability = codec.is_available()
    if not availability:
        return False, availability.reason
    return True, f"EncoderApp {codec.encoder_path()}, DecoderApp {codec.decoder_path()}, config {codec.config_path()}"


def _module(name: str) -> tuple[bool, str]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        return False, f"not importable ({type(exc).__name__}: {exc}); needed for {OPTIONAL_MODULES[name]}"
    version = getattr(module, "__version__", "version unknown")
    return True, f"importable, {version} ({OPTIONAL_MODULES[name]})"


def _weights_items() -> list[EnvironmentItem]:
    from vcm_plugin.weights import ENV_VAR, weights_search_path

    items = [EnvironmentItem(f"${ENV_VAR}", bool(os.environ.get(ENV_VAR)),
                             os.environ.get(ENV_VAR) or "not set (weights are looked up in the user cache only)")]
    for folder in weights_search_path():
        files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        detail = (f"{len(files)} files: {', '.join(files)}" if files else "empty folder") if folder.is_dir() \
            else "no such folder"
        items.append(EnvironmentItem(f"weights folder {folder}", bool(files), detail))
    return items


def _threads() -> tuple[bool, str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = f"{usable} usable of {os.cpu_count()} CPUs"
    try:
        import torch
    except Exception as exc:
        return False, f"torch not importable ({type(exc).__name__}); {cpus}"
    return True, f"torch {torch.get_num_threads()} threads; {cpus}"


def _disk(path: Path) -> tuple[bool, str]:
    existing = next(p for p in (path, *path.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    where = "" if existing == path else f" (does not exist yet; measured at {existing})"
    return usage.free > 1 << 30, f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB{where}"


def environment_report(output: str | os.PathLike[str] | None = None) -> list[EnvironmentItem]:
    """Every item ``vcm doctor`` prints, in order; ``output``: the output folder whose free disk is reported
    (besides the working directory's). Free disk under 1 GiB is not ok."""
    items = [*_probe_many("ffmpeg", _ffmpeg_items), *_probe_many("codecs", _codec_items), _probe("VTM", _vtm)]
    items += [_probe(name, lambda name=name: _module(name)) for name in OPTIONAL_MODULES]
    items += _probe_many("weights", _weights_items)
    items.append(_probe("threads", _threads))
    cwd = Path.cwd()
    items.append(_probe(f"disk of the working directory {cwd}", lambda: _disk(cwd)))
    if output is not None:
        out = Path(output).absolute()
        items.append(_probe(f"disk of the output folder {out}", lambda: _disk(out)))
    return items
