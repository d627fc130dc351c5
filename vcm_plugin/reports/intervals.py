"""The BD-rate intervals of the reports: a paired image bootstrap of every point of a run.

:func:`draw_points` recomputes each complete point (bpp = total bits / total ORIGINAL pixels, the
primary metric re-accumulated by its evaluator's resampler) on ``report.bootstrap`` resamples of the
run's images (seed ``report.seed``), the same resamples for every point, so a codec and its anchor
are compared on the same images; :func:`bd_interval` gives a BD-rate row its 95 % percentile
interval and counts the resamples without a BD-rate; :func:`metric_bands` the per-point bands of
the RD plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from vcm_plugin.evaluation.bootstrap import CI_LEVEL, bootstrap_indices, percentile_interval, resample_points
from vcm_plugin.results import Point, PointLabel

log = logging.getLogger(__name__)

METHOD = "percentile"


@dataclass
class Draws:
    """(bpp, metric) of each point label on each of ``n_boot`` resamples of ``n_images`` images
    (``by_label[label]``: (n_boot, 2)); ``reason``: why there are none (``by_label`` empty)."""

    n_boot: int
    seed: int
    n_images: int = 0
    by_label: dict[PointLabel, np.ndarray] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0


def draw_points(points: list[Point], n_boot: int, seed: int, quiet: bool = True) -> Draws:
    """The bootstrap of every point with per-image data (see the module docstring)."""
    draws = Draws(n_boot, seed)
    usable = [p for p in points if p.per_image is not None]
    if n_boot <= 0:
        draws.reason = "bootstrap off (report.bootstrap: 0)"
        return draws
    if not usable:
        draws.reason = "no point has per-image data to resample"
        return draws
    draws.n_images = len(usable[0].per_image.bits)
    if draws.n_images < 2:
        draws.reason = f"interval undefined with {draws.n_images} image (the bootstrap needs at least 2)"
        return draws
    started = time.perf_counter()
    indices = bootstrap_indices(draws.n_images, n_boot, seed)
    for p in tqdm(usable, desc="bootstrap", unit="point", disable=quiet):
        draws.by_label[p.label] = resample_points([p.per_image], indices)[0]
    draws.seconds = time.perf_counter() - started
    log.info("bootstrap: %d points x %d resamples of %d images in %.1f s", len(usable), n_boot, draws.n_images,
             draws.seconds)
    return draws


@dataclass
class Interval:
    """A BD-rate's bootstrap interval (percent; None when too few resamples had a value) and its counts."""

    low: float | None
    high: float | None
    n_boot: int
    failed: int
    note: str = ""

    @property
    def significant(self) -> bool | None:
        """Whether the codec differs from its anchor at 95 % (the interval excludes 0); None without one."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0


def bd_interval(draws: Draws | None, anchor: list[Point] | None, test: list[Point], method: str,
                non_monotonic: str) -> Interval | None:
    """The interval of the BD-rate of ``test`` against ``anchor`` (None: no bootstrap at all); a note says
    why there is none (published anchor, missing per-image data, too many resamples without a BD-rate)."""
    from vcm_plugin.evaluation.bootstrap import bd_resamples

    if draws is None or draws.n_boot <= 0:
        return None
    if draws.reason:
        return Interval(None, None, draws.n_boot, 0, f"no interval: {draws.reason}")
    if anchor is None:
        return Interval(None, None, draws.n_boot, 0, "no interval: a published anchor has no per-image data")
    missing = [p for p in anchor + test if p.label not in draws.by_label]
    if missing:
        return Interval(None, None, draws.n_boot, 0, f"no interval: no per-image data for {missing[0].codec} "
                                                     f"q {missing[0].quality}")
    values = bd_resamples(np.stack([draws.by_label[p.label] for p in anchor]),
                          np.stack([draws.by_label[p.label] for p in test]), "rate", method, non_monotonic)
    failed = int(np.count_nonzero(~np.isfinite(values)))
    ci = percentile_interval(values, CI_LEVEL)
    note = f"{failed} of {draws.n_boot} resamples had no BD-rate" if failed else ""
    if ci is None:
        note += " (too few for an interval)"
    return Interval(*(ci or (None, None)), draws.n_boot, failed, note)


def metric_bands(draws: Draws | None, points: list[Point]) -> dict[PointLabel, tuple[float, float]]:
    """Point label -> the 95 % percentile band of its metric over the resamples."""
    if draws is None:
        return {}
    lo, hi = (1 - CI_LEVEL) / 2 * 100, (1 + CI_LEVEL) / 2 * 100
    return {p.label: (float(np.nanpercentile(d[:, 1], lo)), float(np.nanpercentile(d[:, 1], hi)))
            for p in points if (d := draws.by_label.get(p.label)) is not None and np.isfinite(d[:, 1]).any()}
