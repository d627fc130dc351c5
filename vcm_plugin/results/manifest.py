"""``manifest.json``: what a run's numbers depend on besides its config, written into every run folder.

Library versions, the ffmpeg build and its codec libraries, the VTM build where a ``vtm``
codec is used, the CPU (model and ISA flags, which decide the SIMD kernels of encoders and
of learned models), the thread settings, the SHA-256 of the config, the task models'
identities (weights SHA-256) and each codec entry's profile (parameters, pixel format,
encoder version). Written by every ``vcm run`` at its start (the latest invocation's
machine), and again at its end with ``units``: how many of its units were already in the
folder's store, copied from the shared unit cache, computed or failed; ``vcm verify`` compares
two runs' manifests with :func:`manifest_differences` (``units`` left out).
Anything that cannot be obtained is written as a sentence saying why, never left out.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vcm_plugin.config import RunConfig
from vcm_plugin.hashing import json_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: distributions whose versions the manifest records (absent ones as "not installed")
PACKAGES = ("vcm-plugin", "numpy", "torch", "torchvision", "compressai", "pycocotools", "detectron2",
            "detectron2-cdo", "pillow", "scipy", "opencv-python-headless", "imageio-ffmpeg", "pytorch-msssim",
            "pydantic")
#: environment variables that set the threads of BLAS / OpenMP libraries
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")


def config_sha256(config: RunConfig) -> str:
    """Hex SHA-256 of the canonical JSON of the validated config, without ``output`` and ``cache`` (where, not
    what)."""
    data = config.model_dump(mode="json")
    data.pop("output", None)
    data.pop("cache", None)
    return json_sha256(data)


def _packages() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cpu() -> dict[str, Any]:
    """Model, ISA flags (sorted) and logical CPUs, from /proc/cpuinfo (Linux) or :mod:`platform`."""
    info: dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError as exc:
        return {**info, "model": platform.processor() or "unknown", "flags": f"not obtained ({exc.strerror or exc})"}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = fields.get("flags") or fields.get("Features")  # x86 / ARM
    return {**info, "model": fields.get("model name") or fields.get("CPU part") or platform.processor() or "unknown",
            "flags": sorted(flags.split()) if flags else "not in /proc/cpuinfo"}


def _threads(config: RunConfig, workers: int | None = None,
             worker_codec_params: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    torch = sys.modules.get("torch")  # not imported here: a run without torch models has no torch threads
    extra: dict[str, Any] = {}
    if workers is not None:
        extra["workers"] = workers
    if worker_codec_params:
        extra["worker_codec_params"] = worker_codec_params
    return {"jobs": config.jobs, "executor": config.executor.kind, **extra,
            "torch_intra_op": torch.get_num_threads() if torch else "torch not loaded by this run",
            "torch_interop": torch.get_num_interop_threads() if torch else "torch not loaded by this run",
            "env": {name: os.environ.get(name) for name in THREAD_ENV}}


def _ffmpeg() -> dict[str, Any]:
    from vcm_plugin.ffmpeg import component_versions, ffmpeg_build, find_ffmpeg

    exe = find_ffmpeg()
    if exe is None:
        return {"path": None, "build": "no ffmpeg found ($VCM_FFMPEG, imageio-ffmpeg, PATH)"}
    return {"path": exe, "build": ffmpeg_build(exe),
            "components": {f"{kind} {name}": version or "not in this ffmpeg"
                           for (kind, name), version in component_versions(exe).items()}}


def _program_version(executable: str) -> str:
    """The first line naming a version in ``EXECUTABLE --version`` (VTM prints its banner), or why none was."""
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not obtained ({type(exc).__name__}: {exc})"
    lines = (done.stdout + done.stderr).decode("utf-8", errors="replace").splitlines()
    return next((line.strip() for line in lines if re.search(r"version", line, re.IGNORECASE)),
                f"not obtained (no version line in `{executable} --version`, exit {done.returncode})")


def codec_profile(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The anchor profile of a codec entry: its parameters (``Codec.params()``: preset, cfg, matrix, range, ...),
    pixel format (chroma format and bit depth) where it has one, and the encoder's version."""
    from vcm_plugin.codecs.registry import get_codec

    try:
        codec = get_codec(name, **params)
        profile: dict[str, Any] = {"codec": name, "params": codec.params(), "version": codec.version()}
    except Exception as exc:  # noqa: BLE001 - the manifest records why, the run reports the codec's own errors
        return {"codec": name, "params": params, "version": f"not obtained ({exc})"}
    pix_fmt = getattr(codec, "pix_fmt", None)
    if pix_fmt:
        profile["pix_fmt"] = pix_fmt
    if name == "vtm":
        try:
            profile["encoder_version"] = _program_version(codec.encoder_path())
        except Exception as exc:  # noqa: BLE001
            profile["encoder_version"] = f"not obtained ({exc})"
    return profile


def build_manifest(config: RunConfig, codecs: dict[str, tuple[str, dict[str, Any]]],
                   tasks: dict[str, dict[str, Any]] | None = None, workers: int | None = None,
                   worker_codec_params: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest of a run of ``config``; ``codecs``: label -> (codec name, parameters as run);
    ``tasks``: label -> the task model's identity (weights SHA-256); ``workers``: the worker processes;
    ``worker_codec_params``: label -> the one-thread parameters its workers add (``Codec.one_thread``)."""
    from vcm_plugin._version import __version__

    return {
        "manifest_version": MANIFEST_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vcm_plugin": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": _packages(),
        "ffmpeg": _ffmpeg(),
        "cpu": _cpu(),
        "threads": _threads(config, workers, worker_codec_params),
        "config_sha256": config_sha256(config),
        "tasks": tasks or {},
        "codecs": {label: codec_profile(name, params) for label, (name, params) in codecs.items()},
    }


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` into ``folder`` atomically (temporary file, then rename)."""
    from vcm_plugin.results.store import StoreError

    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a run folder; ``None`` for a run made before manifests were written."""
    from vcm_plugin.results.store import StoreError

    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreError(f"cannot read {path}: not a JSON object")
    return data


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def manifest_differences(a: dict[str, Any], b: dict[str, Any],
                         ignore: tuple[str, ...] = ("created", "units")) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in ``a``, value in ``b``) of every entry that differs (``None`` where absent); ``ignore``:
    the top-level entries that tell when and how, not with what (``units``: how many units came from where)."""
    fa, fb = flatten({k: v for k, v in a.items() if k not in ignore}), flatten(
        {k: v for k, v in b.items() if k not in ignore})
    return [(key, fa.get(key), fb.get(key)) for key in sorted(fa.keys() | fb.keys()) if fa.get(key) != fb.get(key)]
