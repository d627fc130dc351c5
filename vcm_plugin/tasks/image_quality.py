"""The image-quality task: scores a codec point by its per-image metrics alone (PSNR-Y, PSNR-RGB, MS-SSIM, ...).

Its model runs nothing and returns :class:`~vcm_plugin.tasks.predictions.ImageOnly`; the
harness records the metrics of :data:`vcm_plugin.images.metrics.IMAGE_METRICS` for every coded
image anyway, and the task's primary metric is PSNR-Y. ``vcm compare`` and the codec
benchmark run the evaluation harness with this task, so they cache and resume like ``vcm run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vcm_plugin.tasks.base import TaskModel
from vcm_plugin.tasks.predictions import ImageOnly
from vcm_plugin.tasks.registry import register_task_model

TASK = "image-quality"


@register_task_model
@dataclass
class ImageQualityModel(TaskModel):
    """No network: any decoded value (an image, or a feature codec's cut value) gives :class:`ImageOnly`."""

    name = TASK
    task = TASK

    def run_from(self, point: str, value: Any) -> ImageOnly:
        return ImageOnly()
