"""Bjontegaard deltas (BD-rate, BD-metric) between two rate-metric curves, with validation.

Definitions
-----------
A *curve* is a set of at least 4 operating points ``(rate, metric)``. ``rate`` is any
strictly positive unit (bits per pixel for vcm-plugin results, kbps, bytes...), but it
must be the same unit for both curves; ``metric`` is a quality or task score where higher
is better (PSNR in dB, mAP in [0, 1] or %, top-1 accuracy...). Points may be given in any
order: they are sorted by rate before anything else.

* **BD-rate** (:func:`bd_rate`, in percent): the average rate difference of the test curve
  against the anchor at equal metric. ``log10(rate)`` is interpolated as a function of the
  metric on each curve, the two interpolants are integrated over the metric interval both
  curves cover, and the mean log-rate difference ``d`` becomes ``(10**d - 1) * 100``.
  **Negative = the test codec needs fewer bits than the anchor for the same metric**;
  -50 % means half the rate, +100 % twice the rate.
* **BD-metric** (:func:`bd_metric`, in the metric's own unit: dB for BD-PSNR, mAP points
  for BD-mAP): the average metric difference test - anchor at equal rate, integrated over
  the ``log10(rate)`` interval both curves cover. **Positive = the test codec is better.**

Interpolation methods (the arithmetic is done by the ``bjontegaard`` package):

* ``"pchip"`` (default): piecewise cubic Hermite interpolation; reproduces the JVET/MPEG
  common-test-conditions Excel sheet (JVET-T2010).
* ``"akima"``: Akima spline interpolation.
* ``"cubic"``: the original VCEG-M33 method, one cubic polynomial least-squares fit per
  curve (``bjontegaard``'s ``"cubic"``, a ``numpy.polyfit`` of degree 3).

Validation (every failure raises :class:`~vcm_plugin.errors.BDRateError` naming the curve)
-------------------------------------------------------------------------------------------
* rate and metric arrays of one curve must be 1-D and of equal length;
* every rate must be finite and > 0, every metric finite (the message gives the point's
  index in the caller's order and its value);
* no two points of a curve may share a rate;
* at least :data:`MIN_POINTS` (4) points per curve;
* the metric must be strictly increasing with rate. With ``non_monotonic="error"`` (the
  default) the offending points are listed; with ``non_monotonic="envelope"`` the curve is
  replaced by its **monotone upper envelope**: sorted by rate, a point is kept only when its
  metric is strictly higher than the metric of every lower-rate point, i.e. points that
  are dominated (as good or better quality available for fewer bits) are dropped. Noisy
  task-metric curves (mAP at high rate) are where this matters. At least 4 points must
  remain. The dropped points are listed in the :class:`BDResult` of
  :func:`bd_rate_report` / :func:`bd_metric_report`. (MPEG FCM's CTTC scripts instead
  refit non-monotonic curves with a monotone cubic, m63692; the envelope is the simpler,
  data-preserving rule: it never changes a measured value, it only omits points.)
* the curves must overlap on the integration axis (metric for BD-rate, ``log10(rate)`` for
  BD-metric). The *overlap* is the length of the intersection of the two ranges divided by
  the length of the **narrower** of the two ranges, so 1.0 means the narrower curve lies
  entirely within the other one. It must be >= ``min_overlap``, default
  :data:`DEFAULT_MIN_OVERLAP` = 0.5 (at least half of the narrower curve is compared);
  curves that do not overlap at all are always refused, whatever ``min_overlap`` is.
  This failure raises :class:`BDOverlapError` (a :class:`~vcm_plugin.errors.BDRateError`)
  whose message starts with the quantity it is about: "BD-rate needs the curves to
  overlap in metric" or "BD-metric needs the curves to overlap in log10(rate)". BD-rate and
  BD-metric of the same two curves are checked independently: typical JPEG-vs-VVC PSNR
  curves overlap fully in metric but only partly in rate, so BD-rate may be computed
  while BD-metric is refused (or the reverse).
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
