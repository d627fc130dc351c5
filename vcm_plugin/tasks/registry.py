"""The task-model registry: built-ins plus the ``vcm_plugin.tasks`` entry-point group."""

from __future__ import annotations

from vcm_plugin.plugins import PluginRegistry
from vcm_plugin.tasks.base import TaskModel, TaskModelError

ENTRY_POINT_GROUP = "vcm_plugin.tasks"

TASK_MODELS: PluginRegistry[TaskModel] = PluginRegistry(
    "task model", TaskModel, ENTRY_POINT_GROUP, ("vcm_plugin.tasks.builtin", "vcm_plugin.tasks.cifar_vgg"),
    TaskModelError, TaskModelError)

#: ``get_task_model(name, **params)`` builds the task model registered as ``name`` (weights load on first use)
register_task_model, get_task_model_class, task_model_names, get_task_model = TASK_MODELS.functions()
