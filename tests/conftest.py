"""Shared fixtures: the real data in ../shared (or $VCM_SHARED) and small images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the project root, or $VCM_SHARED; None when absent."""
    candidate = Path(os.environ.get("VCM_SHARED", ROOT.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (or $VCM_SHARED) with the real data is absent on this machine")
    return path


@pytest.fixture(scope="session")
def kodim23(shared: Path) -> np.ndarray:
    from vcm_plugin import read_image

    return read_image(shared / "data" / "kodak" / "kodim23.png")


@pytest.fixture(scope="session")
def small_crop(kodim23: np.ndarray) -> np.ndarray:
    """A 96x128 crop of kodim23: real content, fast to code."""
    return np.ascontiguousarray(kodim23[200:296, 300:428])


def _kill_once_saved(cmd: list[str], saved: Path, timeout: float = 300.0, grace: float = 0.0) -> None:
    """Start ``cmd`` in the repository; SIGKILL it once ``saved`` (a checkpoint) exists, while it still runs."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not saved.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(grace)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "finished before the kill"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def kill_once_saved():
    """A real ``kill -9`` of a training command as soon as it has saved ``saved`` (see :func:`_kill_once_saved`)."""
    return _kill_once_saved
