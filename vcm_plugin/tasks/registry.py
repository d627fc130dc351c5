"""The task-model registry: built-ins plus the ``vcm_plugin.tasks`` entry-point group."""

from __future__ import annotations

from typing import Any

from vcm_plugin.plugins import PluginRegistry
from vcm_plugin.tasks.base import TaskModel, TaskModelError

ENTRY_POINT_GROUP = "vcm_plugin.tasks"

TASK_MODELS: PluginRegistry[TaskModel] = PluginRegistry(
    "task model", TaskModel, ENTRY_POINT_GROUP, ("vcm_plugin.tasks.builtin", "vcm_plugin.tasks.cifar_vgg"),
    TaskModelError, TaskModelError)

register_task_model = TASK_MODELS.register
get_task_model_class = TASK_MODELS.get_class
task_model_names = TASK_MODELS.names


def get_task_model(name: str, **params: Any) -> TaskModel:
    """Build the task model registered as ``name`` (weights load on first use)."""
    return TASK_MODELS.create(name, **params)
