"""Reading and writing images as (H, W, 3) uint8 RGB arrays (placeholder, being written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_image(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def write_image(path: str | Path, image: np.ndarray) -> None:
    Image.fromarray(image, "RGB").save(path)
