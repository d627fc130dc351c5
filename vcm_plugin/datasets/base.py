"""The dataset contract: samples with an id, an image loader and annotations.

A dataset knows which evaluator scores a task on it (:meth:`Dataset.evaluator`).
Sample order is deterministic (sorted by image id unless a list fixes the order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin import hashing
from vcm_plugin.errors import VcmError


class DatasetError(VcmError, ValueError):
    """A dataset's files are missing or inconsistent (names the file and image id)."""


_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
_MAX_LISTED = 5  # image ids or files named in one message
logger = logging.getLogger(__name__)  # the CLI shows warnings as one line: "vcm: warning: ..."


def file_sha256(path: Path, what: str) -> str:
    """Hex SHA-256 of a file; DatasetError naming it (as ``what``) when it cannot be read."""
    try:
        return hashing.cached_file_sha256(path, persist=True)  # once per file state, large files across runs
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def json_sha256(value: Any) -> str:
    """Hex SHA-256 of a canonical JSON form of ``value`` (sorted keys; dataclasses, sets, numpy scalars allowed)."""
    return hashing.json_sha256(value, default=_plain)


def image_size(path: Path, image_id: str) -> tuple[int, int]:
    """(height, width) in pixels from the image header, after the EXIF orientation (no decoding)."""
    from PIL import ExifTags, Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation) if image.format in ("JPEG", "TIFF", "WEBP") \
                else None
    except FileNotFoundError:
        raise DatasetError(f"image id {image_id}: image file {path} does not exist") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"image id {image_id}: {path} is not a readable image: {exc}") from exc
    return (width, height) if orientation in _SWAPPING_ORIENTATIONS else (height, width)


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: ``image_id`` (the dataset's id), its file, size in pixels."""

    image_id: int | str
    path: Path
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list, compare=False, repr=False)

    def load(self) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB; errors name the file and the image id."""
        from vcm_plugin.images.io import read_image

        try:
            image = read_image(self.path)
        except VcmError as exc:
            raise DatasetError(f"image id {self.image_id}: {exc}") from exc
        if image.shape[:2] != (self.height, self.width):
            raise DatasetError(f"image id {self.image_id}: {self.path} is {image.shape[1]}x{image.shape[0]}, "
                               f"the annotations say {self.width}x{self.height}")
        return image


class Dataset(ABC):
    """A finite, ordered collection of :class:`Sample`."""

    name: str

    @abstractmethod
    def __iter__(self) -> Iterator[Sample]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def evaluator(self, task: str):
        """A fresh evaluator (reset/process/evaluate) for ``task`` on this dataset."""

    def identity(self) -> dict[str, Any]:
        """What determines this dataset's selection of samples (the run as a whole)."""
        return {"name": self.name}

    def label_identity(self) -> dict[str, Any]:
        """What every sample's results depend on, whatever the selection: name, category set or label map."""
        return {"name": self.name}

    def unit_identity(self, sample: Sample) -> dict[str, Any]:
        """What determines the stored results of ``sample`` (part of its unit keys), not the other samples.

        :meth:`label_identity`, the image id and size, the SHA-256 of the image file (None
        when unreadable: the unit fails, and is recomputed once the file is back) and of the
        sample's annotations. Subclasses add per-image ground truth kept outside ``annotations``.
        """
        image_sha256 = None
        with contextlib.suppress(OSError):
            image_sha256 = hashing.cached_file_sha256(sample.path)  # per process and file state
        return {**self.label_identity(), "image": str(sample.image_id), "size": [sample.height, sample.width],
                "image_sha256": image_sha256, "annotations_sha256": json_sha256(sample.annotations)}


class IndexedDataset(Dataset):
    """A dataset whose samples are addressed by position in ``image_ids`` (its fixed order)."""

    image_ids: list

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[Sample]:
        return map(self.__getitem__, range(len(self.image_ids)))

    def _check_selection(self, missing: str, max_images: int | None) -> None:
        """DatasetError unless ``missing`` is ``"error"`` or ``"skip"``, ``max_images`` None or a positive integer."""
        if missing not in ("error", "skip"):
            raise DatasetError(f"{self.name} dataset: missing must be 'error' or 'skip', got {missing!r}")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                       or max_images < 1):
            raise DatasetError(f"{self.name} dataset: max_images must be a positive integer, got {max_images!r}")

    @staticmethod
    def _check_listed(where: str, ids: list, unknown: list, source: Any) -> list:
        """``ids``; DatasetError naming ``where`` when some are ``unknown`` (not in ``source``) or listed twice."""
        if unknown:
            raise DatasetError(f"{where}: image id(s) {unknown[:_MAX_LISTED]} ({len(unknown)} in all) are not in "
                               f"{source}")
        seen: set = set()
        twice = list(dict.fromkeys(i for i in ids if i in seen or seen.add(i)))  # type: ignore[func-returns-value]
        if twice:
            raise DatasetError(f"{where}: image id(s) {twice[:_MAX_LISTED]} listed more than once")
        return ids

    def _limit(self, order: list, max_images: int | None) -> list:
        """The first ``max_images`` of ``order`` (subclasses may choose differently)."""
        return order[:max_images]

    def _keep_present(self, order: list, path: Callable[[Any], Path], where: str, missing: str,
                      max_images: int | None, hint: str = "", count_listed: bool = False) -> None:
        """Set :attr:`image_ids` to the :meth:`_limit` of ``order`` without the ids whose file ``path(id)`` is absent.

        ``missing="error"``: absent files among the ids :meth:`_limit` keeps raise a DatasetError naming
        them (``where``: the list they come from; ``hint`` ends the message); ``"skip"``: they are dropped
        (:attr:`skipped_ids`) with one warning (``count_listed``: it says "N of <listed>").
        """
        if missing == "error":
            order = self._limit(order, max_images)
        absent = [i for i in order if not path(i).is_file()]
        if absent and missing == "error":
            listed = ", ".join(f"{path(i)} (image id {i})" for i in absent[:_MAX_LISTED])
            raise DatasetError(f"{len(absent)} image file(s) listed in {where} are missing: {listed}"
                               + (" ..." if len(absent) > _MAX_LISTED else "") + f" (missing='skip' drops them{hint})")
        if absent:
            count = f"{len(absent)} of {len(order)}" if count_listed else len(absent)
            logger.warning(f"{self.name} dataset: skipped {count} image(s) listed in {where} but missing "
                           f"(first: {[str(path(i)) for i in absent[:_MAX_LISTED]]})")
        gone = set(absent)
        self.image_ids, self.skipped_ids = self._limit([i for i in order if i not in gone], max_images), absent
        if not self.image_ids:
            raise DatasetError(f"{self.name} dataset from {where}: no image selected")
