"""TFLite image classifiers (``tflite-classification``), by default Google's quantized MobileNetV2.

The default model, ``mobilenet_v2_1.0_224_quant.tflite`` (Apache-2.0, see
shared/weights/WEIGHTS.md), is found through :func:`~vcm_plugin.weights.find_weights`
and checked against its known SHA-256. It runs in ``ai_edge_litert`` (``pip install
ai-edge-litert``), imported on first use; the interpreter is not picklable, so it is built
lazily in :meth:`TFLiteClassifier.load`, once per process.

Preprocessing, as published for the slim ImageNet MobileNets (``inception_preprocessing``
at evaluation): keep the central ``central_fraction`` = 0.875 of the height and of the width
(``tf.image.central_crop``'s rule: offset ``floor((h - 0.875 h) / 2)``, size ``h - 2 offset``;
a 227 side keeps 199 px from 14), then bilinear resize to the model's input size (224 x 224,
read from the model; OpenCV INTER_LINEAR on float values, half-pixel centres as
``tf.image.resize``), rounded back to uint8. A uint8 input with scale 1/128 and zero point
128 takes the pixels as they are (the model maps them to [-1, 1)); an int8 input with
1/128 and 0 takes ``pixel - 128``; a float input takes ``pixel / 127.5 - 1``; other
quantizations get that float value quantized with the input's own scale and zero point.

Output: dequantized with its scale and zero point ((q - zero) * scale; this model: uint8
softmax, scale 1/256). Values all in [0, 1] are taken as probabilities, anything else as
logits (softmax applied). With ``drop_background`` a 1001-way output loses index 0
("background") and the remaining 1000 are renormalised to sum to 1 (uniform when all are 0).

Label order, verified: ``shared/weights/imagenet_labels.txt`` (the model's 1001 labels)
lines 2..1001 equal ``shared/data/imagenet/classes.csv`` column ``synset_words`` row by row
for all 1,000 classes (0 mismatches), i.e. output index i + 1 is torchvision class i (the
sorted-wnid order). Against torchvision's short ``name`` the first lemma differs only for
the two known torchvision renames, 134 "crane" -> "crane bird" and 639 "maillot, tank
suit" -> "maillot tank suit".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vcm_plugin.errors import TaskModelError
from vcm_plugin.tasks.base import TaskModel, check_image
from vcm_plugin.tasks.predictions import ClassScores
from vcm_plugin.tasks.registry import register_task_model
from vcm_plugin.weights import find_weights

INSTALL_HINT = "pip install ai-edge-litert"
RUNTIME_PACKAGE = "ai-edge-litert"


def central_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of the height and width (``tf.image.central_crop``'s rounding)."""
    if fraction >= 1.0:
        return image
    h, w = image.shape[:2]
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    return image[top:h - top, left:w - left]


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres) of a uint8 image on float values, rounded to uint8."""
    import cv2

    if image.shape[:2] == (height, width):
        return image
    out = cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_input(pixels: np.ndarray, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    """uint8 RGB pixels -> the model's input values (rules in the module docstring)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (pixels.astype(np.float32) / 127.5 - 1.0).astype(dtype)
    if dtype == np.uint8 and np.isclose(scale, 1 / 128) and zero_point == 128:
        return pixels
    if dtype == np.int8 and np.isclose(scale, 1 / 128) and zero_point == 0:
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    if not scale > 0:
        raise TaskModelError(f"integer model input of dtype {dtype} without quantization parameters")
    info = np.iinfo(dtype)
    q = np.rint((pixels.astype(np.float32) / 127.5 - 1.0) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def to_probabilities(raw: np.ndarray, scale: float, zero_point: int, drop_background: bool) -> np.ndarray:
    """Dequantize one output vector, make it probabilities, drop index 0 when asked and renormalise."""
    values = raw.astype(np.float64).reshape(-1)
    if np.dtype(raw.dtype).kind in "iu" and scale > 0:
        values = (values - zero_point) * scale
    if values.min() < 0 or values.max() > 1:  # logits, not probabilities
        values = np.exp(values - values.max())
    if drop_background:
        values = values[1:]
    total = values.sum()
    if not total > 0:
        return np.full(len(values), 1.0 / len(values), np.float32)
    return (values / total).astype(np.float32)


@register_task_model
@dataclass
class TFLiteClassifier(TaskModel):
    """A TFLite image classifier (default: quantized MobileNetV2 1.0 224, 1001 classes with background).

    Fields: ``model_file`` a ``.tflite`` name found through the weights search path (or a
    path), checked against :data:`~vcm_plugin.weights.KNOWN_SHA256` when known;
    ``search_path`` folders searched first; ``num_threads`` interpreter CPU threads;
    ``drop_background`` drop output 0 of a 1001-way model (ImageNet's 1000 classes remain);
    ``central_fraction`` of the height and width kept before resizing (1.0: no crop).
    """

    name: ClassVar[str] = "tflite-classification"
    task: ClassVar[str] = "classification"
    transient: ClassVar[tuple[str, ...]] = ("_interpreter", "_io")

    model_file: str = "mobilenet_v2_1.0_224_quant.tflite"
    search_path: list[str] | None = None
    num_threads: int = 1
    drop_background: bool = True
    central_fraction: float = 0.875

    def __post_init__(self) -> None:
        if self.num_threads < 1:  # its type is checked by the registry (vcm_plugin.params)
            raise ValueError(f"{self.name}: num_threads must be a positive integer, got {self.num_threads!r}")
        if not 0.0 < self.central_fraction <= 1.0:
            raise ValueError(f"{self.name}: central_fraction must be in (0, 1], got {self.central_fraction}")

    # -- model file --------------------------------------------------------------------------
    def weights_path(self) -> Path:
        """The ``.tflite`` file, found through the weights search path."""
        return find_weights(self.model_file, self.search_path)

    def identity(self) -> dict[str, Any]:
        """Name, output-determining params, the model file's SHA-256 and the runtime version."""
        from importlib import metadata

        try:
            runtime = metadata.version(RUNTIME_PACKAGE)
        except metadata.PackageNotFoundError:
            runtime = None
        params = {k: v for k, v in self.params().items() if k not in ("search_path", "num_threads")}
        return {"name": self.name, "params": params, "model_sha256": self.weights_sha256(),
                "runtime": {RUNTIME_PACKAGE: runtime}}

    # -- interpreter -------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise TaskModelError(f"task model {self.name!r} needs the TFLite runtime ai_edge_litert, which is not "
                                 f"installed: {INSTALL_HINT}") from exc
        self.weights_sha256()
        path = self.weights_path()
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=self.num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise TaskModelError(f"model file {str(path)!r} cannot be loaded by TFLite: {exc}") from exc
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][0] != 1 \
                or inputs[0]["shape"][3] != 3:
            raise TaskModelError(f"model file {str(path)!r}: expected one (1, H, W, 3) input, got "
                                 f"{[list(d['shape']) for d in inputs]}")
        if len(outputs) != 1 or len(outputs[0]["shape"]) != 2 or outputs[0]["shape"][0] != 1:
            raise TaskModelError(f"model file {str(path)!r}: expected one (1, classes) output, got "
                                 f"{[list(d['shape']) for d in outputs]}")
        classes = int(outputs[0]["shape"][1])
        if self.drop_background and classes != 1001:
            raise TaskModelError(f"model file {str(path)!r} has {classes} outputs; drop_background needs 1001 "
                                 "(background + 1000 classes): set drop_background to false")
        self._io = (inputs[0], outputs[0])
        self._interpreter = interpreter

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The (1, H, W, 3) input tensor for an (H, W, 3) uint8 RGB image (see the module docstring)."""
        image = check_image(image, self.name)
        self.load()
        spec = self._io[0]
        height, width = int(spec["shape"][1]), int(spec["shape"][2])
        pixels = resize_bilinear(central_crop(image, self.central_fraction), height, width)
        scale, zero_point = spec["quantization"]
        return to_input(pixels, spec["dtype"], float(scale), int(zero_point))[None]

    def _predict(self, image: np.ndarray) -> ClassScores:
        """Class probabilities for an (H, W, 3) uint8 RGB image."""
        x = self.preprocess(image)
        inp, out = self._io
        with self._lock:
            self._interpreter.set_tensor(inp["index"], x)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(out["index"])[0]
        scale, zero_point = out["quantization"]
        return ClassScores(to_probabilities(raw, float(scale), int(zero_point), self.drop_background))
