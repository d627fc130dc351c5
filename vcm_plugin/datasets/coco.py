"""COCO-format instance datasets (``coco``) and the embedded 6-image sample (``sample``).

The instances JSON is read and checked here, then indexed by pycocotools (quietly).
Order is deterministic: ascending image id, or the order of a given id list;
``max_images`` keeps the first N of that order. Images without annotations are valid
samples (their detections count as false positives).
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcm_plugin.datasets.base import DatasetError, IndexedDataset, Sample, json_sha256
from vcm_plugin.datasets.folder import read_id_lines
from vcm_plugin.datasets.registry import register_dataset
from vcm_plugin.evaluation.coco_eval import CocoEvaluator, coco_from_dict

REQUIRED_KEYS = {"images": ("id", "file_name", "height", "width"),
                 "annotations": ("id", "image_id", "category_id", "bbox"),
                 "categories": ("id", "name")}
TASK_IOU_TYPES = {"detection": ("bbox",), "segmentation": ("bbox", "segm")}


def _read_instances(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed instances JSON and the sha256 of its bytes; DatasetError naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"COCO annotation file {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"COCO annotation file {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"COCO annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"COCO annotation file {path} is not COCO instances format: "
                           f"top level is a {type(data).__name__}, expected an object")
    missing = [key for key in REQUIRED_KEYS if not isinstance(data.get(key), list)]
    if missing:
        raise DatasetError(f"COCO annotation file {path} is not COCO instances format: "
                           f"missing list(s) {missing} (needs 'images', 'annotations', 'categories')")
    for block, keys in REQUIRED_KEYS.items():
        for entry in data[block]:
            lacking = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if lacking:
                what = entry.get("id", "?") if isinstance(entry, dict) else entry
                raise DatasetError(f"COCO annotation file {path} is not COCO instances format: "
                                   f"{block} entry id {what} lacks {lacking}")
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"COCO annotation file {path}: annotation {ann['id']} refers to image id "
                               f"{ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise DatasetError(f"COCO annotation file {path}: annotation {ann['id']} has category id "
                               f"{ann['category_id']}, which is not in 'categories'")
    return data, hashlib.sha256(raw).hexdigest()


def _parse_id(value: Any, origin: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise DatasetError(f"{origin}: image id {value!r} is not an integer")


def read_image_ids(path: str | Path) -> list[int]:
    """Image ids from a text file: the first field of each line; blank lines and ``#`` comments skipped."""
    return [_parse_id(text.split()[0], f"{path} line {number}") for number, text in read_id_lines(path)]


@register_dataset
class CocoDataset(IndexedDataset):
    """A COCO instances dataset: images in ``images_dir`` named by ``file_name`` in ``annotations``.

    ``image_ids``: None (every image, ascending id), a list (that order) or a text file of
    ids (see :func:`read_image_ids`). ``max_images``: keep the first N. ``missing``:
    ``"error"`` (default) raises when a selected image file is absent; ``"skip"`` drops
    such images (their ids in :attr:`skipped_ids`, with a warning giving the count).
    """

    name = "coco"

    def __init__(self, images_dir: str | Path, annotations: str | Path,
                 image_ids: Sequence[int] | str | Path | None = None, max_images: int | None = None,
                 missing: str = "error") -> None:
        self.images_dir = Path(images_dir)
        self.annotations = Path(annotations)
        self._check_selection(missing, max_images)
        if not self.images_dir.is_dir():
            raise DatasetError(f"COCO images folder {self.images_dir} does not exist")
        data, self.annotations_sha256 = _read_instances(self.annotations)
        self.coco = coco_from_dict(data)
        self._keep_present(self._select(image_ids), lambda i: self.images_dir / self.coco.imgs[i]["file_name"],
                           str(self.annotations), missing, max_images)

    def _select(self, image_ids: Sequence[int] | str | Path | None) -> list[int]:
        if image_ids is None:
            return sorted(self.coco.imgs)
        if isinstance(image_ids, (str, Path)):
            ids, origin = read_image_ids(image_ids), str(image_ids)
        else:
            origin = f"{self.name} dataset image_ids"
            ids = [_parse_id(i, origin) for i in image_ids]
        return self._check_listed(origin, ids, [i for i in ids if i not in self.coco.imgs], self.annotations)

    def __getitem__(self, index: int) -> Sample:
        """The sample at position ``index`` (annotations are copies: callers may modify them)."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        return Sample(image_id=image_id, path=self.images_dir / info["file_name"], height=int(info["height"]),
                      width=int(info["width"]), annotations=copy.deepcopy(self.coco.imgToAnns.get(image_id, [])))

    @property
    def categories(self) -> dict[int, str]:
        """Category id -> name, as in the annotation file."""
        return {cat["id"]: cat["name"] for cat in self.coco.dataset["categories"]}

    def evaluator(self, task: str):
        """A fresh :class:`CocoEvaluator`: ``"detection"`` (bbox AP) or ``"segmentation"`` (segm and bbox AP)."""
        if task not in TASK_IOU_TYPES:
            raise DatasetError(f"{self.name} dataset has no evaluator for task {task!r}; "
                               f"valid: {sorted(TASK_IOU_TYPES)}")
        return CocoEvaluator(self.coco, TASK_IOU_TYPES[task], self.image_ids)

    def identity(self) -> dict[str, Any]:
        """Dataset name, the annotation file's sha256 and the ordered image ids."""
        return {"name": self.name, "annotations_sha256": self.annotations_sha256, "image_ids": list(self.image_ids)}

    def label_identity(self) -> dict[str, Any]:
        """Dataset name and the SHA-256 of the category list (ids, names), which the evaluation uses."""
        return {"name": self.name, "categories_sha256": json_sha256(self.coco.dataset["categories"])}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.annotations}, {len(self)} images)"


@register_dataset
class CocoSampleDataset(CocoDataset):
    """The embedded sample: 6 CC BY / CC BY-SA COCO val2017 images shipped in the package."""

    name = "sample"

    def __init__(self, image_ids: Sequence[int] | str | Path | None = None, max_images: int | None = None) -> None:
        from vcm_plugin.sample import coco_annotations, coco_images_dir

        super().__init__(coco_images_dir(), coco_annotations(), image_ids=image_ids, max_images=max_images)
