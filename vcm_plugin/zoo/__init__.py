"""The project's own model zoo: small checkpoints TRAINED BY THIS PROJECT, shipped in the package.

No CompressAI or torchvision pretrained weights can be had offline, so the package
carries a few small models it trained itself on ``../shared`` training images (never
on evaluation images), with the command that reproduces each. Every entry is one
YAML card ``vcm_plugin/zoo/<name>.yaml`` next to its weights in ``zoo/weights/``::

    name: vcm-hyperprior-q1
    kind: codec                 # or: classifier
    architecture: bmshj2018-hyperprior
    arch_params: {N: 48, M: 96}
    file: vcm-hyperprior-q1.pt
    sha256: ...
    group: vcm-hyperprior       # codecs: the family a quality belongs to
    quality: 1
    trained_here: true
    training: {command: "vcm train codec ...", steps: ..., wall_s: ..., data: ...}

:func:`zoo_file` verifies the SHA-256 before returning a path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from vcm_plugin.errors import VcmError
from vcm_plugin.safe_yaml import safe_load

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = ZOO_DIR / "weights"


class ZooError(VcmError, LookupError):
    """An unknown zoo name or a damaged zoo file (names it and lists what exists)."""


@dataclass(frozen=True)
class ZooEntry:
    """One model card of the project zoo."""

    name: str
    kind: str
    architecture: str
    file: str
    sha256: str
    arch_params: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    quality: int | None = None
    metric: str | None = None
    trained_here: bool = True
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


@cache
def zoo_entries() -> dict[str, ZooEntry]:
    """Every model card, by name."""
    entries: dict[str, ZooEntry] = {}
    for card in sorted(ZOO_DIR.glob("*.yaml")):
        data = safe_load(card.read_text())
        try:
            entry = ZooEntry(**data)
        except TypeError as exc:
            raise ZooError(f"zoo card {card}: {exc}") from exc
        entries[entry.name] = entry
    return entries


def zoo_entry(name: str, kind: str | None = None) -> ZooEntry:
    """The card called ``name`` (of ``kind`` if given); the error lists the valid names."""
    entries = {n: e for n, e in zoo_entries().items() if kind is None or e.kind == kind}
    if name not in entries:
        raise ZooError(f"no {kind or 'model'} {name!r} in the project zoo; it has: {sorted(entries) or 'nothing'}")
    return entries[name]


def zoo_group(group: str) -> dict[int, ZooEntry]:
    """The codec cards of family ``group`` by quality (1 = lowest rate)."""
    members = {e.quality: e for e in zoo_entries().values() if e.group == group and e.quality is not None}
    if not members:
        raise ZooError(f"no codec family {group!r} in the project zoo; it has: {zoo_groups() or 'nothing'}")
    return dict(sorted(members.items()))


def zoo_groups() -> list[str]:
    """Names of the codec families in the zoo."""
    return sorted({e.group for e in zoo_entries().values() if e.group})


def zoo_file(entry: ZooEntry) -> Path:
    """The weights file of ``entry``, its SHA-256 verified."""
    from vcm_plugin.weights import verify_sha256

    if not entry.path.is_file():
        raise ZooError(f"zoo model {entry.name!r}: weights file {entry.path} is missing from the installation")
    verify_sha256(entry.path, entry.sha256)
    return entry.path
