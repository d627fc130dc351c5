"""Open Images V6 detection / instance-segmentation datasets (``openimages``, ``openimages-vcm``).

``openimages`` takes explicit files: an image list (``.lst``, one ``<ImageID>.jpg`` or
``.png`` a line), the ground-truth boxes CSV, the verified image-level labels CSV, a label
map (the evaluated classes) and optionally the instance-mask CSV and, for the original
Open Images layout whose ``LabelName`` is a MID, the class-descriptions CSV. The CSVs are
read by :mod:`vcm_plugin.evaluation.oid_annotations`; a file error there is re-raised as a
:class:`DatasetError` with the reader's message (file and line).

``openimages-vcm`` fills those files in from the MPEG VCM ``mpeg-vcm`` folder
(``subset: detection | segmentation``).

Order is the list's order; ``max_images`` keeps the first N after skipping. Every listed
image id must have a row in the boxes or the labels CSV (the MPEG VCM lists have one in
each); image ids that appear only in the CSVs are ignored. Image files are
``<images_dir>/<ImageID>.jpg`` (the Open Images originals), else the listed name (the
segmentation list says ``.png``); sizes come from the file headers (no decoding).

Evaluation: the Open Images challenge metric (:class:`~vcm_plugin.evaluation.oid.OpenImagesEvaluator`)
over the label map's classes. Task models predict COCO category ids; the evaluator names
them with the COCO names, spaces -> underscores (``cell phone`` -> ``cell_phone``, the
MPEG VCM naming), and drops classes outside the label map.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcm_plugin.datasets.base import DatasetError, IndexedDataset, Sample, file_sha256, image_size, json_sha256
from vcm_plugin.datasets.registry import register_dataset
from vcm_plugin.images.io import DATASET_IMAGE_SUFFIXES

if TYPE_CHECKING:
    from vcm_plugin.evaluation.oid import OpenImagesEvaluator

TASKS = ("detection", "segmentation")
_MAX_LISTED = 5
MASKS_UNAVAILABLE = ("the MPEG VCM 5k masks (segmentation_validation_masks_5k.csv) are not available offline; "
                     "see shared/data/openimages/mpeg-vcm/DATA.md")

#: file names in the MPEG VCM ``mpeg-vcm`` folder, per subset
VCM_FILES: dict[str, dict[str, str]] = {
    "detection": {"image_list": "detection_validation_input_5k.lst",
                  "boxes": "detection_validation_5k_bbox.csv",
                  "labels": "detection_validation_labels_5k.csv",
                  "labelmap": "labelmaps/detection-ipsl/selected_classes.txt"},
    "segmentation": {"image_list": "segmentation_validation_input_5k.lst",
                     "boxes": "segmentation_validation_bbox_5k.csv",
                     "labels": "segmentation_validation_labels_5k.csv",
                     "labelmap": "labelmaps/segmentation-dsslic/coco_label_map.pbtxt",
                     "masks": "segmentation_validation_masks_5k.csv"},
}


def read_image_list(path: str | Path) -> list[tuple[str, str]]:
    """(ImageID, listed file name) per line of a ``.lst`` file, in order.

    A line is ``<ImageID>.jpg`` / ``.jpeg`` / ``.png`` or a bare ``<ImageID>``; blank lines are
    skipped and the last line needs no newline. Duplicates and names with a folder are errors.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"image list {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"image list {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    entries: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if "/" in name or "\\" in name or name.startswith("."):
            raise DatasetError(f"{path} line {number}: {name!r} is not a bare image file name")
        s = Path(name).suffix
        stem, suffix = (name[: -len(s)], s) if s.lower() in DATASET_IMAGE_SUFFIXES else (name, "")
        if not stem:
            raise DatasetError(f"{path} line {number}: {name!r} has no image id")
        if stem in seen:
            raise DatasetError(f"{path} line {number}: image id {stem} already listed on line {seen[stem]}")
        seen[stem] = number
        entries.append((stem, name if suffix else f"{stem}.jpg"))
    if not entries:
        raise DatasetError(f"image list {path} is empty")
    return entries


@register_dataset
class OpenImagesDataset(IndexedDataset):
    """Open Images images with box (and optionally mask) ground truth and verified image-level labels.

    ``images_dir``: folder of ``<ImageID>.jpg``. ``image_list``: ``.lst`` (see :func:`read_image_list`).
    ``boxes``, ``labels``: ground-truth boxes / verified labels CSVs. ``labelmap``: the evaluated
    classes (``.txt`` one a line, or ``.pbtxt``). ``masks``: instance-mask CSV, needed only for
    ``evaluator("segmentation")``. ``class_descriptions``: ``MID,DisplayName`` CSV when the CSVs'
    ``LabelName`` is a MID. ``missing``: ``"error"`` (default) raises when a selected image file is
    absent; ``"skip"`` drops absent images (ids in :attr:`skipped_ids`, one warning with the count).
    ``max_images``: keep the first N (list order) after skipping.
    """

    name = "openimages"

    def __init__(self, images_dir: str | Path, image_list: str | Path, boxes: str | Path, labels: str | Path,
                 labelmap: str | Path, masks: str | Path | None = None,
                 class_descriptions: str | Path | None = None, missing: str = "error",
                 max_images: int | None = None) -> None:
        from vcm_plugin.evaluation.oid_annotations import (
            AnnotationError,
            read_boxes_csv,
            read_class_descriptions,
            read_label_map,
            read_labels_csv,
            read_masks_csv,
        )

        self._check_selection(missing, max_images)
        self.images_dir = Path(images_dir)
        given = {"image_list": image_list, "boxes": boxes, "labels": labels, "labelmap": labelmap, "masks": masks,
                 "class_descriptions": class_descriptions}
        self.files = {key: Path(value) for key, value in given.items() if value is not None}
        if not self.images_dir.is_dir():
            raise DatasetError(f"Open Images images folder {self.images_dir} does not exist")
        self.sha256 = {key: file_sha256(path, key.replace("_", " ") + " file") for key, path in self.files.items()}

        entries = read_image_list(self.files["image_list"])
        try:
            mid_to_name = (read_class_descriptions(self.files["class_descriptions"])
                           if class_descriptions is not None else None)
            self.class_names: list[str] = read_label_map(self.files["labelmap"])
            gt_boxes = read_boxes_csv(self.files["boxes"], self.class_names, mid_to_name)
            verified = read_labels_csv(self.files["labels"], self.class_names, mid_to_name)
            gt_masks = read_masks_csv(self.files["masks"], self.class_names, mid_to_name) if masks else None
        except AnnotationError as exc:
            raise DatasetError(f"{self.name} dataset: {exc}") from exc
        unannotated = [i for i, _ in entries if i not in gt_boxes and i not in verified]
        if unannotated:
            raise DatasetError(f"{self.files['image_list']}: {len(unannotated)} listed image id(s) have no row in "
                               f"{self.files['boxes']} nor in {self.files['labels']}: {unannotated[:_MAX_LISTED]}")

        listed = dict(entries)
        self._keep_present(list(listed), lambda i: self._image_path(i, listed[i]), str(self.files["image_list"]),
                           missing, max_images, hint="; `vcm download openimages` fetches them", count_listed=True)
        self.paths = {i: self._image_path(i, listed[i]) for i in self.image_ids}
        self.sizes: dict[str, tuple[int, int]] = {i: image_size(self.paths[i], i) for i in self.image_ids}
        keep = set(self.image_ids)
        self.gt_boxes = {i: v for i, v in gt_boxes.items() if i in keep}
        self.verified = {i: v for i, v in verified.items() if i in keep}
        self.gt_masks = None if gt_masks is None else {i: v for i, v in gt_masks.items() if i in keep}

    def _image_path(self, image_id: str, listed: str) -> Path:
        """``<ImageID>.jpg`` in images_dir, else the listed name when only that file exists."""
        jpg, other = self.images_dir / f"{image_id}.jpg", self.images_dir / listed
        return other if not jpg.is_file() and other.is_file() else jpg

    def __getitem__(self, index: int) -> Sample:
        """The sample at ``index``: annotations are its ground-truth boxes in PIXELS of the original image.

        Each annotation: ``{"label": class name, "bbox": [x1, y1, x2, y2] (px), "is_group_of": bool}``.
        """
        image_id = self.image_ids[index]
        height, width = self.sizes[image_id]
        annotations = [{"label": b.label, "bbox": [b.xmin * width, b.ymin * height, b.xmax * width, b.ymax * height],
                        "is_group_of": b.is_group_of} for b in self.gt_boxes.get(image_id, ())]
        return Sample(image_id=image_id, path=self.paths[image_id], height=height, width=width,
                      annotations=annotations)

    def evaluator(self, task: str) -> OpenImagesEvaluator:
        """A fresh Open Images challenge evaluator over this dataset's images and label-map classes.

        ``"detection"``: box mAP@0.5; ``"segmentation"``: mask mAP@0.5 (needs ``masks``).
        """
        from vcm_plugin.evaluation.oid import OpenImagesEvaluator

        if task not in TASKS:
            raise DatasetError(f"{self.name} dataset has no evaluator for task {task!r}; valid: {list(TASKS)}")
        if task == "detection":
            return OpenImagesEvaluator(self.gt_boxes, self.verified, self.class_names, iou_type="bbox")
        if self.gt_masks is None:
            raise DatasetError(f"{self.name} dataset: segmentation evaluation needs the instance-mask CSV "
                               f"(parameter 'masks'); {MASKS_UNAVAILABLE}")
        return OpenImagesEvaluator(self.gt_boxes, self.verified, self.class_names, gt_masks=self.gt_masks,
                                   iou_type="segm")

    def identity(self) -> dict[str, Any]:
        """Dataset name, the sha256 of every input file (list, boxes, labels, labelmap, masks) and the image ids."""
        return {"name": self.name, "files_sha256": dict(self.sha256), "image_ids": list(self.image_ids)}

    def label_identity(self) -> dict[str, Any]:
        """Dataset name and the SHA-256 of the label map and class descriptions (the evaluated classes)."""
        return {"name": self.name, **{f"{k}_sha256": self.sha256[k] for k in ("labelmap", "class_descriptions")
                                      if k in self.sha256}}

    def unit_identity(self, sample: Sample) -> dict[str, Any]:
        """The base identity plus the SHA-256 of the image's boxes, verified labels and masks."""
        image_id = str(sample.image_id)
        truth = {"boxes": self.gt_boxes.get(image_id, []), "verified": self.verified.get(image_id),
                 "masks": None if self.gt_masks is None else self.gt_masks.get(image_id, [])}
        return {**super().unit_identity(sample), "truth_sha256": json_sha256(truth)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.files['image_list']}, {len(self)} images)"


@register_dataset
class OpenImagesVcmDataset(OpenImagesDataset):
    """The MPEG VCM Open Images 5k subsets: the files of the ``mpeg-vcm`` folder ``root`` (see :data:`VCM_FILES`).

    ``subset``: ``"detection"`` (47 classes, ``selected_classes.txt``) or ``"segmentation"``
    (``segmentation_*`` files, 47-class ``coco_label_map.pbtxt``; masks from
    ``root/segmentation_validation_masks_5k.csv`` when present, or ``masks``).
    """

    name = "openimages-vcm"

    def __init__(self, root: str | Path, images_dir: str | Path, subset: str = "detection",
                 masks: str | Path | None = None, missing: str = "error", max_images: int | None = None) -> None:
        if subset not in VCM_FILES:
            raise DatasetError(f"{self.name} dataset: subset must be one of {list(VCM_FILES)}, got {subset!r}")
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{self.name} dataset: MPEG VCM folder {root} does not exist")
        files = {key: root / name for key, name in VCM_FILES[subset].items()}
        default_masks = files.pop("masks", None)
        if masks is None and default_masks is not None and default_masks.is_file():
            masks = default_masks
        self.subset = subset
        super().__init__(images_dir, masks=masks, missing=missing, max_images=max_images, **files)

    def evaluator(self, task: str) -> OpenImagesEvaluator:
        if task == "segmentation" and self.gt_masks is None and self.subset == "detection":
            raise DatasetError(f"{self.name} dataset: the detection subset has no instance masks; use subset "
                               f"'segmentation' with its masks CSV ({MASKS_UNAVAILABLE})")
        if task == "segmentation" and self.gt_masks is None:
            where = self.files["image_list"].parent / VCM_FILES["segmentation"]["masks"]
            raise DatasetError(f"{self.name} dataset: segmentation evaluation needs the instance-mask CSV "
                               f"{where} (or parameter 'masks'); {MASKS_UNAVAILABLE}")
        return super().evaluator(task)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "subset": self.subset}

    def label_identity(self) -> dict[str, Any]:
        return {**super().label_identity(), "subset": self.subset}
