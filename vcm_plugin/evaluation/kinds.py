"""Task kinds: which predictions a task produces, how they are scored, and the metric reports use.

A :class:`TaskKind` is one registration of: the prediction kind's name and class (with
``to_json`` / ``from_json``), the task names it serves with each task's primary metric (the
one reports plot and compute BD-rate on), and an evaluator factory ``(dataset, task) ->
Evaluator`` (by default the dataset's own :meth:`~vcm_plugin.datasets.base.Dataset.evaluator`,
which knows its ground truth; ``None``: no task evaluator, the point is scored by the
per-image image metrics alone). A new kind (keypoints, semantic segmentation, tracking) is a
prediction class plus one :func:`register_task_kind` call in its own module, typically the
module of its task model (task-model plug-ins are imported before kinds are looked up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vcm_plugin.evaluation.base import EvaluationError, Evaluator
from vcm_plugin.tasks.predictions import ClassScores, Detections, ImageOnly, prediction_kind

__all__ = ["TaskKind", "evaluator_for", "primary_metric", "register_task_kind", "task_kind", "task_names"]


def dataset_evaluator(dataset: Any, task: str) -> Evaluator:
    """The dataset's own evaluator for ``task`` (COCO, Open Images, top-k, ...)."""
    return dataset.evaluator(task)


@dataclass(frozen=True)
class TaskKind:
    """``name``: the predictions' ``"kind"``; ``tasks``: task name -> its primary metric."""

    name: str
    predictions: type
    tasks: Mapping[str, str]
    evaluator: Callable[[Any, str], Evaluator] | None = dataset_evaluator


_BY_TASK: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Register ``kind`` for each of its tasks (and its prediction class's JSON form); returns it."""
    for task in kind.tasks:
        existing = _BY_TASK.get(task)
        if existing is not None and existing.name != kind.name:
            raise ValueError(f"task {task!r} is already served by prediction kind {existing.name!r}")
    prediction_kind(kind.name)(kind.predictions)
    _BY_TASK.update({task: kind for task in kind.tasks})
    return kind


def _load_plugins() -> None:
    from vcm_plugin.tasks.registry import TASK_MODELS

    TASK_MODELS.load()  # task-model plug-ins register their kinds on import


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    _load_plugins()
    return sorted(_BY_TASK)


def task_kind(task: str) -> TaskKind:
    """The kind serving ``task``; :class:`EvaluationError` lists the registered tasks."""
    if task not in _BY_TASK:
        _load_plugins()
    try:
        return _BY_TASK[task]
    except KeyError:
        raise EvaluationError(f"unknown task {task!r}; registered tasks: {', '.join(sorted(_BY_TASK))}") from None


def evaluator_for(dataset: Any, task: str) -> Evaluator | None:
    """A fresh evaluator for ``task`` on ``dataset`` (None: the task is scored by image metrics alone)."""
    factory = task_kind(task).evaluator
    return None if factory is None else factory(dataset, task)


def primary_metric(task: str, evaluator: Evaluator | None = None) -> str:
    """The metric reports use for ``task``: the evaluator's own ``primary_metric`` when it sets one."""
    return getattr(evaluator, "primary_metric", "") or task_kind(task).tasks[task]


register_task_kind(TaskKind("detections", Detections, {"detection": "bbox/AP", "segmentation": "segm/AP"}))
register_task_kind(TaskKind("class_scores", ClassScores, {"classification": "top1"}))
register_task_kind(TaskKind("image_only", ImageOnly, {"image-quality": "psnr_y"}, evaluator=None))
