"""RGB <-> raw planar Y'CbCr files, for codecs run as external programs (e.g. VTM).

Reference encoders read and write headerless planar YUV files. These helpers convert
an (H, W, 3) uint8 RGB picture to such a file and back with ffmpeg's swscale, through
:func:`~vcm_plugin.ffmpeg.run_ffmpeg` and the same
:class:`~vcm_plugin.codecs.ffmpeg.ColourConversion` filter chains as the ffmpeg codecs,
so a VTM picture and a libvvenc picture are converted identically. The file format
is ``-f rawvideo -pix_fmt yuv420p10le``: Y, then Cb, then Cr planes, 4:2:0, one
little-endian 16-bit word per sample holding a 10-bit value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vcm_plugin.codecs.ffmpeg import ColourConversion
from vcm_plugin.ffmpeg import convert_command, run_ffmpeg

YUV_PIX_FMT = "yuv420p10le"


def yuv420_frame_bytes(height: int, width: int, bytes_per_sample: int = 2) -> int:
    """Bytes of one planar 4:2:0 picture of ``height`` x ``width`` pixels (even sizes)."""
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ValueError(f"a 4:2:0 picture needs a positive even size, got {width}x{height}")
    return (height * width + 2 * (height // 2) * (width // 2)) * bytes_per_sample


def _check_colour(colour: ColourConversion) -> None:
    if colour.pix_fmt != YUV_PIX_FMT:
        raise ValueError(f"raw YUV files are {YUV_PIX_FMT}; colour conversion has pix_fmt {colour.pix_fmt!r}")


def rgb_to_yuv_command(height: int, width: int, colour: ColourConversion, executable: str = "ffmpeg") -> list[str]:
    """The ffmpeg command converting one rgb24 picture on stdin to raw yuv420p10le on ``pipe:1``."""
    _check_colour(colour)
    return convert_command(executable, "rgb24", height, width, colour.to_yuv(), YUV_PIX_FMT)


def yuv_to_rgb_command(height: int, width: int, colour: ColourConversion, executable: str = "ffmpeg") -> list[str]:
    """The ffmpeg command converting one raw yuv420p10le picture on stdin to rgb24 on ``pipe:1``."""
    _check_colour(colour)
    return convert_command(executable, YUV_PIX_FMT, height, width, colour.to_rgb(), "rgb24")


def write_yuv_file(image: np.ndarray, path: str | os.PathLike[str], colour: ColourConversion,
                   executable: str, timeout: float) -> int:
    """Convert an (H, W, 3) uint8 RGB image (even H and W) to a raw yuv420p10le file.

    Returns the number of bytes written. ``timeout`` is in seconds; ffmpeg failures
    raise :class:`~vcm_plugin.ffmpeg.FFmpegError`.
    """
    height, width = image.shape[:2]
    expected = yuv420_frame_bytes(height, width)
    raw = run_ffmpeg(rgb_to_yuv_command(height, width, colour, executable),
                     np.ascontiguousarray(image, dtype=np.uint8).tobytes(), timeout)
    if len(raw) != expected:
        raise ValueError(f"ffmpeg converted a {width}x{height} picture to {len(raw)} bytes of {YUV_PIX_FMT}, "
                         f"expected {expected} (for {path})")
    Path(path).write_bytes(raw)
    return len(raw)


def read_yuv_file(path: str | os.PathLike[str], height: int, width: int, colour: ColourConversion,
                  executable: str, timeout: float) -> np.ndarray:
    """Read one raw yuv420p10le picture of ``height`` x ``width`` pixels as (H, W, 3) uint8 RGB.

    The file must hold exactly one picture; a size mismatch raises ``ValueError``
    naming the file. ``timeout`` is in seconds.
    """
    expected = yuv420_frame_bytes(height, width)
    raw = Path(path).read_bytes()
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected one {width}x{height} {YUV_PIX_FMT} picture "
                         f"({expected} bytes)")
    rgb = run_ffmpeg(yuv_to_rgb_command(height, width, colour, executable), raw, timeout)
    if len(rgb) != height * width * 3:
        raise ValueError(f"ffmpeg converted {path} to {len(rgb)} bytes of rgb24, expected {height * width * 3}")
    return np.frombuffer(rgb, np.uint8).reshape(height, width, 3).copy()
