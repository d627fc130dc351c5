"""The one weights search path, SHA-256 checks and safe state-dict loading.

Every task model and learned codec finds its checkpoint through :func:`find_weights`,
which looks, in order, in

1. the explicit ``search_path`` folders (a config key passes them),
2. the folders in the ``VCM_WEIGHTS`` environment variable (``os.pathsep``-separated),
3. ``~/.cache/vcm_plugin/weights``.

An absolute path to an existing file is accepted as is. A missing file raises
:class:`~vcm_plugin.errors.WeightsNotFoundError` naming the file and every folder
looked in. Where a SHA-256 is known (:data:`KNOWN_SHA256`) the file is verified.

Task models, learned codecs and the zoo use it, so it sits at the bottom of the layers
(:mod:`vcm_plugin.tasks.weights` re-exports its names for compatibility).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.hashing import cached_file_sha256

ENV_VAR = "VCM_WEIGHTS"
DEFAULT_CACHE = Path("~/.cache/vcm_plugin/weights")

#: SHA-256 of weights files whose provenance was checked (see shared/weights/WEIGHTS.md).
KNOWN_SHA256: dict[str, str] = {
    "yolov5n.pt": "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3",
    "yolov5n_coco_state_dict.pt": "350332b99f755297ee16d8d696df40b7d46b24e090e1a9f9237ec65f27082969",
    "mobilenet_v2_1.0_224_quant.tflite": "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
}


class NotWeightsOnlyError(TaskModelError):
    """A checkpoint holds pickled Python objects, so ``weights_only=True`` refuses it."""


def weights_search_path(search_path: Sequence[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The folders searched for weights, in order: ``search_path``, ``$VCM_WEIGHTS``, the user cache."""
    folders: list[Path] = [Path(p).expanduser() for p in (search_path or [])]
    folders += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    folders.append(DEFAULT_CACHE.expanduser())
    return list(dict.fromkeys(folders))


def with_search_path(cls: type, params: dict[str, Any], search_path: Sequence[str] | None) -> dict[str, Any]:
    """``params`` plus ``search_path`` (a config's weights folders) when ``cls`` takes one and ``params`` sets none."""
    if search_path and "search_path" in getattr(cls, "__dataclass_fields__", {}) and "search_path" not in params:
        return {**params, "search_path": list(search_path)}
    return params


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(filename: str | os.PathLike[str], search_path: Sequence[str | os.PathLike[str]] | None = None,
                 sha256: str | None = None) -> Path:
    """Resolve a weights file name to an existing file, optionally verifying its SHA-256.

    ``filename`` is a bare name (or a relative path) looked up in each folder of
    :func:`weights_search_path`, or an absolute path used as is. ``sha256`` (hex) is
    checked when given; pass ``KNOWN_SHA256.get(name)`` to check known files.
    """
    name = Path(filename).expanduser()
    if name.is_absolute():
        if not name.is_file():
            raise WeightsNotFoundError(f"weights file {str(name)!r} does not exist")
        found = name
    else:
        folders = weights_search_path(search_path)
        found = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if found is None:
            looked = "\n".join(f"  - {folder}{'' if folder.is_dir() else ' (no such folder)'}" for folder in folders)
            raise WeightsNotFoundError(
                f"weights file {str(name)!r} not found; looked in:\n{looked}\n"
                f"Put the file in one of these folders, or set {ENV_VAR} to the folder that holds it "
                f"(several folders separated by {os.pathsep!r}), or pass the folder in the config's search path.")
    if sha256 is not None:
        verify_sha256(found, sha256)
    return found


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a weights file, computed once per file state (:func:`~vcm_plugin.hashing.cached_file_sha256`:
    in the process, and across runs for large files); the codecs and task models take it from here."""
    return cached_file_sha256(path, persist=True)


def verify_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise :class:`TaskModelError` naming the file and both hashes when its SHA-256 differs."""
    actual = file_sha256(path)
    if actual.lower() != expected.strip().lower():
        raise TaskModelError(f"weights file {str(path)!r} has SHA-256 {actual}, expected {expected.strip().lower()}: "
                             "the file is corrupt, truncated or a different checkpoint; download it again")


def load_state_dict_safely(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with errors naming the file.

    A truncated file, a file that is not a torch checkpoint, and a checkpoint holding
    pickled Python objects (not weights-only) all raise :class:`TaskModelError`.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist") from exc
    except pickle.UnpicklingError as exc:  # what weights_only raises on a forbidden global or a non-pickle
        reason = _weights_unpickler_reason(str(exc))
        if "global" in reason.lower():
            raise NotWeightsOnlyError(f"weights file {str(path)!r} is not a weights-only checkpoint: it holds pickled "
                                 f"Python objects, which are not loaded for safety ({reason})") from exc
        raise TaskModelError(f"weights file {str(path)!r} is not a torch checkpoint ({reason})") from exc
    except Exception as exc:  # RuntimeError, EOFError, BadZipFile, or KeyError/IndexError from garbage bytes
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskModelError(f"weights file {str(path)!r} cannot be read (truncated or not a torch checkpoint): "
                             f"{type(exc).__name__}: {first}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise TaskModelError(f"weights file {str(path)!r} does not hold a state_dict (a dict of name -> tensor)")
    return obj


def _weights_unpickler_reason(message: str) -> str:
    """The informative part of torch's weights-only refusal ("Unsupported global: GLOBAL x.Y ...")."""
    marker = "WeightsUnpickler error:"
    tail = message.split(marker, 1)[1] if marker in message else message
    tail = " ".join(tail.split())
    return tail.split(" was not an allowed global")[0].split(" Check the documentation")[0].strip() or "unreadable"
