"""WebP lossy coding with libwebp, from RGB (libwebp does the Y'CbCr conversion).

The 8-bit RGB picture goes to libwebp as BGRA (``-vf format=bgra``, opaque alpha, so
no alpha chunk is written); libwebp converts it to Y'CbCr 4:2:0 itself (BT.601
limited range, as the VP8 format defines) and codes it as a simple lossy WebP file:
a 20-byte RIFF/``VP8`` header and the VP8 key frame. WebP codes any size from 1x1 to
16383x16383 exactly and carries it, so no padding and no size header
(``size_header = False``). Decoding uses ffmpeg's native ``webp`` decoder (Y'CbCr
4:2:0 out) and swscale BT.601 limited range back to RGB.

Quality is libwebp's ``-quality`` 0..100 (float accepted, higher = more bits);
``compression_level`` is its method 0..6 (higher = slower and smaller, default 4
as in cwebp); no preset (``-preset none``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vcm_plugin.codecs.base import Quality, QualityRange
from vcm_plugin.codecs.ffmpeg import ColourConversion, FFmpegCodec
from vcm_plugin.codecs.registry import register_codec


@register_codec
@dataclass
class WebPCodec(FFmpegCodec):
    """WebP lossy picture by libwebp (quality 0..100, higher = more bits)."""

    name: ClassVar[str] = "webp"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "quality", 0, 100, higher_is_more_bits=True, integer=False, description="libwebp quality factor")
    encoder: ClassVar[str] = "libwebp"
    decoder: ClassVar[str] = "webp"
    container: ClassVar[str] = "webp"
    size_header: ClassVar[bool] = False  # no padding either

    compression_level: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.compression_level <= 6:
            raise ValueError(f"webp compression_level {self.compression_level!r} is outside 0..6")
        self._colour = ColourConversion("bt601", "tv", "yuv420p")

    def encode_filter(self) -> str:
        return "format=bgra"

    def decode_filter(self) -> str:
        return self._colour.to_rgb()

    def encoder_args(self, quality: Quality) -> list[str]:
        return ["-quality", f"{float(quality):g}", "-compression_level", str(self.compression_level),
                "-preset", "none"]

    def demuxer_args(self) -> list[str]:
        return ["-f", "webp_pipe"]
