"""The task-model contract: what a codec's decoded output is scored with.

A :class:`TaskModel` maps an image (or, for split models, a tensor at a named cut
point) to predictions in the DATASET's label space: COCO category ids for COCO-trained
detectors. Predictions are plain numpy containers that serialise to JSON, so the
results store can keep them and metrics can be recomputed without the model.
"""

from __future__ import annotations

import threading
from abc import ABC
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.codecs.base import front_timer
from vcm_plugin.errors import InvalidImageError, TaskModelError
from vcm_plugin.tasks.predictions import Predictions
from vcm_plugin.tasks.split import CutValue, ModelAdapter
from vcm_plugin.weights import KNOWN_SHA256, file_sha256, verify_sha256

INPUT = "input"  # the cut point name of the model's input image


def check_image(image: Any, model: str) -> np.ndarray:
    """``image`` if it is a non-empty (H, W, 3) uint8 RGB array, else an InvalidImageError naming ``model``."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidImageError(f"task model {model!r}: expected an (H, W, 3) uint8 RGB image, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"task model {model!r}: the image has zero size {image.shape}")
    return image


def state_dict_mismatch(expected: dict[str, tuple[int, ...]], state: dict[str, Any],
                        kinds: tuple[str, str, str] = ("missing keys ({n})", "unexpected keys ({n})",
                                                       "shape mismatches ({n})")) -> str:
    """Missing / unexpected keys and shape differences of ``state`` against ``expected`` key -> shape ('' if
    none), each listed (8 at most) after its label from ``kinds`` (``{n}``: how many)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
              if k in state and tuple(state[k].shape) != expected[k]]
    return "; ".join(f"{kind.format(n=len(keys))}: {', '.join(keys[:8])}"
                     + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                     for kind, keys in zip(kinds, (missing, unexpected, shapes)) if keys)


@dataclass
class TaskModel(ABC):
    """A task model: image (or cut-point tensor) -> predictions.

    Subclasses are dataclasses whose fields are the model's parameters (returned by
    :meth:`params`, which identifies the model in result stores), set the ClassVars
    and implement :meth:`_predict` (the whole model on an image); a model with cut points
    also sets ``adapter_class`` (:class:`~vcm_plugin.tasks.split.ModelAdapter`), from which
    :meth:`front`, :meth:`run_from` and :meth:`cut_points` work. Weights load lazily,
    on first use, so a model can be described and hashed without loading them: a model
    with ``transient`` state implements :meth:`_load`, which :meth:`load` runs once, under
    a lock, while the first ``transient`` attribute is None (so ``_load`` sets it last).
    A model with a weights file implements :meth:`weights_path`.
    """

    name: ClassVar[str]
    task: ClassVar[str]  # "detection", "segmentation" or "classification"
    #: attributes holding loaded state (networks, interpreters): None until loaded, dropped when pickled
    transient: ClassVar[tuple[str, ...]] = ()
    #: its split adapter (a ModelAdapter subclass, built once per model); None: only the ``input`` point
    adapter_class: ClassVar[type[ModelAdapter] | None] = None
    categories: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)  # of the weights file
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _adapter: Any = field(default=None, init=False, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        """A ``transient`` attribute reads None until :meth:`_load` sets it."""
        if name in type(self).transient:
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its parameters (for process pools): loaded state and the lock are left out."""
        state = {k: v for k, v in self.__dict__.items() if k not in self.transient}
        state["_lock"] = state["_adapter"] = None
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

    def network(self) -> Any:
        """The loaded network: the first ``transient`` attribute (loaded on first use)."""
        self.load()
        return getattr(self, self.transient[0])

    def _load(self) -> None:
        """Build the ``transient`` state (called by :meth:`load`, once, under the lock)."""
        raise NotImplementedError(f"task model {self.name!r} declares transient state but no _load()")

    def weights_path(self) -> Path | None:
        """The weights file that will be loaded (None: none); raises if it is missing."""
        return None

    def weights_sha256(self) -> str:
        """SHA-256 of :meth:`weights_path`, hashed once (kept when pickled); a file whose name has a
        known hash (:data:`~vcm_plugin.weights.KNOWN_SHA256`) must match it."""
        if self._sha256 is None:
            path = self.weights_path()
            sha, expected = file_sha256(path), KNOWN_SHA256.get(path.name)  # once per file state (weights.py)
            if expected is not None and sha != expected:
                verify_sha256(path, expected)  # raises, naming the file and both hashes
            self._sha256 = sha
        return self._sha256

    def for_shapes(self) -> TaskModel:
        """A model with this one's cut points and tensor shapes that needs no trained weights (``vcm layers``)."""
        return self

    def adapter(self) -> ModelAdapter | None:
        """Its :class:`~vcm_plugin.tasks.split.ModelAdapter` (built once), or None."""
        if self._adapter is None and self.adapter_class is not None:
            self._adapter = self.adapter_class(self)
        return self._adapter

    def cut_points(self) -> list[str]:
        """Names of the points where a codec's output may enter the model."""
        return [INPUT] if self.adapter() is None else self.adapter().cut_points()

    def _cut(self, point: str) -> tuple[Any, str]:
        """(adapter, checked cut) for a cut point other than ``input``."""
        if self.adapter() is None:
            raise TaskModelError(f"task model {self.name!r} has no cut point {point!r}; valid: {self.cut_points()}")
        return self.adapter(), self.adapter().check_cut(point)

    def _predict(self, image: np.ndarray) -> Predictions:
        """The whole model on an (H, W, 3) uint8 RGB image (what :meth:`run_from` runs at ``input``)."""
        raise NotImplementedError(f"task model {self.name!r} implements neither _predict nor run_from")

    def run_from(self, point: str, value: Any) -> Predictions:
        """Run the model from cut point ``point`` (``"input"``: an image; else a ``CutValue``) to its output."""
        if point == INPUT:
            return self._predict(value)
        import torch

        adapter, cut = self._cut(point)
        adapter.check_value(cut, value)
        with torch.inference_mode():
            return adapter.rest(cut, value)

    def front(self, point: str, image: np.ndarray) -> Any:
        """The value at cut point ``point``: the image itself at ``input``, else a ``CutValue`` (batch 1).

        Inside a codec's encode its seconds (preparing the image and the layers up to the cut; loading the
        weights excluded) are reported as the stream's ``front_s`` (:func:`~vcm_plugin.codecs.base.front_timer`).
        """
        if point == INPUT:
            return image
        import torch

        adapter, cut = self._cut(point)
        self.load()  # not timed, as the harness does not time loading the task models
        with front_timer(), torch.inference_mode():
            tensors = adapter.forward_to(adapter.prepare(image), cut)
        return CutValue(tensors, {"image_hw": (int(image.shape[0]), int(image.shape[1]))})

    def params(self) -> dict[str, Any]:
        """The model's configuration (dataclass fields), JSON-serialisable."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def identity(self) -> dict[str, Any]:
        """Everything that determines this model's outputs (name, params, weights hash)."""
        return {"name": self.name, "params": self.params()}
