"""The dataset contract: samples with an id, an image loader and annotations.

A dataset knows which evaluator scores a task on it (:meth:`Dataset.evaluator`).
Sample order is deterministic (sorted by image id unless a list fixes the order).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin import hashing
from vcm_plugin.errors import VcmError


class DatasetError(VcmError, ValueError):
    """A dataset's files are missing or inconsistent (names the file and image id)."""


_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def file_sha256(path: Path, what: str) -> str:
    """Hex SHA-256 of a file; DatasetError naming it (as ``what``) when it cannot be read."""
    try:
        return hashing.file_sha256(path)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc


def image_sha256(path: Path) -> str | None:
    """Hex SHA-256 of an image file, cached per process and file state; None when it cannot be read."""
    try:
        return hashing.cached_file_sha256(path)
    except OSError:
        return None


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
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION) if image.format in ("JPEG", "TIFF", "WEBP") \
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
        return {**self.label_identity(), "image": str(sample.image_id), "size": [sample.height, sample.width],
                "image_sha256": image_sha256(sample.path), "annotations_sha256": json_sha256(sample.annotations)}


class IndexedDataset(Dataset):
    """A dataset whose samples are addressed by position in ``image_ids`` (its fixed order)."""

    image_ids: list

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self.image_ids)):
            yield self[index]
