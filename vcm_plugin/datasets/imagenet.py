"""ImageNet-style classification datasets (``imagenet``) and the machinery CIFAR-10 shares.

Two layouts are read from a folder ``root``:

* **labels CSV** (``labels``, default ``root/labels.csv``): one row per image, a ``file``
  column (the path relative to ``root``) and ``class_index`` (0..num_classes-1) and/or
  ``wnid`` (mapped through the classes CSV); when both are given they must agree.
* **class sub-folders** (no labels CSV): ``root/<wnid>/<file>`` with the image suffixes
  ``.jpeg``, ``.jpg``, ``.png`` (any case). Class indices come from the classes CSV; without
  one, from the rank of the wnid among the SORTED folder names (torchvision's ``ImageFolder``
  rule). That is torchvision's ImageNet order only when all 1,000 wnid folders exist, so a
  warning is given when fewer do: pass ``classes`` to score a 1000-class model.

The classes CSV (``classes``, default ``root/classes.csv`` when it exists) has ``index,wnid``
and optionally ``name`` / ``synset_words``; indices must be 0..N-1, each once. Without it a
labels CSV is taken to use the 1,000 ImageNet-1k classes (``num_classes`` 1000, no names).

Samples: ``image_id`` is the file path relative to ``root`` (a ``/``-separated string);
``annotations`` is ``[{"class_index": int}]``; height and width come from the image header
(no decoding; EXIF rotations by 90 degrees swap them, as :func:`~vcm_plugin.images.read_image`
does). Order: ascending image id, or the order of ``image_ids``; ``max_images`` keeps the
first N. ``missing``: ``"error"`` (default) raises naming the absent files, ``"skip"`` drops
them with one warning (their ids in :attr:`skipped_ids`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vcm_plugin.datasets.base import DatasetError, IndexedDataset, Sample, file_sha256, image_size, json_sha256
from vcm_plugin.datasets.folder import read_id_lines
from vcm_plugin.datasets.registry import register_dataset
from vcm_plugin.images.io import DATASET_IMAGE_SUFFIXES

IMAGENET_CLASSES = 1000
TASK = "classification"
_MAX_LISTED = 5


class Entry(NamedTuple):
    """One labelled image: its file and class index."""

    path: Path
    class_index: int


class ClassInfo(NamedTuple):
    """One class of a classes CSV: index, wnid (or other class key) and display name."""

    index: int
    wnid: str
    name: str


def read_csv_rows(path: Path, what: str, required: Sequence[str]) -> tuple[list[tuple[int, dict[str, str]]], str]:
    """(line number, row) pairs of a CSV with a header, and the file's SHA-256.

    Raises :class:`DatasetError` naming the file when it is unreadable, empty, or lacks one of
    the ``required`` columns (every group ``"a|b"`` needs at least one of its names).
    """
    sha = file_sha256(path, what)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{what} {path} cannot be read as CSV: {exc}") from exc
    for group in required:
        if not any(name in columns for name in group.split("|")):
            raise DatasetError(f"{what} {path} has no {' or '.join(repr(n) for n in group.split('|'))} column "
                               f"(header: {columns})")
    if not rows:
        raise DatasetError(f"{what} {path} has no rows")
    return rows, sha


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path} line {line}: {column} {value!r} is not an integer") from None


def read_classes(path: Path) -> tuple[list[ClassInfo], str]:
    """The classes CSV (``index,wnid[,name][,synset_words]``) in index order, and its SHA-256."""
    rows, sha = read_csv_rows(path, "classes file", ("index", "wnid"))
    classes: dict[int, ClassInfo] = {}
    wnids: dict[str, int] = {}
    for line, row in rows:
        index = _int(row["index"], path, line, "index")
        wnid = row["wnid"]
        if not wnid:
            raise DatasetError(f"{path} line {line}: empty wnid")
        if index in classes or wnid in wnids:
            raise DatasetError(f"{path} line {line}: class index {index} or wnid {wnid!r} listed twice")
        name = row.get("name") or (row.get("synset_words") or "").split(",")[0].strip() or wnid
        classes[index] = ClassInfo(index, wnid, name)
        wnids[wnid] = index
    if sorted(classes) != list(range(len(classes))):
        gaps = sorted(set(range(len(classes))) - set(classes))[:_MAX_LISTED]
        raise DatasetError(f"classes file {path}: indices must be 0..{len(classes) - 1}, each once; "
                           f"missing {gaps}")
    return [classes[i] for i in range(len(classes))], sha


def read_labels(path: Path, root: Path, num_classes: int, wnids: Sequence[str] | None,
                names: Sequence[str] | None = None) -> tuple[dict[str, Entry], str]:
    """Image id -> :class:`Entry` from a labels CSV (``file`` and ``class_index`` and/or ``wnid``), and its SHA-256.

    A class id outside ``0..num_classes-1``, a wnid not among ``wnids``, a ``class_index``
    that disagrees with the ``wnid`` of the same row (or, when ``names`` is given, with its
    ``class_name``), and a file listed twice raise :class:`DatasetError` naming the file,
    the line and the id.
    """
    rows, sha = read_csv_rows(path, "labels file", ("file", "class_index|wnid"))
    by_wnid = {w: i for i, w in enumerate(wnids)} if wnids is not None else None
    entries: dict[str, Entry] = {}
    for line, row in rows:
        if not row["file"]:
            raise DatasetError(f"labels file {path} line {line}: empty file name")
        image_id = Path(row["file"]).as_posix()
        index = _int(row["class_index"], path, line, "class_index") if row.get("class_index") else None
        wnid = row.get("wnid") or None
        if index is not None and not 0 <= index < num_classes:
            raise DatasetError(f"labels file {path} line {line}: class id {index} is outside 0..{num_classes - 1}")
        if wnid is not None and by_wnid is not None:
            if wnid not in by_wnid:
                raise DatasetError(f"labels file {path} line {line}: class id (wnid) {wnid!r} is not in the "
                                   f"{num_classes} classes")
            if index is not None and by_wnid[wnid] != index:
                raise DatasetError(f"labels file {path} line {line}: class_index {index} disagrees with wnid "
                                   f"{wnid!r} (class {by_wnid[wnid]})")
            index = by_wnid[wnid]
        if index is None:
            raise DatasetError(f"labels file {path} line {line}: no class_index (a wnid needs a classes file)")
        if names is not None and row.get("class_name") and row["class_name"] != names[index]:
            raise DatasetError(f"labels file {path} line {line}: class_name {row['class_name']!r} disagrees with "
                               f"class_index {index} ({names[index]!r})")
        if image_id in entries:
            raise DatasetError(f"labels file {path} line {line}: file {image_id!r} listed twice")
        entries[image_id] = Entry(root / image_id, index)
    return entries, sha


def scan_class_folders(folder: Path) -> dict[str, list[str]]:
    """Class folder name -> sorted image file names in it (suffixes :data:`DATASET_IMAGE_SUFFIXES`)."""
    out: dict[str, list[str]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(f.name for f in sub.iterdir() if f.suffix.lower() in DATASET_IMAGE_SUFFIXES and not f.is_dir())
        if names:
            out[sub.name] = names
    return out


class SingleLabelDataset(IndexedDataset):
    """A single-label classification dataset: image id -> (file, class index); see the module docstring.

    Subclasses build :attr:`entries` and the class list, then call :meth:`_choose`.
    """

    root: Path
    entries: dict[str, Entry]
    num_classes: int
    class_names: list[str] | None
    labels_sha256: str | None = None
    classes_sha256: str | None = None

    def _choose(self, image_ids: Sequence[str] | str | os.PathLike[str] | None, max_images: int | None,
                missing: str, origin: str) -> None:
        """Set :attr:`image_ids` from the selection parameters (``origin`` names the label source)."""
        self._check_selection(missing, max_images)
        self._keep_present(self._select(image_ids, origin), lambda i: self.entries[i].path, origin, missing, max_images)
        self._sizes: dict[str, tuple[int, int]] = {}

    def _select(self, image_ids: Sequence[str] | str | os.PathLike[str] | None, origin: str) -> list[str]:
        if image_ids is None:
            return sorted(self.entries)
        if isinstance(image_ids, (str, os.PathLike)):
            wanted, where = [text for _, text in read_id_lines(image_ids)], f"image id list {image_ids}"
        else:
            wanted, where = [str(i) for i in image_ids], f"{self.name} dataset image_ids"
        by_name: dict[str, list[str]] = {}
        for key in self.entries:
            by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
        out: list[str] = []
        unknown: list[str] = []
        for raw in wanted:
            key = Path(raw).as_posix()
            if key not in self.entries:
                matches = by_name.get(key, [])
                if len(matches) > 1:
                    raise DatasetError(f"{where}: file name {raw!r} is ambiguous ({matches[:_MAX_LISTED]}); "
                                       "give the path relative to the dataset root")
                if not matches:
                    unknown.append(raw)
                    continue
                key = matches[0]
            out.append(key)
        return self._check_listed(where, out, unknown, origin)

    def __getitem__(self, index: int) -> Sample:
        """The sample at ``index``: annotations ``[{"class_index": int}]``, size from the file header."""
        image_id = self.image_ids[index]
        entry = self.entries[image_id]
        if image_id not in self._sizes:
            self._sizes[image_id] = image_size(entry.path, image_id)
        height, width = self._sizes[image_id]
        return Sample(image_id=image_id, path=entry.path, height=height, width=width,
                      annotations=[{"class_index": entry.class_index}])

    def evaluator(self, task: str):
        """A fresh :class:`~vcm_plugin.evaluation.classification.ClassificationEvaluator` for ``"classification"``."""
        from vcm_plugin.evaluation.classification import ClassificationEvaluator

        if task != TASK:
            raise DatasetError(f"{self.name} dataset has no evaluator for task {task!r}; valid: [{TASK!r}]")
        return ClassificationEvaluator(self.num_classes, self.class_names)

    def identity(self) -> dict[str, Any]:
        """Dataset name, the labels and classes files' SHA-256 (None: not used) and the ordered image ids."""
        return {"name": self.name, "labels_sha256": self.labels_sha256, "classes_sha256": self.classes_sha256,
                "num_classes": self.num_classes, "image_ids": list(self.image_ids)}

    def label_identity(self) -> dict[str, Any]:
        """Dataset name, the class list's SHA-256 and count (a sample's own label is in its annotations)."""
        return {"name": self.name, "classes_sha256": self.classes_sha256, "num_classes": self.num_classes,
                "class_names_sha256": json_sha256(self.class_names)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root}, {len(self)} images, {self.num_classes} classes)"


@register_dataset
class ImageNetDataset(SingleLabelDataset):
    """ImageNet-style single-label images: a labels CSV or class sub-folders (see the module docstring).

    ``root``: the dataset folder. ``labels``: the labels CSV (default ``root/labels.csv``; absent:
    the class sub-folder layout). ``classes``: the classes CSV (default ``root/classes.csv`` if it
    exists). ``image_ids``: a list of image ids (paths relative to ``root``, or bare file names
    when unique) or a text file of them. ``max_images``: keep the first N. ``missing``:
    ``"error"`` or ``"skip"``. Class names: :attr:`class_names` (None when unknown).
    """

    name = "imagenet"
    _folder_names: list[str] | None = None  # the class list of the folder layout without a classes CSV

    def __init__(self, root: str | Path, labels: str | Path | None = None, classes: str | Path | None = None,
                 image_ids: Sequence[str] | str | Path | None = None, max_images: int | None = None,
                 missing: str = "error") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.name} dataset: folder {self.root} does not exist")
        default_classes = self.root / "classes.csv"
        classes_path = Path(classes) if classes is not None else (default_classes if default_classes.is_file()
                                                                   else None)
        class_list: list[ClassInfo] | None = None
        if classes_path is not None:
            class_list, self.classes_sha256 = read_classes(classes_path)
        labels_path = Path(labels) if labels is not None else self.root / "labels.csv"
        if labels is not None or labels_path.is_file():
            self.num_classes = len(class_list) if class_list is not None else IMAGENET_CLASSES
            wnids = [c.wnid for c in class_list] if class_list is not None else None
            self.entries, self.labels_sha256 = read_labels(labels_path, self.root, self.num_classes, wnids)
            origin = str(labels_path)
        else:
            self.entries = self._scan(class_list, classes_path)
            origin = f"the class folders of {self.root}"
        self.class_names = [c.name for c in class_list] if class_list is not None else self._folder_names
        self._choose(image_ids, max_images, missing, origin)

    def _scan(self, class_list: list[ClassInfo] | None, classes_path: Path | None) -> dict[str, Entry]:
        folders = scan_class_folders(self.root)
        if not folders:
            raise DatasetError(f"{self.name} dataset: {self.root} has no labels.csv and no class sub-folders "
                               f"with images ({', '.join(DATASET_IMAGE_SUFFIXES)})")
        if class_list is None:
            if len(folders) != IMAGENET_CLASSES:
                warnings.warn(f"{self.name} dataset: {self.root} has {len(folders)} class folders, not "
                              f"{IMAGENET_CLASSES}: class indices are ranks among these folders and do not match a "
                              "1000-class ImageNet model; pass 'classes' (a classes CSV) for that", stacklevel=3)
            index = {wnid: i for i, wnid in enumerate(folders)}
            self.num_classes, self._folder_names = len(folders), list(folders)
            self.classes_sha256 = hashlib.sha256("\n".join(folders).encode()).hexdigest()
        else:
            index = {c.wnid: c.index for c in class_list}
            unknown = [w for w in folders if w not in index]
            if unknown:
                raise DatasetError(f"{self.name} dataset: class folder(s) {unknown[:_MAX_LISTED]} of {self.root} "
                                   f"are not wnids of classes file {classes_path}")
            self.num_classes = len(class_list)
        return {f"{wnid}/{name}": Entry(self.root / wnid / name, index[wnid])
                for wnid, names in folders.items() for name in names}
