"""Per-layer features of a registered task model on the images of a single-label dataset.

Features are the model's value at each cut point (``TaskModel.front(point, image)``),
flattened to one float32 vector per image; at ``input`` the image itself as float pixel
values (0..255, unnormalised, in the dataset's resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.analysis.rho import AnalysisError


@dataclass
class LabelledImages:
    """Images (H, W, 3) uint8 with their class index; ``class_names[i]`` names class i."""

    images: list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]


def load_labelled_images(dataset: str, root: str | Path | None = None, split: str | None = "test",
                         max_images: int | None = None, **params: Any) -> LabelledImages:
    """The images and single class labels of dataset ``dataset`` (``cifar10``, ``imagenet``...).

    ``root``, ``split`` and ``max_images`` (the dataset's own, class-balanced for ``cifar10``)
    are passed when given, with any other dataset ``params``. A sample without exactly one
    ``class_index`` annotation raises :class:`AnalysisError`.
    """
    from vcm_plugin.datasets.registry import get_dataset

    kwargs = {key: value for key, value in (("root", root), ("split", split), ("max_images", max_images))
              if value is not None}
    ds = get_dataset(dataset, **kwargs, **params)
    images, labels = [], []
    for sample in ds:
        classes = [a["class_index"] for a in sample.annotations if "class_index" in a]
        if len(classes) != 1:
            raise AnalysisError(f"dataset {dataset!r}: image id {sample.image_id} has {len(classes)} class labels; "
                                "ρ needs a single-label classification dataset")
        images.append(sample.load())
        labels.append(int(classes[0]))
    names = getattr(ds, "class_names", None) or [str(i) for i in range(max(labels) + 1)]
    return LabelledImages(images, np.asarray(labels, dtype=np.int64), list(names))


def resolve_layers(model: Any, layers: Sequence[str] | None) -> list[str]:
    """``layers`` checked against the model's cut points (all of them when None), in the order given."""
    valid = list(model.cut_points())
    if not layers:
        return valid
    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        raise AnalysisError(f"--layers: task model {model.name!r} has no cut point(s) {unknown}; "
                            f"valid cut points: {', '.join(valid)}")
    if len(set(layers)) != len(layers):
        raise AnalysisError(f"--layers: a layer is listed twice in {list(layers)}")
    return list(layers)


def _flatten(value: Any, layer: str) -> np.ndarray:
    """One float32 vector from a tensor / array, or the concatenation of those inside a list / dict / .tensors."""
    if isinstance(getattr(value, "tensors", None), dict):
        value = value.tensors
    if isinstance(value, dict):
        value = [value[key] for key in sorted(value)]
    if isinstance(value, (list, tuple)):
        return np.concatenate([_flatten(v, layer) for v in value])
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise AnalysisError(f"cut point {layer!r}: the model's value is a {type(value).__name__}, not a tensor")
    return np.asarray(value, dtype=np.float32).reshape(-1)


def layer_features(model: Any, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
    """{layer: (n_images, dims) float32} from ``model.front(layer, image)``."""
    import torch

    rows: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for image in images:
            for layer in layers:
                rows[layer].append(_flatten(model.front(layer, image), layer))
    out: dict[str, np.ndarray] = {}
    for layer, vectors in rows.items():
        sizes = {len(v) for v in vectors}
        if len(sizes) > 1:
            raise AnalysisError(f"cut point {layer!r}: feature sizes differ between images ({sorted(sizes)}); "
                                "use images of one size")
        out[layer] = np.stack(vectors)
    return out

