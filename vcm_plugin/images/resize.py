"""Pre-scaling for the VCM common test conditions (100 / 75 / 50 / 25 %).

As in the VCM anchor scripts, the picture is resized with ffmpeg's ``scale`` filter
(swscale bicubic, its default) to ``ceil(w * s / 2) * 2`` x ``ceil(h * s / 2) * 2``
pixels (rounded up to even) before encoding, and the decoded picture is resized back
to the original size with the same filter before the task model sees it. The rate is
always bits over the ORIGINAL image's pixels.
"""

from __future__ import annotations

import math

import numpy as np

from vcm_plugin.errors import VcmError
from vcm_plugin.ffmpeg import convert_command, find_ffmpeg, run_ffmpeg

SCALE_FLAGS = "bicubic"


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) after pre-scaling by ``scale``: each side rounded up to even."""
    if scale == 1.0:
        return height, width
    return 2 * math.ceil(height * scale / 2), 2 * math.ceil(width * scale / 2)


def resize_rgb(image: np.ndarray, height: int, width: int, flags: str = SCALE_FLAGS, timeout: float = 120.0
               ) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB image with ffmpeg's scale filter (through pipes)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    exe = find_ffmpeg()
    if exe is None:
        raise VcmError("pre-scaling needs ffmpeg (set VCM_FFMPEG or install imageio-ffmpeg)")
    cmd = convert_command(exe, "rgb24", h, w, f"scale={width}:{height}:flags={flags}", "rgb24")
    raw = run_ffmpeg(cmd, np.ascontiguousarray(image).tobytes(), timeout)
    if len(raw) != height * width * 3:
        raise VcmError(f"resizing {w}x{h} to {width}x{height} returned {len(raw)} bytes")
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()


def prescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Downscale for coding at ``scale`` (identity at 1.0)."""
    h, w = image.shape[:2]
    return resize_rgb(image, *scaled_size(h, w, scale))
