"""SHA-256 of files, and the check of the hash prefix that torch.hub puts in file names."""

from __future__ import annotations

import hashlib
import os
import re

#: torch.hub's naming convention ``<name>-<SHA-256 prefix>.<ext>`` (at least 8 hex digits)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, hashed in ``chunk_bytes`` chunks (memory flat in file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def name_hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix in a file name that follows torch.hub's ``<name>-<prefix>.pth``, else None.

    torch.hub checks it only when it downloads; callers check a cached or copied file with
    ``file_sha256(path).startswith(prefix)``.
    """
    match = _HASH_IN_NAME.search(name)
    return None if match is None else match.group(1)
