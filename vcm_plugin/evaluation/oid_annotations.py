"""Readers (and writers) for Open Images annotation, label-map and prediction files.

Layouts (columns are found by HEADER name, in any order; extra columns are allowed):

* boxes: ``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf`` -> :func:`read_boxes_csv`
* verified image-level labels: ``ImageID,LabelName,Confidence`` (1 verified present,
  0 verified absent) -> :func:`read_labels_csv`
* instance masks: ``ImageID,LabelName,ImageWidth,ImageHeight,XMin,YMin,XMax,YMax,IsGroupOf,Mask[,MaskPath]``
  where ``Mask`` = base64(zlib(COCO compressed-RLE counts string)) -> :func:`read_masks_csv`
  (the mask-PNG variant, ``MaskPath`` without ``Mask``, is not supported)
* box predictions: ``ImageID,LabelName,Score,XMin,YMin,XMax,YMax`` -> :func:`read_detections_csv`
* mask predictions: ``ImageID,ImageWidth,ImageHeight,LabelName,Score,Mask`` -> :func:`read_mask_detections_csv`
* label maps: ``.txt`` (one name a line), TF ``.pbtxt`` (``item { name: ... id: ... }``) or the
  Open Images ``class-descriptions*.csv`` (``MID,DisplayName``) -> :func:`read_label_map`,
  :func:`read_class_descriptions`

Coordinates are NORMALISED to [0, 1] of the original image. ``LabelName`` is a class name
(MPEG VCM files: ``cell_phone``) or, in the original Open Images files, a MID (``/m/01g317``)
translated through ``mid_to_name``. Every error is an :class:`AnnotationError` naming the file
and the 1-based line.

Choices: ground-truth coordinates up to ``COORD_TOLERANCE`` outside [0, 1] are clipped, further
out is an error; zero-area ground-truth boxes are KEPT (they count as ground truth but can never
be matched, exactly as in the official evaluator); ``IsGroupOf`` is an integer, any non-zero
value (Open Images writes -1 for "unknown") is group-of, as ``astype(bool)`` makes it in the
official code; an image-level label given both as 1 and 0 is kept in both sets (the metric only
needs "verified").
"""

from __future__ import annotations

import base64
import binascii
import csv
import re
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcm_plugin.evaluation.base import EvaluationError, finite_float

COORD_TOLERANCE = 1e-6  # normalised ground-truth coordinates may exceed [0, 1] by this much (then clipped)

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
MASK_COLUMNS = ("ImageID", "LabelName", "ImageWidth", "ImageHeight", "XMin", "YMin", "XMax", "YMax", "IsGroupOf",
                "Mask")
DETECTION_COLUMNS = ("ImageID", "LabelName", "Score", "XMin", "YMin", "XMax", "YMax")
MASK_DETECTION_COLUMNS = ("ImageID", "ImageWidth", "ImageHeight", "LabelName", "Score", "Mask")


class AnnotationError(EvaluationError):
    """An annotation / label-map / prediction file is missing or malformed (names the file and line)."""


@dataclass(frozen=True)
class GTBox:
    """A ground-truth box: class name, normalised ``xmin, ymin, xmax, ymax`` in [0, 1], group-of flag."""

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    is_group_of: bool = False


@dataclass(frozen=True)
class VerifiedLabels:
    """The classes verified present (``positive``) and verified absent (``negative``) on one image."""

    positive: frozenset[str] = frozenset()
    negative: frozenset[str] = frozenset()

    @property
    def verified(self) -> frozenset[str]:
        """Every class verified on the image (either way): the classes the metric evaluates there."""
        return self.positive | self.negative


@dataclass(frozen=True)
class GTMask:
    """A ground-truth instance: normalised box, group-of flag and a COCO RLE mask of ``height`` x ``width`` px.

    ``counts`` is the COCO compressed-RLE string, or None for a box without a mask.
    """

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    is_group_of: bool
    width: int
    height: int
    counts: str | None
    mask_path: str = ""

    @property
    def rle(self) -> dict[str, Any] | None:
        """The mask as a pycocotools RLE dict ``{"size": [h, w], "counts": str}`` (None without a mask)."""
        return None if self.counts is None else {"size": [self.height, self.width], "counts": self.counts}


@dataclass(frozen=True)
class DetBox:
    """A predicted box: class name, score, normalised ``xmin, ymin, xmax, ymax``."""

    label: str
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class DetMask:
    """A predicted instance mask: class name, score, COCO compressed-RLE ``counts`` of ``height`` x ``width`` px."""

    label: str
    score: float
    width: int
    height: int
    counts: str

    @property
    def rle(self) -> dict[str, Any]:
        """The mask as a pycocotools RLE dict ``{"size": [h, w], "counts": str}``."""
        return {"size": [self.height, self.width], "counts": self.counts}


# -- mask strings -------------------------------------------------------------------------
def decode_mask_string(text: str) -> str:
    """The COCO compressed-RLE counts string inside an Open Images ``Mask`` cell (base64 of zlib).

    Raises ``ValueError`` on a cell that is not base64 / zlib / ASCII.
    """
    try:
        return zlib.decompress(base64.b64decode(text.strip(), validate=True)).decode("ascii")
    except (binascii.Error, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a base64(zlib(COCO RLE)) mask: {exc}") from exc


def encode_mask_string(counts: str | bytes) -> str:
    """The Open Images ``Mask`` cell for a COCO compressed-RLE counts string: base64(zlib(counts))."""
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


# -- CSV plumbing -------------------------------------------------------------------------
def _rows(path: str | Path, required: Iterable[str], optional: Iterable[str] = ()) -> Iterator[tuple[str, dict]]:
    """(``file:line``, {column: cell}) for each non-blank data row; checks the header first."""
    path = Path(path)
    required = tuple(required)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip() for cell in next(reader, [])]
            if not header:
                raise AnnotationError(f"{path}:1: empty file; expected a header with {', '.join(required)}")
            missing = [c for c in required if c not in header]
            if missing:
                raise AnnotationError(f"{path}:1: missing column(s) {', '.join(missing)}; the header is "
                                      f"{','.join(header)}")
            index = {c: header.index(c) for c in (*required, *optional) if c in header}
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    raise AnnotationError(f"{path}:{reader.line_num}: {len(row)} fields, the header has "
                                          f"{len(header)}")
                yield f"{path}:{reader.line_num}", {c: row[i].strip() for c, i in index.items()}
        except csv.Error as exc:
            raise AnnotationError(f"{path}:{reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise AnnotationError(f"{path}: not UTF-8 text ({exc})") from exc


def _records(path: str | Path, required: Iterable[str], class_names: Collection[str] | None,
             mid_to_name: Mapping[str, str] | None,
             optional: Iterable[str] = ()) -> Iterator[tuple[str, dict, str, str]]:
    """(``file:line``, row, ImageID, class name) of each row of an annotation or prediction CSV."""
    for where, row in _rows(path, required, optional):
        if not row["ImageID"]:
            raise AnnotationError(f"{where}: empty ImageID")
        yield where, row, row["ImageID"], _label(row, where, class_names, mid_to_name)


def _number(row: dict, column: str, where: str) -> float:
    return finite_float(row[column], f"{where}: {column}", AnnotationError)


def _integer(row: dict, column: str, where: str) -> int:
    value = _number(row, column, where)
    if not value.is_integer():
        raise AnnotationError(f"{where}: {column} {row[column]!r} is not an integer")
    return int(value)


def _label(row: dict, where: str, class_names: Collection[str] | None, mid_to_name: Mapping[str, str] | None) -> str:
    name = raw = row["LabelName"]
    if not raw:
        raise AnnotationError(f"{where}: empty LabelName")
    if mid_to_name is not None:
        if raw not in mid_to_name:
            raise AnnotationError(f"{where}: LabelName {raw!r} is not in the class descriptions "
                                  f"({len(mid_to_name)} MIDs)")
        name = mid_to_name[raw]
    if class_names is not None and name not in class_names:
        raise AnnotationError(f"{where}: class {name!r} is not in the label map ({len(class_names)} classes)")
    return name


def _box(row: dict, where: str, clip: bool) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a row; ``clip``: ground truth, checked against [0, 1] and clipped."""
    xmin, ymin, xmax, ymax = (_number(row, c, where) for c in ("XMin", "YMin", "XMax", "YMax"))
    if clip:
        for column, value in zip(("XMin", "YMin", "XMax", "YMax"), (xmin, ymin, xmax, ymax)):
            if not -COORD_TOLERANCE <= value <= 1.0 + COORD_TOLERANCE:
                raise AnnotationError(f"{where}: {column} {row[column]} is outside [0, 1] "
                                      "(coordinates are normalised to the image size)")
        xmin, ymin, xmax, ymax = (min(max(v, 0.0), 1.0) for v in (xmin, ymin, xmax, ymax))
    if xmin > xmax or ymin > ymax:
        raise AnnotationError(f"{where}: inverted box (XMin {row['XMin']}, XMax {row['XMax']}, "
                              f"YMin {row['YMin']}, YMax {row['YMax']})")
    return xmin, ymin, xmax, ymax


def _mask(row: dict, where: str, required: bool) -> tuple[int, int, str | None]:
    """(ImageWidth, ImageHeight, the ``Mask`` cell's RLE counts); None for an empty cell unless ``required``."""
    width, height = _integer(row, "ImageWidth", where), _integer(row, "ImageHeight", where)
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{where}: image size {width}x{height} is not positive")
    if not row["Mask"] and not required:
        return width, height, None
    try:
        return width, height, decode_mask_string(row["Mask"])
    except ValueError as exc:
        raise AnnotationError(f"{where}: Mask: {exc}") from None


# -- ground truth ---------------------------------------------------------------------------
def read_boxes_csv(path: str | Path, class_names: Collection[str] | None = None,
                   mid_to_name: Mapping[str, str] | None = None) -> dict[str, list[GTBox]]:
    """Ground-truth boxes per image id from ``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf``.

    ``class_names``: when given, a class outside it is an error (file:line). ``mid_to_name``:
    translate Open Images MIDs in ``LabelName`` to names (unknown MID: error). Boxes keep file order.
    """
    boxes: dict[str, list[GTBox]] = {}
    for where, row, image_id, label in _records(path, BOX_COLUMNS, class_names, mid_to_name):
        box = _box(row, where, clip=True)
        boxes.setdefault(image_id, []).append(GTBox(label, *box, _integer(row, "IsGroupOf", where) != 0))
    return boxes


def read_labels_csv(path: str | Path, class_names: Collection[str] | None = None,
                    mid_to_name: Mapping[str, str] | None = None) -> dict[str, VerifiedLabels]:
    """Verified image-level labels per image id from ``ImageID,LabelName,Confidence`` (1 present, 0 absent)."""
    positive: dict[str, set[str]] = {}
    negative: dict[str, set[str]] = {}
    for where, row, image_id, label in _records(path, LABEL_COLUMNS, class_names, mid_to_name):
        confidence = _number(row, "Confidence", where)
        if confidence not in (0.0, 1.0):
            raise AnnotationError(f"{where}: Confidence {row['Confidence']!r} is neither 1 (verified "
                                  "present) nor 0 (verified absent)")
        positive.setdefault(image_id, set())
        negative.setdefault(image_id, set())
        (positive if confidence == 1.0 else negative)[image_id].add(label)
    return {i: VerifiedLabels(frozenset(positive[i]), frozenset(negative[i])) for i in positive}


def read_masks_csv(path: str | Path, class_names: Collection[str] | None = None,
                   mid_to_name: Mapping[str, str] | None = None) -> dict[str, list[GTMask]]:
    """Ground-truth instance masks per image id from the Open Images segmentation CSV.

    ``Mask`` (base64 of zlib of a COCO compressed-RLE string) becomes :attr:`GTMask.counts`; an
    empty ``Mask`` cell gives a box without a mask (``counts`` None). The RLE is checked for the
    stated ``ImageHeight`` x ``ImageWidth`` size (pycocotools ``area``), not decoded to pixels.
    """
    from pycocotools import mask as mask_utils

    masks: dict[str, list[GTMask]] = {}
    for where, row, image_id, label in _records(path, MASK_COLUMNS, class_names, mid_to_name, ("MaskPath",)):
        box = _box(row, where, clip=True)
        group = _integer(row, "IsGroupOf", where) != 0
        width, height, counts = _mask(row, where, required=False)
        if counts is not None and int(mask_utils.area({"size": [height, width], "counts": counts})) > width * height:
            raise AnnotationError(f"{where}: Mask covers more than the stated {width}x{height} image")
        masks.setdefault(image_id, []).append(GTMask(label, *box, group, width, height, counts,
                                                     row.get("MaskPath", "")))
    return masks


# -- label maps -----------------------------------------------------------------------------
_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)
_PBTXT_NAME = re.compile(r"(?<![A-Za-z_])name\s*:\s*[\"']([^\"']*)[\"']")
_PBTXT_ID = re.compile(r"(?<![A-Za-z_])id\s*:\s*(-?\d+)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """MID -> display name from an Open Images ``class-descriptions*.csv`` (``MID,DisplayName``, header optional)."""
    mapping: dict[str, str] = {}
    path = Path(path)
    reader = csv.reader(_read_text(path).splitlines())
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise AnnotationError(f"{path}:{reader.line_num}: expected MID,DisplayName")
        mid, name = row[0].strip(), row[1].strip()
        if reader.line_num == 1 and not mid.startswith("/"):
            continue  # a header line (LabelName,DisplayName)
        if mid in mapping:
            raise AnnotationError(f"{path}:{reader.line_num}: MID {mid!r} appears twice")
        mapping[mid] = name
    if not mapping:
        raise AnnotationError(f"{path}: no MID,DisplayName rows")
    return mapping


def read_label_map(path: str | Path) -> list[str]:
    """The class names of a label map, in its order (``.pbtxt``: by ``id``).

    ``.pbtxt``: each ``item``'s ``name`` (what the annotation CSVs use; ``display_name`` is
    ignored); ``.csv``: the display names of an Open Images class-descriptions file (pair it with
    :func:`read_class_descriptions` to translate MIDs); anything else: one name per line
    (blank lines skipped, no trailing newline needed). Duplicate or missing names are errors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = list(read_class_descriptions(path).values())
    elif suffix == ".pbtxt":
        names = _pbtxt_names(path, _read_text(path))
    else:
        names = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not names:
        raise AnnotationError(f"{path}: no class names")
    twice = [name for i, name in enumerate(names) if name in names[:i]]
    if twice:
        raise AnnotationError(f"{path}: class {twice[0]!r} appears twice")
    return names


def _pbtxt_names(path: Path, text: str) -> list[str]:
    items = []
    for match in _PBTXT_ITEM.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        body = match.group(1)
        name, ident = _PBTXT_NAME.search(body), _PBTXT_ID.search(body)
        if name is None or ident is None:
            raise AnnotationError(f"{path}:{line}: item without a quoted name or an integer id")
        items.append((int(ident.group(1)), line, name.group(1)))
    ids: dict[int, int] = {}
    for ident, line, _ in items:
        if ident in ids:
            raise AnnotationError(f"{path}:{line}: id {ident} already used on line {ids[ident]}")
        ids[ident] = line
    return [name for _, _, name in sorted(items)]


# -- predictions ------------------------------------------------------------------------------
def read_detections_csv(path: str | Path, class_names: Collection[str] | None = None,
                        mid_to_name: Mapping[str, str] | None = None) -> dict[str, list[DetBox]]:
    """Box predictions per image id from ``ImageID,LabelName,Score,XMin,YMin,XMax,YMax`` (normalised).

    Coordinates are not range-checked (a prediction may leave the image); non-finite numbers and
    inverted boxes are errors. ``class_names`` / ``mid_to_name`` as in :func:`read_boxes_csv`.
    """
    detections: dict[str, list[DetBox]] = {}
    for where, row, image_id, label in _records(path, DETECTION_COLUMNS, class_names, mid_to_name):
        score = _number(row, "Score", where)
        detections.setdefault(image_id, []).append(DetBox(label, score, *_box(row, where, clip=False)))
    return detections


def _write_csv(path: str | Path, columns: Iterable[str], rows: Iterable[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def write_detections_csv(path: str | Path, detections: Mapping[str, Iterable[DetBox]]) -> None:
    """Write box predictions in the ``ImageID,LabelName,Score,XMin,YMin,XMax,YMax`` layout (full precision)."""
    _write_csv(path, DETECTION_COLUMNS, ([image_id, d.label, *(repr(float(v)) for v in (d.score, d.xmin, d.ymin,
                                                                                         d.xmax, d.ymax))]
                                         for image_id, boxes in detections.items() for d in boxes))


def read_mask_detections_csv(path: str | Path, class_names: Collection[str] | None = None,
                             mid_to_name: Mapping[str, str] | None = None) -> dict[str, list[DetMask]]:
    """Mask predictions per image id from ``ImageID,ImageWidth,ImageHeight,LabelName,Score,Mask``."""
    detections: dict[str, list[DetMask]] = {}
    for where, row, image_id, label in _records(path, MASK_DETECTION_COLUMNS, class_names, mid_to_name):
        score = _number(row, "Score", where)
        detections.setdefault(image_id, []).append(DetMask(label, score, *_mask(row, where, required=True)))
    return detections


def write_mask_detections_csv(path: str | Path, detections: Mapping[str, Iterable[DetMask]]) -> None:
    """Write mask predictions in the ``ImageID,ImageWidth,ImageHeight,LabelName,Score,Mask`` layout."""
    _write_csv(path, MASK_DETECTION_COLUMNS, ([image_id, d.width, d.height, d.label, repr(float(d.score)),
                                               encode_mask_string(d.counts)]
                                              for image_id, masks in detections.items() for d in masks))
