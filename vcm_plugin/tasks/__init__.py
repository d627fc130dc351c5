"""Task models: detection, instance segmentation, classification; backends by entry point."""

from vcm_plugin.tasks.base import INPUT, TaskModel
from vcm_plugin.tasks.registry import get_task_model, register_task_model, task_model_names

__all__ = ["INPUT", "TaskModel", "get_task_model", "register_task_model", "task_model_names"]
