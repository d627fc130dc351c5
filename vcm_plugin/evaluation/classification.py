"""Top-1 / top-5 accuracy of single-label classification (:class:`ClassificationEvaluator`).

Streaming: :meth:`~ClassificationEvaluator.process` keeps only the RANK of the true class
among the image's scores (0 = best), so memory is one integer per image.

Ties are broken deterministically by class index: among classes with EQUAL scores the
lower index ranks first, i.e. the order of a stable descending sort
(``np.argsort(-probs, kind="stable")``). The true class's rank is the number of classes
scoring strictly higher plus the number of lower-index classes scoring the same. This
matters for quantized models, whose outputs often tie.

Metrics are in PERCENT: ``"top1"`` (rank 0), ``"top5"`` (rank < 5); ``"images"`` is the
number of images processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vcm_plugin.evaluation.base import EvaluationError, Evaluator
from vcm_plugin.tasks.predictions import ClassScores


def true_class_rank(probs: np.ndarray, true_class: int) -> int:
    """0-based rank of ``true_class`` in ``probs`` (descending; ties: lower class index first)."""
    score = probs[true_class]
    return int(np.count_nonzero(probs > score) + np.count_nonzero(probs[:true_class] == score))


def _true_class(sample: Any) -> int:
    image_id = getattr(sample, "image_id", sample)
    annotations = getattr(sample, "annotations", None)
    if not isinstance(annotations, list) or len(annotations) != 1 or not isinstance(annotations[0], dict) \
            or "class_index" not in annotations[0]:
        raise EvaluationError(f"image id {image_id}: classification needs exactly one "
                              f"annotation {{'class_index': int}}, got {annotations!r}")
    value = annotations[0]["class_index"]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise EvaluationError(f"image id {image_id}: class_index {value!r} is not an integer")
    return int(value)


class ClassificationEvaluator(Evaluator):
    """Top-1 / top-5 accuracy (percent) of :class:`ClassScores` over ``num_classes`` classes.

    ``class_names``: optional, ``num_classes`` names (index order), for reports. Samples
    carry their label as ``annotations == [{"class_index": int}]``.
    """

    primary_metric = "top1"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise EvaluationError(f"ClassificationEvaluator: num_classes must be a positive integer, "
                                  f"got {num_classes!r}")
        self.num_classes = int(num_classes)
        if class_names is not None and len(class_names) != self.num_classes:
            raise EvaluationError(f"ClassificationEvaluator: {len(class_names)} class names for "
                                  f"{self.num_classes} classes")
        self.class_names = None if class_names is None else list(class_names)
        self.reset()

    def reset(self) -> None:
        self._ranks: dict[Any, int] = {}

    @property
    def ranks(self) -> dict[Any, int]:
        """Image id -> 0-based rank of its true class, for every image processed since :meth:`reset`."""
        return dict(self._ranks)

    def process(self, sample: Any, predictions: ClassScores) -> None:
        """Record one image (a Sample with ``annotations [{"class_index": int}]``).

        Raises :class:`EvaluationError` naming the image when the predictions are not
        ClassScores, have a length other than ``num_classes`` or non-finite values, the label
        is outside ``0..num_classes-1``, or the image was already processed.
        """
        image_id = getattr(sample, "image_id", None)
        self._check_new(image_id, self._ranks, predictions, ClassScores, "classification")
        probs = predictions.probs
        if len(probs) != self.num_classes:
            raise EvaluationError(f"image id {image_id}: the model gives {len(probs)} class scores, the dataset has "
                                  f"{self.num_classes} classes")
        if not np.isfinite(probs).all():
            raise EvaluationError(f"image id {image_id}: class scores contain NaN or infinity")
        true_class = _true_class(sample)
        if not 0 <= true_class < self.num_classes:
            raise EvaluationError(f"image id {image_id}: class_index {true_class} is outside "
                                  f"0..{self.num_classes - 1}")
        self._ranks[image_id] = true_class_rank(probs, true_class)

    def per_image(self) -> dict[Any, dict[str, float]]:
        """Image id -> ``{"top1": 100 or 0, "top5": 100 or 0}`` (percent, so their means are the metrics)."""
        return {i: {"top1": 100.0 * (r < 1), "top5": 100.0 * (r < 5)} for i, r in self._ranks.items()}

    def evaluate(self) -> dict[str, float]:
        """``{"top1": percent, "top5": percent, "images": n}`` over the processed images."""
        if not self._ranks:
            raise EvaluationError("ClassificationEvaluator.evaluate: no image was processed")
        ranks = np.fromiter(self._ranks.values(), dtype=np.int64, count=len(self._ranks))
        return {"top1": float(np.mean(ranks < 1) * 100.0), "top5": float(np.mean(ranks < 5) * 100.0),
                "images": len(ranks)}
