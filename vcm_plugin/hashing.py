"""SHA-256 of files and of canonical JSON, and the check of the hash prefix that torch.hub puts in file names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
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


#: Environment variable: the file that keeps the SHA-256 of large files across processes (``off``: none).
HASH_CACHE_ENV = "VCM_HASH_CACHE"
#: Files asked to be remembered across processes (weights, annotation files) are, from this size on; smaller
#: ones hash faster than the cache file loads.
PERSIST_MIN_BYTES = 1 << 20
_PERSIST_MAX_ENTRIES = 4096
_OFF_WORDS = ("off", "0", "false", "no", "none", "")

_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}
_LOCK = threading.Lock()


def user_cache_dir() -> Path:
    """The user's vcm-plugin cache folder: ``$XDG_CACHE_HOME/vcm-plugin`` (an absolute one), else
    ``~/.cache/vcm-plugin``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"  # XDG ignores relative ones
    return root / "vcm-plugin"


def hash_cache_file() -> Path | None:
    """Where :func:`cached_file_sha256` keeps hashes across processes: ``$VCM_HASH_CACHE`` (``off``: nowhere),
    else ``file-sha256-v1.json`` in :func:`user_cache_dir`."""
    setting = os.environ.get(HASH_CACHE_ENV)
    if setting is None:
        return user_cache_dir() / "file-sha256-v1.json"
    return None if setting.strip().lower() in _OFF_WORDS else Path(setting).expanduser()


def _file_state(path: str | os.PathLike[str]) -> tuple[str, int, int, int, int, int]:
    """(real path, device, inode, size, mtime ns, ctime ns): what changes when the file does. ``ctime`` cannot be
    set back by a program (unlike ``mtime``), and a file replaced by another has another inode."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_persistent(file: Path) -> dict[str, list]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):  # absent, unreadable or damaged: an empty cache
        return {}
    return data if isinstance(data, dict) else {}


def _write_persistent(file: Path, path: str, entry: list) -> None:
    """Add ``entry`` for ``path`` to the cache ``file`` (re-read, so that concurrent processes lose little;
    written to a temporary file, then renamed); any failure leaves the cache as it was."""
    try:
        data = _read_persistent(file)
        data.pop(path, None)
        data[path] = entry  # newest last: the oldest entries are dropped first
        for old in list(data)[:max(0, len(data) - _PERSIST_MAX_ENTRIES)]:
            del data[old]
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=file.name + ".", dir=file.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:  # read-only or full: hashed again next time
        pass


def cached_file_sha256(path: str | os.PathLike[str], persist: bool = False) -> str:
    """:func:`file_sha256`, computed once per file state; OSError if unreadable.

    The state is (real path, device, inode, size, mtime, ctime): an edited, touched or replaced file is
    hashed again. Within a process every file is remembered; with ``persist`` (weights, annotation files:
    few and large, unlike images) a file of :data:`PERSIST_MIN_BYTES` or more also in :func:`hash_cache_file`,
    so that the next run does not hash it again.
    """
    state = _file_state(path)
    with _LOCK:
        if state in _DIGESTS:
            return _DIGESTS[state]
    real, *numbers = state
    file = hash_cache_file() if persist and state[3] >= PERSIST_MIN_BYTES else None
    if file is not None:
        entry = _read_persistent(file).get(real)
        if isinstance(entry, list) and entry[:-1] == numbers and isinstance(entry[-1], str):
            with _LOCK:
                _DIGESTS[state] = entry[-1]
            return entry[-1]
    digest = file_sha256(path)
    if _file_state(path) != state:  # changed while hashing: keep nothing
        return digest
    with _LOCK:
        _DIGESTS[state] = digest
    if file is not None:
        _write_persistent(file, real, [*numbers, digest])
    return digest


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
