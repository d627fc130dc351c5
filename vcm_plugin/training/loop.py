"""The one training loop: a :class:`Trainer` running hooks, in the shape of detectron2's ``TrainerBase`` / ``HookBase``.

A trainer supplies its step, validation, export (:meth:`Trainer.finish`), model, optimizers and lr; the
hooks do the rest. ``last.pt`` (model, optimizers, every RNG state, step, history, best, wall time) is
renamed into place atomically and loads weights-only: a rerun after kill -9 resumes bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import weakref
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vcm_plugin.errors import VcmError

logger = logging.getLogger(__name__)
LAST, BEST, RESULT = "last.pt", "best.pt", "result.json"


class TrainingError(VcmError, RuntimeError):
    """Training cannot go on (NaN loss, unreadable checkpoint, bad data); names the input."""


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The RNG states to store in a checkpoint (torch's as a uint8 tensor, weights-only friendly)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [py_state[0], list(py_state[1]), py_state[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a run on a CUDA device: its generators too
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class HookBase:
    """Called around the steps of a :class:`Trainer` (``self.trainer``): before/after training and each step;
    ``close`` last, also after an error; ``after_train`` only when training succeeded."""

    trainer: Trainer

    def before_train(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...
    def close(self) -> None: ...


class Trainer:
    """Runs :meth:`run_step` from ``step`` to ``max_iter`` with hooks. Subclasses set ``max_iter``, ``model``,
    ``optimizers`` (name -> optimizer; the first one's lr follows :meth:`lr_at`), ``rng`` (a numpy Generator saved
    in ``last.pt``, or None), ``checkpoint_every`` and ``val_every`` (steps; a tuple fires at multiples of any, and
    at the last step)."""

    output: Path
    max_iter: int
    model: Any
    optimizers: dict[str, Any]
    fingerprint: dict[str, Any]
    rng: np.random.Generator | None = None
    checkpoint_every: tuple[int, ...] = (200,)
    val_every: tuple[int, ...] = (500,)
    desc = "train"

    def __init__(self, config: Any, resumable: Collection[str], tags: dict[str, Any] | None = None) -> None:
        """``config`` (pydantic, with ``output``, ``threads`` and ``seed``) sets the output folder, torch's threads
        and every seed; its keys but ``resumable``, plus ``tags``, are the ``fingerprint`` ``last.pt`` must match."""
        self.config, self.output = config, Path(config.output)
        self.fingerprint = {**config.model_dump(mode="json", exclude=set(resumable)), **(tags or {})}
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.step, self.metrics, self.history, self.resumed_from = 0, {}, [], []
        self.best: dict[str, Any] | None = None  # validation metrics at the best step, with "step"
        self.saved_step: int | None = None  # step of last.pt on disk
        self.wall_before = self._start = 0.0
        self.result: dict[str, Any] = {}
        self._hooks: list[HookBase] = []

    def run_step(self) -> dict[str, float]:
        """One optimizer step; its scalars ("loss" first), checked finite by :class:`NonFiniteGuard`."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current model (kept in ``history`` with the step)."""
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        """Export the trained model; the record written to ``result.json``."""
        raise NotImplementedError

    def lr_at(self, step: int) -> float:
        """Learning rate of the 0-based step ``step``."""
        raise NotImplementedError

    def better(self, metrics: dict[str, Any], best: dict[str, Any]) -> bool:
        """Whether validation ``metrics`` beat ``best`` (default: a lower ``loss``)."""
        return metrics["loss"] < best["loss"]

    def best_state(self) -> dict[str, Any]:
        """What ``best.pt`` holds besides ``step`` and ``val`` (default: the model's ``state_dict``)."""
        return {"state_dict": self.model.state_dict()}

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Add ``hooks``; they run in this order."""
        for hook in hooks:
            hook.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self) -> dict[str, Any]:
        """Train from ``last.pt`` (or step 0) to ``max_iter``; the result."""
        if not self._hooks:
            self.register_hooks([NonFiniteGuard(), LRSchedule(), Progress(), Validation(), Checkpointer(),
                                 WriteResult()])
        self.output.mkdir(parents=True, exist_ok=True)
        self.resume_or_load()
        try:
            self._call("before_train")
            while self.step < self.max_iter:
                self._call("before_step")
                self.metrics = self.run_step()
                self.step += 1
                self._call("after_step")
            self._call("after_train")
        finally:
            self._call("close")
        return self.result

    def _call(self, name: str) -> None:
        for hook in self._hooks:
            getattr(hook, name)()

    def due(self, every: Sequence[int]) -> bool:
        """Whether the step just finished is a multiple of one of ``every``, or the last."""
        return self.step == self.max_iter or any(self.step % e == 0 for e in every)

    @property
    def wall_s(self) -> float:
        """Training seconds so far, over every resumed session."""
        return self.wall_before + time.perf_counter() - self._start

    def check_weights(self) -> None:
        """:class:`TrainingError` when a weight is not finite (nothing is then written)."""
        bad = [k for k, v in self.model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise TrainingError(f"non-finite weights after step {self.step} ({', '.join(bad[:5])}); {self.kept()}")

    def kept(self) -> str:
        """Which checkpoint a stopped run keeps."""
        if self.saved_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint {self.output / LAST} (step {self.saved_step}) is kept"

    def restore_best(self) -> int:
        """Load ``best.pt``'s weights into the model (left as it is without one); the step they are from."""
        if not (self.output / BEST).exists():
            return self.step
        state = load_checkpoint(self.output / BEST)
        self.model.load_state_dict(state["state_dict"])
        return int(state["step"])

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` holds (tensors, numbers, strings, lists, dicts: loadable weights-only)."""
        return {"step": self.step, "model": self.model.state_dict(),
                **{name: opt.state_dict() for name, opt in self.optimizers.items()},
                "rng": rng_state(), "numpy_generator": json.dumps(self.rng.bit_generator.state) if self.rng else "",
                "history": self.history, "best": self.best, "resumed_from": self.resumed_from,
                "wall_s": self.wall_s, "fingerprint": self.fingerprint}

    def resume_or_load(self) -> None:
        """Resume from ``last.pt`` when there is one; refused when written with another fingerprint."""
        last, self._start = self.output / LAST, time.perf_counter()
        if not last.exists():
            return
        state = load_checkpoint(last)
        old = state.get("fingerprint") or {}
        changed = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
        if changed:
            raise TrainingError(f"{last} was written by a different training config ({', '.join(changed)} changed); "
                                "use another output folder, or delete it to start over")
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        set_rng_state(state["rng"])
        if self.rng is not None:
            self.rng.bit_generator.state = json.loads(state["numpy_generator"])
        self.step = self.saved_step = int(state["step"])
        self.history, self.best, self.wall_before = list(state["history"]), state.get("best"), float(state["wall_s"])
        self.resumed_from = [*state.get("resumed_from", []), self.step]  # .get: last.pt of older versions
        logger.info(f"resuming from {last} at step {self.step} of {self.max_iter}")


class NonFiniteGuard(HookBase):
    """Stops with a :class:`TrainingError` naming the step and its losses when one is NaN or infinite."""

    def after_step(self) -> None:
        t = self.trainer
        if not all(math.isfinite(v) for v in t.metrics.values()):
            values = ", ".join(f"{k} {v}" for k, v in t.metrics.items())
            raise TrainingError(f"non-finite loss at step {t.step} ({values}); lower lr or lmbda; {t.kept()}")


class LRSchedule(HookBase):
    """Sets the first optimizer's lr to ``trainer.lr_at(step)`` before training and after each step (for the
    next one, so validation records it, as ``LambdaLR`` did)."""

    def before_train(self) -> None:
        for group in next(iter(self.trainer.optimizers.values())).param_groups:
            group["lr"] = self.trainer.lr_at(self.trainer.step)

    after_step = before_train


class Progress(HookBase):
    """A tqdm bar with the step's scalars (none when this module's logger does not show INFO, e.g. ``--quiet``)."""

    def before_train(self) -> None:
        t, quiet = self.trainer, not logger.isEnabledFor(logging.INFO)
        self.bar = tqdm(total=t.max_iter, initial=t.step, desc=t.desc, unit="step", disable=quiet)

    def after_step(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.trainer.metrics.items()}, refresh=False)

    def close(self) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


class Validation(HookBase):
    """Every ``val_every`` steps: ``trainer.validate()`` into ``history``; ``best.pt`` (atomic) at a new best."""

    def after_step(self) -> None:
        t = self.trainer
        if not t.due(t.val_every):
            return
        metrics = t.validate()
        t.history.append({"step": t.step, **metrics})
        if t.best is None or t.better(metrics, t.best):
            t.check_weights()
            t.best = {"step": t.step, **metrics}
            atomic_save({"step": t.step, "val": metrics, **t.best_state()}, t.output / BEST)
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        logger.info(f"{t.desc} step {t.step}: validation {shown} (best at step {t.best['step']})")


class Checkpointer(HookBase):
    """Writes ``last.pt`` (atomic) every ``checkpoint_every`` steps once the weights are checked finite."""

    def after_step(self) -> None:
        t = self.trainer
        if t.due(t.checkpoint_every):
            t.check_weights()
            atomic_save(t.state_dict(), t.output / LAST)
            t.saved_step = t.step


class WriteResult(HookBase):
    """After training: ``trainer.finish()`` (the export) written to ``result.json`` (atomic)."""

    def after_train(self) -> None:
        t = self.trainer
        t.result = t.finish()
        (t.output / f".{RESULT}.tmp").write_text(json.dumps(t.result, indent=2) + "\n")
        (t.output / f".{RESULT}.tmp").replace(t.output / RESULT)
