"""Training checkpoints: atomic writes, resume after kill -9, safe loading.

A training run owns one folder. ``last.pt`` is the latest training state (model,
optimizers, scheduler, step, RNG states, best validation loss), written every N steps
to a temporary file and renamed into place (``os.replace`` is atomic on POSIX), so a
kill at any moment leaves either the previous or the new checkpoint, never a torn one.
``best.pt`` is the model state at the best validation loss. Everything loads with
``torch.load(weights_only=True)``: a state holds only tensors, numbers, strings, lists
and dicts.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.errors import VcmError

LAST = "last.pt"
BEST = "best.pt"


class TrainingError(VcmError, RuntimeError):
    """Training cannot go on (NaN loss, unreadable checkpoint, bad data); names the input."""


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training state saved by :func:`atomic_save` (weights-only); errors name the file."""
    import torch

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, BadZipFile, EOFError, or KeyError/IndexError from garbage bytes
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"checkpoint {str(path)!r} cannot be loaded safely (truncated, not a torch file, or "
                            f"not weights-only): {type(exc).__name__}: {first}") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise TrainingError(f"checkpoint {str(path)!r} is not a vcm-plugin training state (no 'step')")
    return state


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU runs are then reproducible on one machine)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The RNG states to store in a checkpoint (torch's as a uint8 tensor, weights-only friendly)."""
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
