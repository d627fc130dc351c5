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
