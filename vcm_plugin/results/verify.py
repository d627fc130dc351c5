"""Cross-run verification: do two run folders hold the same results, unit by unit? (``vcm verify``)

Units of the two runs' latest grids are matched by their label (codec label, quality, scale,
task label, image id); for each pair the unit keys (everything that determines a unit: codec
version and parameters, task weights, image file), the status, the SHA-256 of the bitstream and
of the decoded output, and the predictions (exactly; where they differ, the largest absolute
difference of each numeric field, e.g. ``scores`` and ``boxes``) are compared. The configs
(``config.yaml``, without ``output`` and ``cache``) and the manifests (``manifest.json``: versions, CPU,
threads) are compared too; they explain a divergence but do not make one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.results.manifest import flatten, manifest_differences, read_manifest
from vcm_plugin.results.store import ResultsStore, StoreError, UnitRow

#: (codec label, quality, scale, task label, image id)
UnitLabel = tuple[str, Any, float, str, str]


@dataclass
class UnitDifference:
    """How one matched unit differs: ``kinds`` (``unit key``, ``status``, ``bitstream``, ``decoded``,
    ``predictions``) and a ``detail`` per kind."""

    label: UnitLabel
    kinds: list[str]
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Verification:
    """The comparison of run ``a`` with run ``b``."""

    a: Path
    b: Path
    common: int = 0
    only_a: list[UnitLabel] = field(default_factory=list)
    only_b: list[UnitLabel] = field(default_factory=list)
    differences: list[UnitDifference] = field(default_factory=list)
    config: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, in a, in b)
    manifest: list[tuple[str, Any, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Every common unit is the same (there is at least one); units in one run only are reported apart."""
        return self.common > 0 and not self.differences

    def counts(self) -> Counter[str]:
        """Diverging units per kind of difference."""
        return Counter(kind for d in self.differences for kind in d.kinds)


def _grid(folder: Path) -> tuple[dict[UnitLabel, UnitRow | None], dict[UnitLabel, str]]:
    from vcm_plugin.results.tables import STORE_NAME

    if not folder.is_dir():
        raise StoreError(f"run folder {folder} does not exist")
    if not (folder / STORE_NAME).is_file():
        raise StoreError(f"{folder} holds no results store ({STORE_NAME}): not a `vcm run` output folder")
    with ResultsStore(folder / STORE_NAME) as store:
        keys: dict[UnitLabel, str] = {}
        for codec, quality, scale, task, image_id, key in store.grid():
            q = None if quality is None else (int(quality) if float(quality).is_integer() else quality)
            keys[(codec, q, float(scale), task, str(image_id))] = key
        rows = {r.key: r for r in store.rows(set(keys.values()))}
    return {label: rows.get(key) for label, key in keys.items()}, keys


def _max_abs_difference(a: Any, b: Any) -> float | None:
    """Largest absolute difference of two equally shaped nested lists of numbers; None when shapes differ."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        worst = 0.0
        for x, y in zip(a, b):
            d = _max_abs_difference(x, y)
            if d is None:
                return None
            worst = max(worst, d)
        return worst
    return 0.0 if a == b else None


def describe_prediction_difference(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """Which fields of two prediction records differ, with the max abs difference of numeric ones (entry by
    entry, in stored order: a reordered detection list shows as a large difference)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return f"{'none' if a is None else 'present'} vs {'none' if b is None else 'present'}"
    parts = []
    for name in sorted(a.keys() | b.keys()):
        x, y = a.get(name), b.get(name)
        if x == y:
            continue
        d = _max_abs_difference(x, y)
        if d is not None:
            parts.append(f"{name} max abs diff {d:.6g}")
        elif isinstance(x, list) and isinstance(y, list):
            parts.append(f"{name}: {len(x)} vs {len(y)} entries")
        else:
            parts.append(f"{name} differs")
    return ", ".join(parts)


def _compare(ra: UnitRow | None, rb: UnitRow | None, ka: str, kb: str, label: UnitLabel) -> UnitDifference | None:
    diff = UnitDifference(label, [])

    def add(kind: str, detail: str) -> None:
        diff.kinds.append(kind)
        diff.details[kind] = detail

    if ka != kb:
        add("unit key", f"{ka[:12]} vs {kb[:12]} (codec version or parameters, task weights or image differ)")
    if ra is None or rb is None:
        add("status", f"{'not stored' if ra is None else ra.status} vs {'not stored' if rb is None else rb.status}")
        return diff
    if ra.status != rb.status:
        add("status", f"{ra.status} vs {rb.status}")
    for kind, attr in (("bitstream", "bitstream_sha256"), ("decoded", "decoded_sha256")):
        x, y = getattr(ra, attr), getattr(rb, attr)
        if x != y:
            add(kind, f"{(x or 'not recorded')[:12]} vs {(y or 'not recorded')[:12]}")
    if ra.bits != rb.bits and "bitstream" not in diff.kinds:
        add("bitstream", f"{ra.bits} vs {rb.bits} bits")
    if ra.predictions != rb.predictions:
        add("predictions", describe_prediction_difference(ra.predictions, rb.predictions))
    return diff if diff.kinds else None


def _config_mapping(folder: Path) -> dict[str, Any]:
    from vcm_plugin.config import read_yaml_mapping

    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    data = read_yaml_mapping(path)
    data.pop("output", None)
    data.pop("cache", None)  # where the shared unit cache is: not what was run
    return data


def verify_runs(a: str | Path, b: str | Path) -> Verification:
    """Compare the run in folder ``a`` with the run in folder ``b`` (see the module docstring)."""
    a, b = Path(a), Path(b)
    rows_a, keys_a = _grid(a)
    rows_b, keys_b = _grid(b)
    result = Verification(a, b)
    result.only_a = [label for label in keys_a if label not in keys_b]
    result.only_b = [label for label in keys_b if label not in keys_a]
    for label in keys_a:
        if label in keys_b:
            result.common += 1
            diff = _compare(rows_a[label], rows_b[label], keys_a[label], keys_b[label], label)
            if diff is not None:
                result.differences.append(diff)
    ca, cb = flatten(_config_mapping(a)), flatten(_config_mapping(b))
    result.config = [(k, ca.get(k), cb.get(k)) for k in sorted(ca.keys() | cb.keys()) if ca.get(k) != cb.get(k)]
    ma, mb = read_manifest(a), read_manifest(b)
    if ma is None or mb is None:
        result.notes += [f"{folder} has no manifest.json (made before manifests were written)"
                         for folder, m in ((a, ma), (b, mb)) if m is None]
    else:
        result.manifest = manifest_differences(ma, mb)
    return result
