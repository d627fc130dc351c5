"""The evaluator contract (detectron2's ``DatasetEvaluator`` shape), streaming.

An evaluator is fed one image at a time: :meth:`Evaluator.process` converts that image's
predictions to the compact form the metric needs and keeps only that, so memory grows
with the number of predictions, not with image data. :meth:`Evaluator.evaluate` computes
the metrics over every image processed since the last :meth:`Evaluator.reset`, and
:meth:`Evaluator.resampler` then recomputes the primary metric on any resample of those images
(with repeats) from what ``evaluate`` kept per image, without evaluating again (the bootstrap).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from vcm_plugin.errors import VcmError


class EvaluationError(VcmError, ValueError):
    """Predictions cannot be scored (wrong kind, unknown label or image id); names the image."""


def finite_float(text: str, what: str, error: type[Exception]) -> float:
    """``float(text)``; ``error("<what> '<text>' is not a number")`` (or ``is not finite``) otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise error(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise error(f"{what} {text!r} is not finite")
    return value


#: A primary metric recomputed on a resample: image positions (in processing order, with repeats) -> value.
Resampler = Callable[[np.ndarray], float]


class PerImageMean:
    """The mean of per-image ``values`` (in processing order) over a resample of image positions."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64)

    def __call__(self, idx: np.ndarray) -> float:
        return float(self.values[idx].mean())


class Evaluator(ABC):
    """reset / process / evaluate: scores a task model's predictions on a dataset.

    ``primary_metric`` names the key of :meth:`evaluate` that reports plot and compute
    BD-rate on (e.g. ``bbox/AP`` for COCO detection, ``oid/mAP50`` for Open Images).
    """

    primary_metric: str = ""

    @abstractmethod
    def reset(self) -> None:
        """Forget every processed image (start a new evaluation)."""

    @abstractmethod
    def process(self, sample: Any, predictions: Any) -> None:
        """Record the predictions for one image (a :class:`~vcm_plugin.datasets.base.Sample`)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics over every image processed since :meth:`reset`, as ``{"group/metric": value}``."""

    @staticmethod
    def _check_new(image_id: Any, processed: Any, predictions: Any, kind: type, what: str) -> None:
        """EvaluationError naming the image when it is in ``processed`` or ``predictions`` is not a ``kind``."""
        if image_id in processed:
            raise EvaluationError(f"image id {image_id} was already processed (call reset() to start over)")
        if not isinstance(predictions, kind):
            raise EvaluationError(f"image id {image_id}: {what} needs {kind.__name__}, "
                                  f"got {type(predictions).__name__}")

    def per_image(self) -> dict[Any, dict[str, float]]:
        """Image id -> per-image scores whose mean over images is the metric of that name (e.g. top-1);
        empty for metrics that do not decompose by image (AP)."""
        return {}

    def resampler(self) -> Resampler:
        """After :meth:`evaluate`: image positions (indices into the processed images in processing order,
        repeats allowed) -> the primary metric over that resample, in :meth:`evaluate`'s unit, re-accumulated
        from the per-image data ``evaluate`` kept (nothing is evaluated again).

        Default: the mean of :meth:`per_image`'s primary metric; evaluators whose metric does not decompose
        by image (AP) override it. Raises :class:`EvaluationError` when nothing can be resampled.
        """
        scores = self.per_image()
        if not scores or any(self.primary_metric not in s for s in scores.values()):
            raise EvaluationError(f"{type(self).__name__} cannot resample {self.primary_metric or 'its metric'} "
                                  "by image (call evaluate() first)")
        return PerImageMean(np.array([s[self.primary_metric] for s in scores.values()]))
