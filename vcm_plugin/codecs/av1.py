"""AV1 still-picture coding with libaom (or SVT-AV1) and the dav1d decoder.

Same colour path as :mod:`vcm_plugin.codecs.vvc`: RGB to Y'CbCr 4:2:0 at 10 bits
(BT.709 limited range by default), padded by edge replication to even size, one key
frame at a fixed quantiser, cropped after decoding. The rate is the raw AV1 stream
(``-f obu``: low-overhead OBUs with a temporal delimiter, the sequence header and one
frame; about 10-20 bytes of framing) plus the 2-4 byte original-size header.

Quality is the encoder's constant-quality level 0..63 (``-crf`` with ``-b:v 0``;
lower = more bits); at a single key frame it acts as a fixed base quantiser index.

* ``encoder="libaom-av1"`` (default, the AV1 reference encoder): ``-usage allintra
  -still-picture 1`` (reduced still-picture sequence header, as AVIF), ``-aq-mode 0``
  and ``deltaq-mode=0`` (no adaptive / perceptual quantisation), ``tune=psnr``;
  ``cpu_used`` is ``-cpu-used`` (0..8, higher = faster, default 4).
* ``encoder="libsvtav1"``: ``-svtav1-params`` ``avif=1`` (still-picture mode),
  ``aq-mode=0``, ``enable-variance-boost=0``, ``tune=1`` (PSNR); ``cpu_used`` is
  ``-preset`` (-2..13, higher = faster). SVT-AV1 prints its banner on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vcm_plugin.codecs.base import Quality, QualityRange
from vcm_plugin.codecs.registry import register_codec
from vcm_plugin.codecs.vvc import YuvFFmpegCodec


@register_codec
@dataclass
class AV1Codec(YuvFFmpegCodec):
    """AV1 intra (still) picture by libaom-av1 or libsvtav1 (0..63, lower = more bits)."""

    name: ClassVar[str] = "av1"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "crf", 0, 63, higher_is_more_bits=False, description="AV1 constant-quality level (fixed quantiser)")
    decoder: ClassVar[str] = "libdav1d"
    container: ClassVar[str] = "obu"
    pad_minimum: ClassVar[int] = 2  # checked down to 2x2; only even sizes for 4:2:0

    encoder: str = "libaom-av1"  # type: ignore[misc]  (a parameter here, a ClassVar in the base)
    cpu_used: int = 4
    threads: int = 0  # 0 = the encoder's default

    ENCODERS: ClassVar[dict[str, tuple[int, int]]] = {"libaom-av1": (0, 8), "libsvtav1": (-2, 13)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in self.ENCODERS:
            raise ValueError(f"av1 encoder {self.encoder!r} is not one of {sorted(self.ENCODERS)}")
        low, high = self.ENCODERS[self.encoder]
        if not low <= self.cpu_used <= high:
            raise ValueError(f"av1 cpu_used {self.cpu_used!r} is outside {low}..{high} for {self.encoder}")
        if self.threads < 0:
            raise ValueError(f"av1 threads {self.threads!r} must be >= 0")

    def encoder_args(self, quality: Quality) -> list[str]:
        q = str(int(quality))
        if self.encoder == "libsvtav1":
            params = "avif=1:aq-mode=0:enable-variance-boost=0:tune=1"
            if self.threads:
                params += f":lp={self.threads}"
            return ["-preset", str(self.cpu_used), "-crf", q, "-b:v", "0", "-svtav1-params", params]
        return ["-usage", "allintra", "-still-picture", "1", "-cpu-used", str(self.cpu_used), "-crf", q, "-b:v", "0",
                "-aq-mode", "0", "-tune", "psnr", "-aom-params", "deltaq-mode=0", "-threads", str(self.threads)]
