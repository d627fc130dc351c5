"""Anchors: how each anchor is produced (codec entries in ``anchors/*.yaml``) and
published anchor results (``anchors/published/*.yaml``) for BD-rate without re-encoding.

An anchor definition is a codec entry of a run config (``codec``, ``qualities``,
``scales`` and the codec's parameters) with a ``description``; a config uses it as
``codecs: {vvc: {include: anchors/vvc_intra_vcm.yaml}}`` (keys given beside
``include`` override the file's).

A published anchor holds rate-metric points copied from a publication, with the
source, the task model and dataset it was evaluated with, and caveats. A report
computes BD-rate against it like against a locally produced anchor, and says in the
table when its task model differs from the run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.errors import VcmError
from vcm_plugin.safe_yaml import safe_load


class AnchorError(VcmError, ValueError):
    """An anchor file is missing or malformed (names the file and the key)."""


@dataclass(frozen=True)
class PublishedAnchor:
    """Published rate-metric points; ``metric`` values in the units this package reports (percent)."""

    name: str
    task: str
    metric: str
    dataset: str
    task_model: str
    scale: float
    rate: tuple[float, ...]  # bpp
    values: tuple[float, ...]
    qualities: tuple[Any, ...] = ()
    source: str = ""
    caveats: tuple[str, ...] = field(default_factory=tuple)
    path: str = ""


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = safe_load(Path(path).read_text())
    except OSError as exc:
        raise AnchorError(f"cannot read anchor file {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # yaml errors
        raise AnchorError(f"{path}: not valid safe YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise AnchorError(f"{path}: the top level must be a mapping")
    return data


def resolve_anchor_path(path: str, config_dir: Path | None = None) -> Path:
    """``path`` as given (relative to the working directory), else relative to the config's folder."""
    candidates = [Path(path)]
    if config_dir is not None and not Path(path).is_absolute():
        candidates += [config_dir / path, config_dir.parent / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AnchorError(f"anchor file {path} not found (looked in: {', '.join(str(c) for c in candidates)})")


def load_anchor_definition(path: str | Path) -> dict[str, Any]:
    """A codec entry from an anchor definition file (``description`` dropped)."""
    data = _read_yaml(path)
    data.pop("description", None)
    if "qualities" not in data or "codec" not in data:
        raise AnchorError(f"{path}: an anchor definition needs 'codec' and 'qualities'")
    return data


def load_published_anchor(path: str | Path) -> PublishedAnchor:
    """Read a published anchor file; fractions are converted to percent when ``unit: fraction``."""
    data = _read_yaml(path)
    required = ("name", "task", "metric", "dataset", "task_model", "points")
    missing = [k for k in required if k not in data]
    if missing:
        raise AnchorError(f"{path}: missing key(s) {missing}")
    factor = {"percent": 1.0, "fraction": 100.0}.get(data.get("unit", "percent"))
    if factor is None:
        raise AnchorError(f"{path}: unit must be 'percent' or 'fraction', got {data.get('unit')!r}")
    points = data["points"]
    try:
        rate = tuple(float(p["bpp"]) for p in points)
        values = tuple(factor * float(p["metric"]) for p in points)
        qualities = tuple(p.get("quality") for p in points)
    except (TypeError, KeyError, ValueError) as exc:
        raise AnchorError(f"{path}: each point needs numeric 'bpp' and 'metric' ({exc})") from exc
    return PublishedAnchor(
        name=str(data["name"]), task=str(data["task"]), metric=str(data["metric"]), dataset=str(data["dataset"]),
        task_model=str(data["task_model"]), scale=float(data.get("scale", 1.0)), rate=rate, values=values,
        qualities=qualities, source=str(data.get("source", "")),
        caveats=tuple(str(c) for c in data.get("caveats", [])), path=str(path),
    )
