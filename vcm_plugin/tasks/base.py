"""The task-model contract: what a codec's decoded output is scored with.

A :class:`TaskModel` maps an image (or, for split models, a tensor at a named cut
point) to predictions in the DATASET's label space: COCO category ids for COCO-trained
detectors. Predictions are plain numpy containers that serialise to JSON, so the
results store can keep them and metrics can be recomputed without the model.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# the task models' errors live at the bottom layer (learned models and codecs raise them too);
# importable from here as before
from vcm_plugin.errors import TaskModelError
from vcm_plugin.errors import WeightsNotFoundError as WeightsNotFoundError
from vcm_plugin.hashing import file_sha256

INPUT = "input"  # the cut point name of the model's input image


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
        out: dict[str, Any] = {"kind": "detections", "boxes": self.boxes.tolist(), "scores": self.scores.tolist(),
                               "labels": self.labels.tolist()}
        if self.masks is not None:
            out["masks"] = [{"size": list(m["size"]), "counts": m["counts"] if isinstance(m["counts"], str)
                             else m["counts"].decode("ascii")} for m in self.masks]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Detections:
        return cls(data["boxes"], data["scores"], data["labels"], data.get("masks"))


@dataclass(frozen=True)
class ClassScores:
    """Classification output for one image: ``probs`` (C,) float32 over the dataset's classes."""

    probs: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "probs", np.asarray(self.probs, np.float32).reshape(-1))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "class_scores", "probs": self.probs.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassScores:
        return cls(data["probs"])


Predictions = Detections | ClassScores


def predictions_from_json(data: dict[str, Any]) -> Predictions:
    """Inverse of ``to_json`` for any prediction kind."""
    kinds = {"detections": Detections, "class_scores": ClassScores}
    try:
        return kinds[data["kind"]].from_json(data)
    except KeyError as exc:
        raise ValueError(f"unknown prediction record kind {data.get('kind')!r}") from exc


@dataclass
class TaskModel(ABC):
    """A task model: image (or cut-point tensor) -> predictions.

    Subclasses are dataclasses whose fields are the model's parameters (returned by
    :meth:`params`, which identifies the model in result stores), set the ClassVars
    and implement :meth:`run_from` (at least from ``"input"``). Weights load lazily,
    on first use, so a model can be described and hashed without loading them: a model
    with ``transient`` state implements :meth:`_load`, which :meth:`load` runs once, under
    a lock, while the first ``transient`` attribute is None (so ``_load`` sets it last).
    """

    name: ClassVar[str]
    task: ClassVar[str]  # "detection", "segmentation" or "classification"
    #: attributes holding loaded state (networks, interpreters): dropped when pickled, rebuilt lazily
    transient: ClassVar[tuple[str, ...]] = ()
    categories: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)  # of the weights file
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its parameters (for process pools): loaded state and the lock are left out."""
        state = dict(self.__dict__)
        state.update({name: None for name in self.transient})
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray) -> Predictions:
        """Run the whole model on an (H, W, 3) uint8 RGB image."""
        return self.run_from(INPUT, image)

    def load(self) -> None:
        """Load the weights now (idempotent, thread-safe); the harness calls it so timings exclude loading."""
        if self.transient and getattr(self, self.transient[0]) is None:  # models without transient state: nothing
            with self._lock:
                if getattr(self, self.transient[0]) is None:
                    self._load()

    def _load(self) -> None:
        """Build the ``transient`` state (called by :meth:`load`, once, under the lock)."""
        raise NotImplementedError(f"task model {self.name!r} declares transient state but no _load()")

    def _cached_sha256(self, path: Callable[[], Path]) -> str:
        """SHA-256 of the weights file ``path()`` returns, hashed once (kept when pickled)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(path())
        return self._sha256

    def cut_points(self) -> list[str]:
        """Names of the points where a codec's output may enter the model."""
        return [INPUT]

    @abstractmethod
    def run_from(self, point: str, value: Any) -> Predictions:
        """Run the model from cut point ``point`` (``"input"``: an image) to its output."""

    def front(self, point: str, image: np.ndarray) -> Any:
        """Run the model from the input up to cut point ``point`` (split inference)."""
        if point == INPUT:
            return image
        raise TaskModelError(f"task model {self.name!r} has no cut point {point!r}; valid: {self.cut_points()}")

    def params(self) -> dict[str, Any]:
        """The model's configuration (dataclass fields), JSON-serialisable."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def identity(self) -> dict[str, Any]:
        """Everything that determines this model's outputs (name, params, weights hash)."""
        return {"name": self.name, "params": self.params()}
