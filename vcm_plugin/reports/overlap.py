"""Qualities that would make two RD curves overlap enough for a BD-rate.

When a BD-rate is n/a because the curves' metric ranges overlap too little
(:class:`~vcm_plugin.evaluation.bd.BDOverlapError`), :func:`propose` names the qualities to add to
the test codec (else to the anchor) so that its metric range covers the other curve's points outside
it: each target metric is turned into a rate on the codec's own curve (log10 bpp against the metric,
monotone envelope, linear inside and extrapolated from the end segments outside), that rate into a
quality on the codec's measured bpp-quality relation (linear in log10 bpp, extrapolated likewise),
rounded to a valid quality of the codec's ``quality_range`` (clamped to it); qualities already
measured are not proposed again. ``vcm run --fill-overlap`` runs them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vcm_plugin.results import Point


def _interp(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """Linear interpolation of increasing ``x`` -> ``y`` at ``at``, extrapolated from the end segments."""
    if at <= x[0]:
        return float(y[0] + (at - x[0]) * (y[1] - y[0]) / (x[1] - x[0]))
    if at >= x[-1]:
        return float(y[-1] + (at - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2]))
    return float(np.interp(at, x, y))


def qualities_for(points: list[Point], targets: list[float], quality_range: Any) -> list[float | int]:
    """New qualities of the codec of ``points`` (one curve, complete) estimated to reach metric ``targets``."""
    pts = sorted((p for p in points if p.bpp and math.isfinite(p.primary) and p.quality is not None),
                 key=lambda p: p.bpp)
    envelope: list[Point] = []
    for p in pts:
        if not envelope or p.primary > envelope[-1].primary:
            envelope.append(p)
    if len(envelope) < 2:
        return []
    metric = np.array([p.primary for p in envelope])
    log_rate = np.log10([p.bpp for p in envelope])
    all_rate = np.log10([p.bpp for p in pts])
    quality = np.array([float(p.quality) for p in pts])
    keep = np.concatenate([[True], np.diff(all_rate) > 0])
    measured = {float(p.quality) for p in points if p.quality is not None}
    out: list[float | int] = []
    for target in targets:
        q = _interp(all_rate[keep], quality[keep], _interp(metric, log_rate, target))
        if not math.isfinite(q):
            continue
        q = min(max(q, float(quality_range.minimum)), float(quality_range.maximum))
        q = int(round(q)) if quality_range.integer else round(q, 3)
        if float(q) not in measured and q not in out:
            out.append(q)
    return sorted(out)


def _outside(points: list[Point], metrics: list[float]) -> list[float]:
    """The ``metrics`` outside the metric range of ``points``."""
    lo, hi = min(p.primary for p in points), max(p.primary for p in points)
    return [m for m in metrics if m < lo or m > hi]


def propose(config: Any, anchor_label: str, anchor: list[Point] | None, test_label: str,
            test: list[Point], anchor_curve: tuple[list[float], list[float]]) -> tuple[str, list[float | int]] | None:
    """(codec label, qualities to add) for a BD-rate without enough overlap, or None when nothing helps.

    ``anchor``: the anchor's points (None for a published anchor, whose ``anchor_curve`` (rates,
    metrics) cannot be extended).
    """
    from vcm_plugin.codecs.registry import get_codec

    def quality_range(label: str) -> Any:
        name, params = config.codec_params(label)
        return get_codec(name, **params).quality_range

    if not test:
        return None
    qualities = qualities_for(test, _outside(test, list(anchor_curve[1])), quality_range(test_label))
    if qualities:
        return test_label, qualities
    if anchor:
        qualities = qualities_for(anchor, _outside(anchor, [p.primary for p in test]), quality_range(anchor_label))
        if qualities:
            return anchor_label, qualities
    return None
