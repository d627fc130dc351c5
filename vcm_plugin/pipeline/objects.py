"""What identifies a unit's outputs (SHA-256 of its bitstream and of its decoded value), and the kept copies.

With ``keep: [bitstreams, reconstructions]`` in a run config, a run stores them content-addressed
in its output folder, one file per distinct content, found from a unit's row by its hashes::

    objects/bitstreams/<sha[:2]>/<bitstream_sha256>.vcmb      Bitstream.to_bytes(): `vcm decode` reads it
    objects/reconstructions/<sha[:2]>/<decoded_sha256>.png    a decoded image (RGB, 8 bits)
    objects/reconstructions/<sha[:2]>/<decoded_sha256>.npz    a decoded cut value (one array per tensor)

Files are written to a temporary name in the same folder and renamed (``os.replace``), so a
killed run leaves no partial object (at most a ``.tmp-*`` file); an object already present
is not written again (same content, same name), so a rerun or a resumed run writes only
what is new. Workers write their own units' objects; only the parent writes the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.codecs.base import Bitstream
from vcm_plugin.tasks.split import CutValue

OBJECTS_DIR = "objects"
#: what ``keep`` may list
KEEP_KINDS = ("bitstreams", "reconstructions")


def bitstream_sha256(bitstream: Bitstream) -> str:
    """Hex SHA-256 of the coded stream: ``Bitstream.data``, the bytes counted in the rate."""
    return hashlib.sha256(bitstream.data).hexdigest()


def _tensors(value: CutValue) -> dict[str, np.ndarray]:
    out = {}
    for name in sorted(value.tensors):
        tensor = value.tensors[name]
        if hasattr(tensor, "detach"):  # a torch tensor
            tensor = tensor.detach().cpu().numpy()
        out[name] = np.ascontiguousarray(tensor)
    return out


def decoded_sha256(value: Any) -> str:
    """Hex SHA-256 of a decoded value: an image's bytes (uint8, row-major RGB), or for a :class:`CutValue`
    each tensor's name, dtype, shape and bytes in name order."""
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    if not isinstance(value, CutValue):
        raise TypeError(f"cannot hash a decoded value of type {type(value).__name__}")
    digest = hashlib.sha256()
    for name, array in _tensors(value).items():
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def object_path(folder: str | Path, kind: str, sha256: str, suffix: str) -> Path:
    """Where an object of ``kind`` (``bitstreams`` / ``reconstructions``) with this hash lives in a run folder."""
    return Path(folder) / OBJECTS_DIR / kind / sha256[:2] / f"{sha256}{suffix}"


def _write_once(path: Path, write: Callable[[Path], None]) -> bool:
    """Write ``path`` atomically (``write(temporary path)`` then ``os.replace``) unless it exists; whether it was."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(name))
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return True


def keep_bitstream(folder: str | Path, bitstream: Bitstream, sha256: str) -> bool:
    """Store ``bitstream`` as a ``.vcmb`` file named by ``sha256`` (:func:`bitstream_sha256`) unless present."""
    return _write_once(object_path(folder, "bitstreams", sha256, ".vcmb"),
                       lambda tmp: tmp.write_bytes(bitstream.to_bytes()))


def keep_reconstruction(folder: str | Path, value: Any, sha256: str) -> bool:
    """Store a decoded image as PNG or a cut value as ``.npz``, named by ``sha256`` (:func:`decoded_sha256`)."""
    if isinstance(value, CutValue):
        return _write_once(object_path(folder, "reconstructions", sha256, ".npz"),
                           lambda tmp: np.savez(tmp, **_tensors(value)))
    from vcm_plugin.images.io import write_image

    return _write_once(object_path(folder, "reconstructions", sha256, ".png"), lambda tmp: write_image(tmp, value))


def kept_paths(folder: str | Path, keep: tuple[str, ...] | list[str], bitstream: str | None,
               decoded: str | None) -> list[Path]:
    """The object files a unit with these hashes has when ``keep`` is asked (a reference unit has none)."""
    paths = []
    if bitstream and "bitstreams" in keep:
        paths.append(object_path(folder, "bitstreams", bitstream, ".vcmb"))
    if decoded and "reconstructions" in keep:
        base = object_path(folder, "reconstructions", decoded, "")
        paths.append(next((p for p in (base.with_suffix(".png"), base.with_suffix(".npz")) if p.exists()),
                          base.with_suffix(".png")))
    return paths
