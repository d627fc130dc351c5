"""JPEG XL lossy coding with libjxl, on the RGB picture itself.

No Y'CbCr conversion and no padding: libjxl takes the 8-bit sRGB picture (the input
is tagged sRGB / BT.709 primaries explicitly, as PNG pictures are) and converts it to
its own XYB space internally. The JPEG XL codestream codes any size exactly and
carries it, so there is no size header (``size_header = False``); the rate is the
bare codestream (``FF 0A`` signature; ``-f image2pipe`` out, ``-f jpegxl_pipe`` in)
preceded by its length as one LEB128 varint (2-3 bytes, ``payload_length = True``).
The length is there because ffmpeg's libjxl decoder wrapper spins forever on a
codestream followed by a single extra byte (libjxl asks for more input and the
wrapper retries the same byte), so the adapter rejects such a stream itself.

Quality is the butteraugli ``distance`` of libjxl (``cjxl -d``), the encoder's own
parameter: 0.1..15 (float), lower = more bits; 1.0 is "visually lossless", the
recommended range is 0.5..3. (``cjxl -q`` 1..100 is only a mapping onto distance.)
Lossless (distance 0) is excluded. ``effort`` is libjxl's speed/size trade-off
(1..9, default 7 as in cjxl, higher = slower and smaller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vcm_plugin.codecs.base import Quality, QualityRange
from vcm_plugin.codecs.ffmpeg import FFmpegCodec
from vcm_plugin.codecs.registry import register_codec


@register_codec
@dataclass
class JXLCodec(FFmpegCodec):
    """JPEG XL lossy picture by libjxl (butteraugli distance 0.1..15, lower = more bits)."""

    name: ClassVar[str] = "jxl"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "distance", 0.1, 15.0, higher_is_more_bits=False, integer=False,
        description="JPEG XL butteraugli distance (1.0 = visually lossless)")
    encoder: ClassVar[str] = "libjxl"
    decoder: ClassVar[str] = "libjxl"
    container: ClassVar[str] = "image2pipe"
    size_header: ClassVar[bool] = False  # no padding either
    payload_length: ClassVar[bool] = True  # ffmpeg's libjxl wrapper hangs on one trailing byte

    effort: int = 7
    threads: int = 0  # 0 = ffmpeg's default

    def __post_init__(self) -> None:
        if not 1 <= self.effort <= 9:
            raise ValueError(f"jxl effort {self.effort!r} is outside 1..9")
        if self.threads < 0:
            raise ValueError(f"jxl threads {self.threads!r} must be >= 0")

    def encoder_args(self, quality: Quality) -> list[str]:
        return ["-distance", f"{float(quality):g}", "-effort", str(self.effort), "-modular", "0", "-xyb", "1",
                "-color_primaries", "bt709", "-color_trc", "iec61966-2-1", "-colorspace", "rgb",
                "-threads", str(self.threads)]

    def demuxer_args(self) -> list[str]:
        return ["-f", "jpegxl_pipe"]
