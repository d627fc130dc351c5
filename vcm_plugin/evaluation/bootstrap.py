"""The image bootstrap: one resampling of the evaluation images, shared by every interval of the package.

:func:`bootstrap_indices` draws the resamples (the ρ analysis resamples feature vectors with it,
the BD-rate interval resamples images). :func:`resample_points` recomputes every point of a run on
each resample from its per-image data (:class:`PerImage`: rate = total bits / total ORIGINAL pixels,
the task metric re-accumulated by the evaluator's :meth:`~vcm_plugin.evaluation.base.Evaluator.resampler`,
e.g. COCO AP from the per-image matches, top-1 as a per-image mean); :func:`bd_resamples` gives the
BD-rate / BD-metric of two curves on each resample (the same images for both: a paired bootstrap),
NaN where it cannot be computed; :func:`percentile_interval` the interval. :func:`bootstrap_bd` is the
three in one call (the experiments').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vcm_plugin.errors import VcmError
from vcm_plugin.evaluation.base import PerImageMean, Resampler
from vcm_plugin.evaluation.bd import DEFAULT_MIN_OVERLAP, bd_metric_report, bd_rate_report

__all__ = ["CI_LEVEL", "PerImage", "PerImageMean", "bd_resamples", "bootstrap_bd", "bootstrap_indices",
           "percentile_interval", "resample_points"]

#: The confidence level of every bootstrap interval (percentile method).
CI_LEVEL = 0.95


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) sample indices drawn with replacement; the same (n, n_boot, seed) give the same draws,
    so analyses run with the same seed share their resamples (paired bootstrap)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


@dataclass(frozen=True)
class PerImage:
    """A point's per-image data, all in one image order: bits, ORIGINAL pixels, and ``metric``
    (image positions, repeats allowed -> the task metric on them; :class:`PerImageMean` for a mean score)."""

    bits: np.ndarray
    pixels: np.ndarray
    metric: Resampler

    def resampled(self, idx: np.ndarray) -> tuple[float, float]:
        """(bpp, metric) over the images ``idx`` (with repeats)."""
        return float(self.bits[idx].sum() / self.pixels[idx].sum()), float(self.metric(idx))


def resample_points(points: Sequence[PerImage], indices: np.ndarray) -> np.ndarray:
    """(len(points), B, 2) array: (bpp, metric) of every point on each resample (row of ``indices``)."""
    out = np.empty((len(points), len(indices), 2))
    for p, point in enumerate(points):
        bits, pixels = np.asarray(point.bits, dtype=np.float64), np.asarray(point.pixels, dtype=np.float64)
        if len(bits) != indices.shape[1]:
            raise VcmError(f"bootstrap: a point has {len(bits)} images, the resamples {indices.shape[1]}; "
                           "points must share their images")
        out[p, :, 0] = bits[indices].sum(axis=1) / pixels[indices].sum(axis=1)
        out[p, :, 1] = [point.metric(idx) for idx in indices]
    return out


def bd_resamples(anchor: np.ndarray, test: np.ndarray, kind: str = "rate", method: str = "pchip",
                 non_monotonic: str = "envelope", min_overlap: float = DEFAULT_MIN_OVERLAP) -> np.ndarray:
    """BD-rate (percent; ``kind="metric"``: BD-metric in the metric's unit) of ``test`` against ``anchor``
    on each resample, from :func:`resample_points` arrays of the two curves; NaN where it has no value."""
    func = bd_rate_report if kind == "rate" else bd_metric_report
    values = np.full(anchor.shape[1], np.nan)
    for b in range(anchor.shape[1]):
        try:
            values[b] = func(anchor[:, b, 0], anchor[:, b, 1], test[:, b, 0], test[:, b, 1], method=method,
                             non_monotonic=non_monotonic, min_overlap=min_overlap).value  # type: ignore[arg-type]
        except VcmError:
            continue
    return values


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The percentile interval of the finite ``values`` at ``level``; None when fewer than half of
    ``values`` are finite (resamples without a value are never dropped silently: the caller counts them)."""
    finite = values[np.isfinite(values)]
    if len(finite) < max(2, (len(values) + 1) // 2):
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_bd(anchor: Sequence[PerImage], test: Sequence[PerImage], n_boot: int, seed: int,
                 non_monotonic: str = "envelope") -> dict[str, list[float]]:
    """BD-rate (percent) and BD-metric (the metric's unit) of ``test`` against ``anchor`` on each of
    ``n_boot`` image resamples (:func:`bootstrap_indices`, the same images for every point):
    ``{"rate": [...], "metric": [...]}``, leaving out resamples where one cannot be computed."""
    indices = bootstrap_indices(len(anchor[0].bits), n_boot, seed)
    a, t = resample_points(anchor, indices), resample_points(test, indices)
    values = {kind: bd_resamples(a, t, kind, non_monotonic=non_monotonic) for kind in ("rate", "metric")}
    return {kind: [float(v) for v in vals if np.isfinite(v)] for kind, vals in values.items()}
