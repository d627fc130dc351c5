"""Prediction kinds: what a task model returns for one image, and its JSON form in the results store.

Each kind is a class with ``to_json() -> dict`` (carrying ``"kind": <name>``) and a
``from_json(dict)`` classmethod, registered under its name with :func:`prediction_kind`, so
:func:`predictions_from_json` reads any stored record back without knowing the kinds. The
rest of a kind (the tasks it serves, its evaluator and primary metric) is registered in the
evaluation layer (:func:`vcm_plugin.evaluation.kinds.register_task_kind`), which registers
the class here too: a new kind (keypoints, semantic segmentation, ...) is one class and one
registration, in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["PREDICTION_CLASSES", "ClassScores", "Detections", "ImageOnly", "Predictions", "prediction_kind",
           "predictions_from_json"]


class Predictions(Protocol):
    """Any prediction kind: serialises to a JSON-able dict with its ``"kind"``."""

    kind: str

    def to_json(self) -> dict[str, Any]: ...


PREDICTION_CLASSES: dict[str, type] = {}  # kind name -> its prediction class (with ``from_json``)


def prediction_kind(name: str):
    """Class decorator: register a prediction class under ``name`` (its records' ``"kind"``)."""
    def register(cls: type) -> type:
        cls.kind = name
        PREDICTION_CLASSES[name] = cls
        return cls

    return register


def predictions_from_json(data: dict[str, Any]) -> Predictions:
    """Inverse of ``to_json`` for any registered prediction kind."""
    try:
        return PREDICTION_CLASSES[data["kind"]].from_json(data)
    except KeyError as exc:
        raise ValueError(f"unknown prediction record kind {data.get('kind')!r}; registered: "
                         f"{sorted(PREDICTION_CLASSES)}") from exc


@prediction_kind("detections")
@dataclass(frozen=True)
class Detections:
    """Boxes (and optionally instance masks) for one image.

    ``boxes`` are (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the ORIGINAL image;
    ``scores`` (N,) float32 in [0, 1]; ``labels`` (N,) int64 category ids of the
    dataset's label space; ``masks`` an optional list of N COCO RLE dicts
    (``{"size": [h, w], "counts": str}``) at the original image size.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float32).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float32).reshape(-1))
        object.__setattr__(self, "labels", np.asarray(self.labels, np.int64).reshape(-1))
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n or (self.masks is not None and len(self.masks) != n):
            raise ValueError(f"Detections: {n} boxes, {len(self.scores)} scores, {len(self.labels)} labels, "
                             f"{None if self.masks is None else len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_masks: bool = False) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), [] if with_masks else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "boxes": self.boxes.tolist(), "scores": self.scores.tolist(),
                               "labels": self.labels.tolist()}
        if self.masks is not None:
            out["masks"] = [{"size": list(m["size"]), "counts": m["counts"] if isinstance(m["counts"], str)
                             else m["counts"].decode("ascii")} for m in self.masks]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Detections:
        return cls(data["boxes"], data["scores"], data["labels"], data.get("masks"))


@prediction_kind("class_scores")
@dataclass(frozen=True)
class ClassScores:
    """Classification output for one image: ``probs`` (C,) float32 over the dataset's classes."""

    probs: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "probs", np.asarray(self.probs, np.float32).reshape(-1))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "probs": self.probs.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassScores:
        return cls(data["probs"])


@prediction_kind("image_only")
@dataclass(frozen=True)
class ImageOnly:
    """The output of the image-quality task: nothing; its scores are the per-image metrics the harness records."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageOnly:
        return cls()
