"""Bjontegaard deltas (BD-rate, BD-metric) between two rate-metric curves, with validation.

The definitions, the interpolation methods and every validation rule (at least
:data:`MIN_POINTS` points, finite positive rates, no shared rates, monotone curves or
their monotone upper envelope, overlap >= ``min_overlap`` of the narrower range, default
:data:`DEFAULT_MIN_OVERLAP`) are written out in the README's "BD-rate" section.
Units: ``rate`` any strictly positive unit shared by both curves (bpp here); BD-rate in
percent (negative = the test codec needs fewer bits), BD-metric in the metric's unit
(positive = the test codec is better). The arithmetic is the ``bjontegaard`` package's;
every failure raises :class:`~vcm_plugin.errors.BDRateError` naming the curve, and too
little overlap :class:`BDOverlapError`, whose message starts with the quantity it is about.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from vcm_plugin.errors import BDRateError
from vcm_plugin.evaluation.base import finite_float

__all__ = [
    "DEFAULT_MIN_OVERLAP", "ENVELOPE_OPTION", "METHODS", "MIN_POINTS", "BDOverlapError", "BDResult", "CurvePoint",
    "bd_metric", "bd_metric_report", "bd_rate", "bd_rate_report", "load_curve_csv",
]

#: Interpolation methods accepted by :func:`bd_rate` / :func:`bd_metric`.
METHODS: tuple[str, ...] = ("pchip", "akima", "cubic")
#: Fewest points a curve may have (after the envelope, if used).
MIN_POINTS = 4
#: Default minimum overlap (intersection / narrower range) of the two curves on the integration axis.
DEFAULT_MIN_OVERLAP = 0.5

#: How the non-monotonic error message names the option that enables the envelope (Python spelling);
#: the command line passes its own spelling (``--non-monotonic envelope``) as ``envelope_option``.
ENVELOPE_OPTION = "non_monotonic='envelope'"

_NON_MONOTONIC = ("error", "envelope")


class BDOverlapError(BDRateError):
    """The two curves do not overlap enough on the integration axis (metric for BD-rate, log10(rate) for BD-metric).

    Not a defect of either curve: the other Bjontegaard delta of the same curves may still be computable.
    """


class CurvePoint(NamedTuple):
    """One operating point: its index in the caller's input order, rate (input unit) and metric."""

    index: int
    rate: float
    metric: float

    def __str__(self) -> str:
        return f"point {self.index} (rate={self.rate:g}, metric={self.metric:g})"


@dataclass(frozen=True)
class BDResult:
    """A Bjontegaard delta with the points it was computed from.

    ``value`` is in percent for BD-rate and in the metric's unit for BD-metric. The
    ``*_points_used`` tuples are sorted by rate; ``*_dropped`` lists the points the
    monotone envelope removed (empty unless ``envelope_used``). ``overlap`` is the
    intersection / narrower-range ratio on the integration axis (see the module docstring).
    """

    value: float
    kind: Literal["rate", "metric"]
    method: str
    anchor_points_used: tuple[CurvePoint, ...]
    test_points_used: tuple[CurvePoint, ...]
    anchor_dropped: tuple[CurvePoint, ...]
    test_dropped: tuple[CurvePoint, ...]
    envelope_used: bool
    overlap: float


def _as_vector(values: ArrayLike, what: str, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BDRateError(f"curve '{name}': {what} values are not numbers ({exc})") from exc
    if array.ndim != 1:
        raise BDRateError(f"curve '{name}': {what} must be a 1-D sequence, got shape {array.shape}")
    return array


def _prepare_curve(rate: ArrayLike, metric: ArrayLike, name: str, non_monotonic: str,
                   envelope_option: str = ENVELOPE_OPTION) -> tuple[list[CurvePoint], list[CurvePoint]]:
    """Validate one curve; return (points used sorted by rate, points dropped by the envelope)."""
    rates = _as_vector(rate, "rate", name)
    metrics = _as_vector(metric, "metric", name)
    if rates.size != metrics.size:
        raise BDRateError(f"curve '{name}': {rates.size} rate values but {metrics.size} metric values")
    for i, r in enumerate(rates):
        if not math.isfinite(r) or r <= 0:
            raise BDRateError(f"curve '{name}': rate of point {i} is {r!r}; rates must be finite and > 0")
    for i, m in enumerate(metrics):
        if not math.isfinite(m):
            raise BDRateError(f"curve '{name}': metric of point {i} is {m!r}; metrics must be finite")
    if rates.size < MIN_POINTS:
        raise BDRateError(f"curve '{name}' has {rates.size} points; a Bjontegaard delta needs at least {MIN_POINTS}")

    points = sorted((CurvePoint(i, float(r), float(m)) for i, (r, m) in enumerate(zip(rates, metrics))),
                    key=lambda p: p.rate)
    for prev, cur in zip(points, points[1:]):
        if cur.rate == prev.rate:
            raise BDRateError(f"curve '{name}': points {prev.index} and {cur.index} have the same rate {cur.rate!r}")

    kept: list[CurvePoint] = []
    dropped: list[CurvePoint] = []
    for p in points:
        if kept and p.metric <= max(k.metric for k in kept):
            dropped.append(p)
        else:
            kept.append(p)
    if dropped and non_monotonic == "error":
        best = [max((q for q in points if q.rate < p.rate), key=lambda q: q.metric) for p in dropped]
        details = "; ".join(f"{p} is not above {b}" for p, b in zip(dropped, best))
        raise BDRateError(f"curve '{name}': metric is not strictly increasing with rate: {details}. "
                          f"Pass {envelope_option} to drop such points")
    if len(kept) < MIN_POINTS:
        raise BDRateError(f"curve '{name}': only {len(kept)} points remain on the monotone envelope "
                          f"(dropped points {[p.index for p in dropped]}); at least {MIN_POINTS} are needed")
    return kept, dropped


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Length of the intersection of the ranges of a and b over the narrower range's length."""
    inter = min(a.max(), b.max()) - max(a.min(), b.min())
    narrow = min(a.max() - a.min(), b.max() - b.min())
    return max(inter, 0.0) / narrow


def _bd_report(kind: Literal["rate", "metric"], anchor_rate: ArrayLike, anchor_metric: ArrayLike,
               test_rate: ArrayLike, test_metric: ArrayLike, method: str, non_monotonic: str, min_overlap: float,
               anchor_name: str, test_name: str, envelope_option: str) -> BDResult:
    if method not in METHODS:
        raise BDRateError(f"unknown BD interpolation method '{method}'; choose one of {', '.join(METHODS)}")
    if non_monotonic not in _NON_MONOTONIC:
        raise BDRateError(f"unknown non_monotonic option '{non_monotonic}'; choose 'error' or 'envelope'")
    if not 0.0 <= min_overlap <= 1.0:
        raise BDRateError(f"min_overlap must be within [0, 1], got {min_overlap!r}")

    anchor, anchor_dropped = _prepare_curve(anchor_rate, anchor_metric, anchor_name, non_monotonic, envelope_option)
    test, test_dropped = _prepare_curve(test_rate, test_metric, test_name, non_monotonic, envelope_option)
    ar = np.array([p.rate for p in anchor])
    am = np.array([p.metric for p in anchor])
    tr = np.array([p.rate for p in test])
    tm = np.array([p.metric for p in test])

    if kind == "rate":
        axis, a_axis, t_axis = "metric", am, tm
    else:
        axis, a_axis, t_axis = "log10(rate)", np.log10(ar), np.log10(tr)
    overlap = _overlap(a_axis, t_axis)
    if overlap <= 0.0 or overlap < min_overlap:
        raise BDOverlapError(
            f"BD-{kind} needs the curves to overlap in {axis}: curves '{anchor_name}' "
            f"({axis} {a_axis.min():g}..{a_axis.max():g}) and '{test_name}' "
            f"({axis} {t_axis.min():g}..{t_axis.max():g}) overlap by {overlap:.1%} of the narrower {axis} range; "
            f"at least {min_overlap:.1%} is required (and any overlap at all)")

    import bjontegaard  # imported here: it pulls in matplotlib.pyplot (about 1 s)

    func = bjontegaard.bd_rate if kind == "rate" else bjontegaard.bd_psnr
    value = float(func(ar, am, tr, tm, method=method,
                       require_matching_points=False, min_overlap=0.0))
    if not math.isfinite(value):
        raise BDRateError(f"BD-{kind} of '{test_name}' against '{anchor_name}' ({method}) is not finite: {value!r}")
    return BDResult(value=value, kind=kind, method=method, anchor_points_used=tuple(anchor),
                    test_points_used=tuple(test), anchor_dropped=tuple(anchor_dropped),
                    test_dropped=tuple(test_dropped), envelope_used=non_monotonic == "envelope", overlap=overlap)


def bd_rate_report(anchor_rate: ArrayLike, anchor_metric: ArrayLike, test_rate: ArrayLike, test_metric: ArrayLike,
                   method: str = "pchip", *, non_monotonic: Literal["error", "envelope"] = "error",
                   min_overlap: float = DEFAULT_MIN_OVERLAP, anchor_name: str = "anchor",
                   test_name: str = "test", envelope_option: str = ENVELOPE_OPTION) -> BDResult:
    """BD-rate of the test curve against the anchor, in percent (negative = test saves bits), with its points.

    Rates in any positive unit (identical for both curves), metrics higher-is-better.
    Raises :class:`~vcm_plugin.errors.BDRateError` naming the curve on invalid input,
    :class:`BDOverlapError` when the metric ranges overlap too little. ``envelope_option``
    is how the non-monotonic error names the option that enables the envelope (the
    command line passes ``--non-monotonic envelope``).
    """
    return _bd_report("rate", anchor_rate, anchor_metric, test_rate, test_metric, method, non_monotonic,
                      min_overlap, anchor_name, test_name, envelope_option)


def bd_metric_report(anchor_rate: ArrayLike, anchor_metric: ArrayLike, test_rate: ArrayLike,
                     test_metric: ArrayLike, method: str = "pchip", *,
                     non_monotonic: Literal["error", "envelope"] = "error", min_overlap: float = DEFAULT_MIN_OVERLAP,
                     anchor_name: str = "anchor", test_name: str = "test",
                     envelope_option: str = ENVELOPE_OPTION) -> BDResult:
    """BD-metric (e.g. BD-PSNR in dB, BD-mAP) of test minus anchor at equal rate, with its points.

    Positive = the test curve is better. Raises :class:`~vcm_plugin.errors.BDRateError` on invalid input,
    :class:`BDOverlapError` when the log10(rate) ranges overlap too little; ``envelope_option`` as in
    :func:`bd_rate_report`.
    """
    return _bd_report("metric", anchor_rate, anchor_metric, test_rate, test_metric, method, non_monotonic,
                      min_overlap, anchor_name, test_name, envelope_option)


def bd_rate(anchor_rate: ArrayLike, anchor_metric: ArrayLike, test_rate: ArrayLike, test_metric: ArrayLike,
            method: str = "pchip", *, non_monotonic: Literal["error", "envelope"] = "error",
            min_overlap: float = DEFAULT_MIN_OVERLAP, anchor_name: str = "anchor", test_name: str = "test") -> float:
    """BD-rate in percent (negative = the test codec needs fewer bits); see :func:`bd_rate_report`."""
    return bd_rate_report(anchor_rate, anchor_metric, test_rate, test_metric, method, non_monotonic=non_monotonic,
                          min_overlap=min_overlap, anchor_name=anchor_name, test_name=test_name).value


def bd_metric(anchor_rate: ArrayLike, anchor_metric: ArrayLike, test_rate: ArrayLike, test_metric: ArrayLike,
              method: str = "pchip", *, non_monotonic: Literal["error", "envelope"] = "error",
              min_overlap: float = DEFAULT_MIN_OVERLAP, anchor_name: str = "anchor", test_name: str = "test") -> float:
    """BD-metric in the metric's unit (positive = the test codec is better); see :func:`bd_metric_report`."""
    return bd_metric_report(anchor_rate, anchor_metric, test_rate, test_metric, method, non_monotonic=non_monotonic,
                            min_overlap=min_overlap, anchor_name=anchor_name, test_name=test_name).value


def load_curve_csv(path: str | Path) -> tuple[list[float], list[float]]:
    """Read a curve from a CSV file with header columns ``rate`` and ``metric`` (extra columns ignored).

    Lines whose first non-blank character is ``#`` and blank lines are skipped. Returns
    ``(rates, metrics)`` in file order, units as stored. Raises
    :class:`~vcm_plugin.errors.BDRateError` naming the file (and line) when it cannot be read,
    lacks a column, or holds a value that is not a finite number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BDRateError(f"cannot read curve file {path}: {exc}") from exc
    lines = [(n, [f.strip() for f in next(csv.reader([line]))]) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise BDRateError(f"{path}: no header line with 'rate' and 'metric' columns (file is empty or all comments)")
    (lineno, fields), rows = lines[0], lines[1:]
    header = [f.lower() for f in fields]
    missing = [c for c in ("rate", "metric") if c not in header]
    if missing:
        raise BDRateError(f"{path}:{lineno}: header {fields} lacks column(s) {', '.join(missing)}; "
                          "expected a header with 'rate' and 'metric'")
    if not rows:
        raise BDRateError(f"{path}: header found but no data rows")
    curve: dict[str, list[float]] = {"rate": [], "metric": []}
    for lineno, fields in rows:
        for col, values in curve.items():
            idx = header.index(col)
            if idx >= len(fields) or not fields[idx]:
                raise BDRateError(f"{path}:{lineno}: missing value in column '{col}'")
            values.append(finite_float(fields[idx], f"{path}:{lineno}: column '{col}' value", BDRateError))
    return curve["rate"], curve["metric"]
