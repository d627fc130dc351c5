"""HEVC (H.265) intra coding with libx265 and ffmpeg's native HEVC decoder.

Same colour path as :mod:`vcm_plugin.codecs.vvc`: RGB to Y'CbCr 4:2:0 at 10 bits
(BT.709 limited range by default; x265 codes it in the Main 10 intra profile),
padded by edge replication to even size and at least 16x16 (x265 rejects smaller
pictures), one intra picture at a fixed QP, cropped after decoding. The rate is the
raw HEVC stream (``-f hevc``: VPS, SPS, PPS and one IDR slice) plus a 3-7 byte
header: the original size and the stream's length. The length is there because
ffmpeg's HEVC decoder conceals a truncated slice silently (no ``-err_detect`` flag
makes it fail), so the adapter rejects a truncated stream itself.

x265 settings chosen for a fixed-QP anchor in the spirit of the HM all-intra CTC:
``keyint=1`` (all intra), ``qp=Q``, ``aq-mode=0`` (no adaptive quantisation),
``psy-rd=0`` and ``psy-rdoq=0`` (no psycho-visual rate-distortion tweaks, which trade
PSNR for "grain" and change the rate at a fixed QP), ``info=0`` (x265 otherwise
writes its whole command line into an SEI message, about 2.3 kB per picture: rate
that is not picture data), ``log-level=error``. Deblocking and SAO stay on as in HM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from vcm_plugin.codecs.base import Quality, QualityRange
from vcm_plugin.codecs.registry import register_codec
from vcm_plugin.codecs.vvc import YuvFFmpegCodec

HEVCPreset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                     "placebo"]


@register_codec
@dataclass
class HEVCCodec(YuvFFmpegCodec):
    """HEVC intra picture by libx265 (QP 0..51, lower QP = more bits)."""

    name: ClassVar[str] = "hevc"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "qp", 0, 51, higher_is_more_bits=False, description="HEVC quantisation parameter")
    encoder: ClassVar[str] = "libx265"
    decoder: ClassVar[str] = "hevc"
    container: ClassVar[str] = "hevc"
    pad_minimum: ClassVar[int] = 16  # x265 rejects pictures smaller than 16x16 ("Image size is too small")
    payload_length: ClassVar[bool] = True  # the decoder conceals truncation; the header catches it

    preset: HEVCPreset = "medium"
    threads: int = 0  # 0 = x265's default thread pool; N = a pool of N threads, one frame thread

    PRESETS: ClassVar[tuple[str, ...]] = get_args(HEVCPreset)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in self.PRESETS:  # built directly, not by the registry
            raise ValueError(f"hevc preset {self.preset!r} is not one of {self.PRESETS}")
        if self.threads < 0:
            raise ValueError(f"hevc threads {self.threads!r} must be >= 0")

    def encoder_args(self, quality: Quality) -> list[str]:
        params = f"keyint=1:qp={int(quality)}:aq-mode=0:psy-rd=0:psy-rdoq=0:info=0:log-level=error"
        if self.threads:
            params += f":pools={self.threads}:frame-threads=1"
        return ["-preset", self.preset, "-x265-params", params]
