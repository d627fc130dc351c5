"""The split-inference protocol: a task model run in pieces, at named cut points.

A value at a cut point is a :class:`CutValue`: named tensors (batch 1) and the geometry
the rest of the model needs, at least ``image_hw``, the ORIGINAL image's (height, width)
in pixels, from which each model recomputes its own input geometry (resize, letterbox,
padding). Codecs code every named tensor and know no model by name.

A task model with cut points beyond ``input`` has ONE :class:`ModelAdapter` (its
``adapter_class``); :class:`~vcm_plugin.tasks.base.TaskModel` implements ``front``,
``run_from`` and ``cut_points`` from it, and :mod:`vcm_plugin.splitting.adapter` the
per-cut view that learned codecs and their training use. The adapter works on the
network's own input (``prepare``: resized, normalised); training works on RGB in [0, 1]
at the model's input geometry (``to_unit`` / ``from_unit`` convert, from ``norm``).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vcm_plugin.errors import TaskModelError

OUTPUT = "output"  # the distillation point at the task model's output
Y = "y"  # the name of the tensor of a one-tensor cut value


@dataclass(frozen=True)
class CutValue:
    """The value at a cut point: ``tensors`` name -> (1, C, h, w) float tensor (or array); ``geometry``
    name -> tuple of ints, with ``image_hw`` the ORIGINAL image's (height, width) in pixels."""

    tensors: dict[str, Any]
    geometry: dict[str, Any] = field(default_factory=dict)

    @property
    def image_hw(self) -> tuple[int, int]:
        """The original image's (height, width), pixels."""
        return self.geometry["image_hw"]

    @property
    def tensor(self) -> Any:
        """The one tensor of a one-tensor value."""
        if len(self.tensors) != 1:
            raise TaskModelError(f"the cut value holds {len(self.tensors)} tensors {sorted(self.tensors)}, not one")
        return next(iter(self.tensors.values()))


def freeze(module: Any) -> Any:
    """Eval mode, no parameter gradients: the task model stays exactly as trained."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ModelAdapter(ABC):
    """How one task model runs in pieces (implemented once per model; weights load on first use).

    ``points()`` lists every point from ``input`` to ``output`` (distillation points);
    ``cut_points()`` those where a decoded value may enter (default: all but ``output``).
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @abstractmethod
    def points(self) -> list[str]:
        """Every point of the model in execution order, from ``input`` to ``output``."""

    @abstractmethod
    def prepare(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> the network's input (1, 3, H', W') (resized, normalised); checks the image."""

    @abstractmethod
    def forward_to(self, x: Any, cut: str) -> dict[str, Any]:
        """Network input (B, 3, H', W') -> the named tensors at the (checked) cut."""

    @abstractmethod
    def rest(self, cut: str, value: CutValue) -> Any:
        """The predictions from a checked :class:`CutValue` at ``cut``."""

    @abstractmethod
    def mid(self, cut: str, y1: Any, point: str) -> list[Any]:
        """The frozen mid-model from the cut's one tensor Y1 to a checked ``point`` (differentiable in ``y1``);
        ``output`` is the model's raw output (class logits, a detector's head maps)."""

    def cut_points(self) -> list[str]:
        """Names of the points where a codec's output may enter the model."""
        return [p for p in self.points() if p != OUTPUT]

    def check_cut(self, point: str) -> str:
        """``point`` if the model can be cut there, else a :class:`TaskModelError` listing valid points."""
        if point not in self.cut_points():
            raise TaskModelError(f"task model {self.model.name!r} has no cut point {point!r}; valid: "
                                 f"{self.cut_points()}")
        return point

    def check_single_cut(self, cut: str) -> str:
        """The canonical name of ``cut`` if one tensor crosses it (learned codecs carry one), else a
        :class:`TaskModelError` naming its tensors."""
        cut = self.check_cut(cut)
        if len(names := self.names(cut)) != 1:
            raise TaskModelError(f"task model {self.model.name!r}: cut point {cut!r} carries {len(names)} tensors "
                                 f"{names}; a learned codec carries one tensor: cut where one tensor crosses, or "
                                 "use a feature codec such as fcm-vvc, which codes multi-tensor cuts")
        return cut

    def names(self, cut: str) -> list[str]:
        """The tensor names of the value at ``cut``."""
        return [Y]

    def check_value(self, cut: str, value: Any) -> None:
        """Refuse a value that is not a :class:`CutValue` with the tensors of ``cut``."""
        names = self.names(cut)
        if not isinstance(value, CutValue) or sorted(value.tensors) != sorted(names):
            got = f"tensors {sorted(value.tensors)}" if isinstance(value, CutValue) else type(value).__name__
            raise TaskModelError(f"task model {self.model.name!r}: cut point {cut!r} needs a CutValue of tensors "
                                 f"{names}, got {got}")

    def resolve(self, point: str) -> str:
        """The point's canonical name (a module name stands for its last node in graph-based adapters)."""
        return point

    # -- RGB in [0, 1] (training) <-> network input -------------------------------------------
    @property
    def norm(self) -> tuple[Any, Any] | None:
        """(mean, std) as (1, 3, 1, 1) tensors when the network input is normalised RGB, else None."""
        return None

    def to_unit(self, x: Any) -> Any:
        """Network input -> RGB in [0, 1]."""
        if self.norm is None:
            return x
        mean, std = self.norm
        return (x.cpu() * std + mean).clamp_(0, 1)

    def from_unit(self, x: Any) -> Any:
        """RGB in [0, 1] -> network input."""
        if self.norm is None:
            return x
        mean, std = self.norm
        return (x - mean) / std

    def front_layers(self, cut: str) -> list[Any]:
        """The modules that map the network input to Y1 at ``cut`` (copied by :meth:`front_module`)."""
        raise TaskModelError(f"task model {self.model.name!r} provides no copy of its front layers "
                             "(use decoder: plain)")

    def front_module(self, cut: str) -> Any:
        """A trainable copy of the front layers: (B, 3, H, W) RGB in [0, 1] -> Y1 (for ``decoder: front``)."""
        from torch import nn

        from vcm_plugin.learned.task_nets import Normalise

        layers = [copy.deepcopy(m) for m in self.front_layers(cut)]
        if self.norm is not None:
            layers.insert(0, Normalise(*self.norm))
        front = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        for p in front.parameters():
            p.requires_grad_(True)
        return front

