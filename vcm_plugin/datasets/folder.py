"""Image files named by files, folders (searched recursively) and globs (how ``vcm train`` finds its images);
text files of image ids."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from vcm_plugin.datasets.base import DatasetError
from vcm_plugin.images.io import IMAGE_SUFFIXES


def list_image_files(entries: Sequence[str], where: str, exclude: Sequence[str] = ()) -> list[Path]:
    """The image files (suffixes :data:`IMAGE_SUFFIXES`) that ``entries`` name, in order, none under ``exclude``.

    An entry is a file, a folder (its images, searched recursively, sorted) or a glob (its
    image matches, sorted). :class:`DatasetError` names the entry (``where`` the config key)
    when a folder holds no image or an entry matches nothing.
    """
    files: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DatasetError(f"{where}: folder {entry!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(entry, recursive=True))
            if not matches:
                raise DatasetError(f"{where}: {entry!r} is not an image file, a folder or a glob that matches files")
            files += [m for m in matches if m.suffix.lower() in IMAGE_SUFFIXES]
    excluded = [Path(e).expanduser().resolve() for e in exclude]
    return [p for p in files if not any(p.resolve().is_relative_to(r) for r in excluded)] if excluded else files


def read_id_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(line number, text) of each line of an image id list; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"image id list {path} cannot be read: {exc}") from exc
    return [(number, text) for number, text in enumerate((line.split("#", 1)[0].strip() for line in lines), 1)
            if text]
