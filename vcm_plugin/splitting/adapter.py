"""A task model cut in two at one cut point: what learned feature / direct codecs and their training need.

A :class:`SplitAdapter` exposes, for one task model and one cut point ``cut``:

* ``input_tensor(image)``: the model's own input geometry (resize, letterbox) as a
  (1, 3, H, W) float tensor in [0, 1] (no normalisation: that is part of ``front``);
* ``front(x)``: X -> Y1, the tensor at the cut (B, C, h, w), without gradients;
* ``mid(y1, point)``: the frozen task mid-model M, Y1 -> Y2 at a distillation point
  after the cut (a list of tensors; gradients flow to ``y1``); ``point == "output"`` is
  the model's output (class logits for classifiers, the raw head maps of a detector);
* ``to_value`` / ``from_value``: between Y1 and the :class:`~vcm_plugin.tasks.split.CutValue`
  ``TaskModel.run_from(cut, .)`` takes, so a decoded Ŷ1 is scored by the same harness and
  evaluator as an image.

It is implemented once, over the task model's :class:`~vcm_plugin.tasks.split.ModelAdapter`
(its ``adapter_class``). Third parties can add cut-point definitions for an existing task
model through the entry-point group ``vcm_plugin.cut_points`` (entry-point name: the task
model's name; value: a function ``(task_model, cut) -> SplitAdapter``, e.g. a subclass
overriding the methods above).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks.base import INPUT, TaskModel
from vcm_plugin.tasks.split import CutValue

ENTRY_POINT_GROUP = "vcm_plugin.cut_points"


class SplitAdapter:
    """One task model cut at ``cut`` (see the module docstring). Parameters of the model are frozen."""

    def __init__(self, model: TaskModel, cut: str) -> None:
        self.model, self.cut = model, cut

    #: "classification" (``mid(.., "output")`` gives logits) or "detection"
    @property
    def task(self) -> str:
        return self.model.task

    @property
    def adapter(self) -> Any:
        """The model's :class:`~vcm_plugin.tasks.split.ModelAdapter`."""
        return self.model.adapter()

    def input_tensor(self, image: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> (1, 3, H', W') float32 in [0, 1] at the model's input geometry."""
        return self.adapter.to_unit(self.adapter.prepare(image))

    def front(self, x: Any) -> Any:
        """(B, 3, H', W') in [0, 1] -> Y1 (B, C, h, w) at the cut, no gradients."""
        import torch

        with torch.no_grad():
            return self.adapter.forward_to(self.adapter.from_unit(x), self.cut)[self.adapter.names(self.cut)[0]]

    def points(self) -> list[str]:
        return self.adapter.points()

    def mid(self, y1: Any, point: str) -> list[Any]:
        """The frozen mid-model from the cut to ``point`` (differentiable in ``y1``)."""
        return self.adapter.mid(self.cut, y1, self.check_distillation_point(point))

    def to_value(self, y1: Any, image_hw: tuple[int, int]) -> Any:
        """Y1 (1, C, h, w) of an image of ORIGINAL size ``image_hw`` -> the value ``run_from(cut, .)`` takes."""
        return CutValue({self.adapter.names(self.cut)[0]: y1}, {"image_hw": (int(image_hw[0]), int(image_hw[1]))})

    def from_value(self, value: Any) -> Any:
        """Inverse of :meth:`to_value`: the Y1 tensor (1, C, h, w)."""
        self.adapter.check_value(self.cut, value)
        return value.tensor

    def front_module(self) -> Any:
        """A trainable deep copy of the front layers: (B, 3, H, W) in [0, 1] -> Y1 (for ``decoder: front``)."""
        return self.adapter.front_module(self.cut)

    def identity(self) -> dict[str, Any]:
        """What a trained codec is bound to: the task model (name, weights) and the cut."""
        ident = self.model.identity()
        weights = ident.get("weights_sha256") or ident.get("weights") or ident.get("params")
        return {"task_model": self.model.name, "weights": weights, "cut": self.cut}

    def resolve(self, point: str) -> str:
        return point if self.adapter is None else self.adapter.resolve(point)

    def check_distillation_point(self, point: str) -> str:
        """``point`` (canonical) if it is the cut or deeper; errors name the nearest valid ones."""
        points, cut, point = self.points(), self.resolve(self.cut), self.resolve(point)
        after = points[points.index(cut):] if cut in points else points
        shown = after[:8] + ([f"... {len(after) - 8} more"] if len(after) > 8 else [])
        if point not in points:
            near = difflib.get_close_matches(point, after, n=3, cutoff=0.3)
            raise TaskModelError(f"task model {self.model.name!r}: no distillation point {point!r}; nearest: "
                                 f"{near or after[:3]}; valid after cut {self.cut!r}: {shown}")
        if points.index(point) < points.index(cut):
            raise TaskModelError(f"task model {self.model.name!r}: distillation point {point!r} comes before the "
                                 f"cut {self.cut!r}; it must be the cut itself or deeper: {shown}")
        return point

    def probe(self, height: int, width: int) -> tuple[int, int]:
        """(channels of Y1, pixels per Y1 cell) measured on a blank input of ``height`` x ``width``."""
        import torch

        y1 = self.front(torch.zeros(1, 3, height, width))
        return int(y1.shape[1]), max(1, round(height / y1.shape[-2]))


def _entry_point_factory(model_name: str) -> Callable[[TaskModel, str], SplitAdapter] | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == model_name:
            try:
                return ep.load()
            except Exception as exc:  # a broken plugin is named, not fatal for other models
                raise TaskModelError(f"cut-point plugin {ep.value!r} for {model_name!r} failed to import: "
                                     f"{exc}") from exc
    return None


def split_adapter(model: TaskModel, cut: str) -> SplitAdapter:
    """The adapter of ``model`` cut at ``cut``: an entry point's for the model's name, else the model's own."""
    if cut == INPUT:
        raise TaskModelError(f"task model {model.name!r}: the cut point of a feature or direct codec cannot be "
                             f"'input' (that is an image codec)")
    factory = _entry_point_factory(model.name)
    if factory is not None:
        return factory(model, cut)
    if model.adapter() is None:
        raise TaskModelError(f"task model {model.name!r} defines no cut points for learned split / direct codecs "
                             f"(give it an adapter_class or a {ENTRY_POINT_GROUP!r} entry point)")
    return SplitAdapter(model, model.adapter().check_single_cut(cut))
