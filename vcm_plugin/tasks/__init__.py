"""Task models: detection, instance segmentation, classification; backends by entry point."""

from vcm_plugin.tasks.base import (
    INPUT,
    ClassScores,
    Detections,
    Predictions,
    TaskModel,
    TaskModelError,
    WeightsNotFoundError,
    predictions_from_json,
)
from vcm_plugin.tasks.registry import get_task_model, register_task_model, task_model_names

__all__ = ["INPUT", "ClassScores", "Detections", "Predictions", "TaskModel", "TaskModelError",
           "WeightsNotFoundError", "get_task_model", "predictions_from_json", "register_task_model",
           "task_model_names"]
