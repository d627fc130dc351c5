"""VVC (H.266) intra coding with libvvenc and ffmpeg's native VVC decoder: the embedded anchor.

The picture is converted from RGB to Y'CbCr 4:2:0 at 10 bits (BT.709 limited range by
default), padded by edge replication to even size and at least 64x64 (libvvenc
rejects odd sizes, and ffmpeg's wrapper fails on pictures needing more than 8 bpp,
which tiny pictures do), coded as one intra picture at a fixed QP with perceptual
QP adaptation off (``-qpa 0``), and cropped after decoding. The rate is the raw VVC
stream plus the 2-4 byte original-size header. A small picture that needs more than
8 bpp (noise at a low QP) overflows the W*H-byte output buffer of ffmpeg's libvvenc
wrapper; it is then coded on a canvas twice as large each way (edge replication, up
to 3 times), and the extra bits are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from vcm_plugin.codecs.base import Quality, QualityRange
from vcm_plugin.codecs.ffmpeg import ColourConversion, FFmpegCodec
from vcm_plugin.codecs.registry import register_codec

VVCPreset = Literal["faster", "fast", "medium", "slow", "slower"]


@dataclass
class YuvFFmpegCodec(FFmpegCodec):
    """An ffmpeg codec that codes Y'CbCr converted from RGB with an explicit matrix and range.

    PNG and raw RGB carry no colour matrix, and swscale silently picks BT.601 when none
    is given, so both directions name the matrix and range explicitly.
    """

    matrix: str = "bt709"
    range: str = "tv"
    pix_fmt: ClassVar[str] = "yuv420p10le"

    def __post_init__(self) -> None:
        self._colour = ColourConversion(self.matrix, self.range, self.pix_fmt)

    def encode_filter(self) -> str:
        return self._colour.to_yuv()

    def decode_filter(self) -> str:
        return self._colour.to_rgb()


@register_codec
@dataclass
class VVCCodec(YuvFFmpegCodec):
    """VVC intra picture by libvvenc (QP 0..63, lower QP = more bits)."""

    name: ClassVar[str] = "vvc"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "qp", 0, 63, higher_is_more_bits=False, description="VVC quantisation parameter")
    encoder: ClassVar[str] = "libvvenc"
    decoder: ClassVar[str] = "vvc"
    container: ClassVar[str] = "vvc"
    canvas_retries: ClassVar[int] = 3

    preset: VVCPreset = "medium"
    threads: int = 0  # 0 = the encoder's default; the harness sets 1 per worker process

    PRESETS: ClassVar[tuple[str, ...]] = get_args(VVCPreset)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in self.PRESETS:  # built directly, not by the registry
            raise ValueError(f"vvc preset {self.preset!r} is not one of {self.PRESETS}")

    def encoder_args(self, quality: Quality) -> list[str]:
        return ["-preset", self.preset, "-qp", str(int(quality)), "-qpa", "0", "-period", "1",
                "-threads", str(self.threads)]
