"""Shared fixtures: the real data in ../shared (or $VCM_SHARED) and small images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from vcm_plugin import Bitstream, Codec, QualityRange

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the project root, or $VCM_SHARED; None when absent."""
    candidate = Path(os.environ.get("VCM_SHARED", ROOT.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def _no_shared_unit_cache():
    """No test reads or writes the user's shared unit cache (vcm_plugin.results.cache): ``cache: auto`` is off;
    nor the user's file-hash cache (vcm_plugin.hashing.hash_cache_file).

    Session-scoped, so it holds before module-scoped fixtures run; tests of the caches give them a tmp folder.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VCM_CACHE", "off")
        patch.setenv("VCM_HASH_CACHE", "off")
        yield


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


@dataclass
class BitDepthCodec(Codec):
    """Test codec base: keeps the ``quality`` most significant bits of every 8-bit sample (8: lossless).

    Subclasses misbehave in :meth:`before_encode` (raise, hang, die) to test the harness.
    """

    quality_range: ClassVar[QualityRange] = QualityRange("q", 1, 8, higher_is_more_bits=True)

    def before_encode(self, image: np.ndarray) -> None:
        """Called with every image before it is coded."""

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        self.before_encode(image)
        return self.make_bitstream((image >> (8 - quality)).astype(np.uint8).tobytes(), quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        raw = np.frombuffer(bitstream.data, np.uint8).reshape(bitstream.height, bitstream.width, 3)
        return (raw << (8 - int(bitstream.quality))).astype(np.uint8)
