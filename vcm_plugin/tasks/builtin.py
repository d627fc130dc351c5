"""Imports the built-in task-model modules so that their ``@register_task_model`` runs."""
import vcm_plugin.tasks.classification  # noqa: E402,F401  (torchvision ImageNet classifiers)
import vcm_plugin.tasks.detectron2_backend  # noqa: E402,F401  (imports without detectron2; needs it to run)
import vcm_plugin.tasks.image_quality  # noqa: E402,F401  (the image-quality task of `vcm compare`)
import vcm_plugin.tasks.tflite_backend  # noqa: E402,F401  (TFLite classifiers; needs ai-edge-litert to run)
import vcm_plugin.tasks.torchvision_backend  # noqa: E402,F401  (torchvision detection / Mask R-CNN)
import vcm_plugin.tasks.yolov5.detector  # noqa: E402,F401  (YOLOv5, the offline default detector)
