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


class ResumableRun:
    """Bookkeeping of one rate-distortion training run in a folder (shared by the codec trainers).

    On creation it resumes from ``folder/last.pt`` when one exists (model, both optimizers,
    every RNG, step, best validation loss, history, wall time), refusing a checkpoint written
    with another ``fingerprint`` (the config fields that may not change) or other ``tags``;
    :meth:`save` writes ``last.pt`` atomically, :meth:`record_validation` ``best.pt`` at a new best
    validation loss and :meth:`restore_best` loads it back; :meth:`non_finite` is the error of a NaN /
    infinite loss naming the last good checkpoint.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any], model: Any, optimizer: Any, aux_optimizer: Any,
                 rng: np.random.Generator, tags: dict[str, Any] | None = None, quiet: bool = False) -> None:
        import json
        import time

        self.last = folder / LAST
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.model, self.optimizer, self.aux_optimizer, self.rng = model, optimizer, aux_optimizer, rng
        self.tags = dict(tags or {})
        self.step, self.best, self.history, self.wall_before = 0, float("inf"), [], 0.0
        self.saved_step: int | None = None  # step of the checkpoint on disk
        if self.last.exists():
            state = load_checkpoint(self.last)
            if state.get("fingerprint") != self.fingerprint or any(state.get(k) != v for k, v in self.tags.items()):
                raise TrainingError(f"{self.last} was written by a different training config; use another output "
                                    "folder or delete it to start over")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            aux_optimizer.load_state_dict(state["aux_optimizer"])
            set_rng_state(state["rng"])
            rng.bit_generator.state = json.loads(state["numpy_generator"])
            self.step, self.best = int(state["step"]), float(state["best_val_loss"])
            self.history, self.wall_before = list(state["history"]), float(state["wall_s"])
            self.saved_step = self.step
            if not quiet:
                print(f"resuming from {self.last} at step {self.step}")
        self._start = time.perf_counter()

    @property
    def wall_s(self) -> float:
        """Training seconds so far, over every resumed session."""
        import time

        return self.wall_before + time.perf_counter() - self._start

    def save(self) -> None:
        """Write ``last.pt`` (atomic)."""
        import json

        atomic_save({**self.tags, "step": self.step, "model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "aux_optimizer": self.aux_optimizer.state_dict(),
                     "rng": rng_state(), "numpy_generator": json.dumps(self.rng.bit_generator.state),
                     "best_val_loss": self.best, "history": self.history, "wall_s": self.wall_s,
                     "fingerprint": self.fingerprint}, self.last)
        self.saved_step = self.step

    def record_validation(self, metrics: dict[str, Any]) -> None:
        """Add ``metrics`` (with the step) to the history; at a new best ``metrics["loss"]`` write ``best.pt``."""
        self.history.append({"step": self.step, **metrics})
        if metrics["loss"] < self.best:
            self.best = metrics["loss"]
            atomic_save({"step": self.step, "state_dict": self.model.state_dict(), "val": metrics},
                        self.last.parent / BEST)

    def restore_best(self) -> int:
        """Load ``best.pt`` into the model (left as it is when there is none); return the step it was saved at."""
        best = self.last.parent / BEST
        state = load_checkpoint(best) if best.exists() else {"state_dict": self.model.state_dict()}
        self.model.load_state_dict(state["state_dict"])
        return int(state.get("step", self.step))

    def step_optimizers(self, loss: Any, aux_loss: Any, clip_grad: float | None) -> None:
        """One step: ``loss`` through the main optimizer (its parameters clipped to ``clip_grad``), ``aux_loss``
        through the aux optimizer; then ``step`` counts it. The caller checks both are finite first."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:  # only the main parameters: a stale aux gradient must not scale the clipping
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], clip_grad)
        self.optimizer.step()
        self.aux_optimizer.zero_grad(set_to_none=True)
        aux_loss.backward()
        self.aux_optimizer.step()
        self.step += 1

    def non_finite(self, loss: float, aux: float) -> TrainingError:
        """The error for a non-finite loss at the next step, naming the checkpoint that is kept."""
        kept = f"the last good checkpoint {self.last} (step {self.saved_step})" if self.saved_step is not None \
            else "no checkpoint (none was written yet)"
        return TrainingError(f"non-finite loss at step {self.step + 1} (loss {loss}, aux {aux}); lower lr or "
                             f"lmbda. Kept {kept}")
