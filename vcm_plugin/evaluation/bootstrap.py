"""The image bootstrap: one resampling of the evaluation images, shared by every interval of the package.

:func:`bootstrap_indices` draws the resamples (the ρ analysis resamples feature vectors with it,
the BD-rate interval resamples images); :func:`bootstrap_bd` recomputes every point of two
curves on the same resampled images (rate = total bits / total ORIGINAL pixels, metric = mean of
per-image scores, e.g. top-1 in percent) and returns the BD-rate / BD-metric of each resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vcm_plugin.errors import VcmError
from vcm_plugin.evaluation.bd import bd_metric_report, bd_rate_report

__all__ = ["PerImage", "bootstrap_bd", "bootstrap_indices"]


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) sample indices drawn with replacement; the same (n, n_boot, seed) give the same draws,
    so analyses run with the same seed share their resamples (paired bootstrap)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


@dataclass(frozen=True)
class PerImage:
    """A point's per-image numbers, all in one image order: bits, ORIGINAL pixels, task scores."""

    bits: np.ndarray
    pixels: np.ndarray
    scores: np.ndarray

    def resampled(self, idx: np.ndarray) -> tuple[float, float]:
        """(bpp, mean score) over the images ``idx`` (with repeats)."""
        return float(self.bits[idx].sum() / self.pixels[idx].sum()), float(self.scores[idx].mean())


def bootstrap_bd(anchor: Sequence[PerImage], test: Sequence[PerImage], n_boot: int, seed: int,
                 non_monotonic: str = "envelope") -> dict[str, list[float]]:
    """BD-rate (percent) and BD-metric (the score's unit) of ``test`` against ``anchor`` on each of
    ``n_boot`` image resamples (:func:`bootstrap_indices`, the same images for every point):
    ``{"rate": [...], "metric": [...]}``, leaving out resamples where one cannot be computed."""
    values: dict[str, list[float]] = {"rate": [], "metric": []}
    for idx in bootstrap_indices(len(anchor[0].bits), n_boot, seed):
        a = [p.resampled(idx) for p in anchor]
        t = [p.resampled(idx) for p in test]
        curves = ([r for r, _ in a], [m for _, m in a], [r for r, _ in t], [m for _, m in t])
        for kind, func in (("rate", bd_rate_report), ("metric", bd_metric_report)):
            try:
                values[kind].append(func(*curves, non_monotonic=non_monotonic).value)
            except VcmError:
                continue
    return values
