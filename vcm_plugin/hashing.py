"""SHA-256 of files and of canonical JSON, and the check of the hash prefix that torch.hub puts in file names."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

#: torch.hub's naming convention ``<name>-<SHA-256 prefix>.<ext>`` (at least 8 hex digits)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, hashed in ``chunk_bytes`` chunks (memory flat in file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256`, computed once per process and file state (path, inode, size, mtime); OSError if unreadable.

    An edited or replaced file is hashed again, so a long-running process sees the change.
    """
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def json_sha256(value: Any, default: Callable[[Any], Any] = str) -> str:
    """Hex SHA-256 of the canonical JSON of ``value`` (sorted keys, no spaces; ``default`` for other types)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def name_hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix in a file name that follows torch.hub's ``<name>-<prefix>.pth``, else None.

    torch.hub checks it only when it downloads; callers check a cached or copied file with
    ``file_sha256(path).startswith(prefix)``.
    """
    match = _HASH_IN_NAME.search(name)
    return None if match is None else match.group(1)
