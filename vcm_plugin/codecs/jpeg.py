"""JPEG through Pillow (libjpeg-turbo): quality 1..100, 4:2:0 by default.

The rate is the whole JFIF file Pillow writes; nothing is added.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from vcm_plugin.codecs.base import Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.registry import register_codec
from vcm_plugin.errors import DecodeError

_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


@functools.cache
def jpeg_library_version() -> str:
    """``"Pillow X libjpeg-turbo Y"`` (or ``libjpeg Y`` when Pillow is not built with libjpeg-turbo)."""
    from PIL import __version__ as pillow_version
    from PIL import features

    turbo = features.version("libjpeg_turbo")
    library = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version_codec('jpg')}"
    return f"Pillow {pillow_version} {library}"


@register_codec
@dataclass
class JPEGCodec(Codec):
    """Baseline JPEG (quality 1..100, higher = more bits); options subsampling, optimize."""

    name: ClassVar[str] = "jpeg"
    quality_range: ClassVar[QualityRange] = QualityRange(
        "quality", 1, 100, higher_is_more_bits=True, description="libjpeg quality factor")

    subsampling: str = "4:2:0"
    optimize: bool = False

    def __post_init__(self) -> None:
        if self.subsampling not in _SUBSAMPLING:
            raise ValueError(f"jpeg subsampling {self.subsampling!r} is not one of {sorted(_SUBSAMPLING)}")

    def version(self) -> str:
        """The adapter identity plus Pillow's and its JPEG library's (libjpeg-turbo) versions."""
        return f"{super().version()} | {jpeg_library_version()}"

    def _encode(self, image: np.ndarray, quality: Quality) -> Bitstream:
        buffer = io.BytesIO()
        Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=int(quality),
                                           subsampling=_SUBSAMPLING[self.subsampling], optimize=self.optimize)
        return self.make_bitstream(buffer.getvalue(), quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        with Image.open(io.BytesIO(bitstream.data), formats=["JPEG"]) as img:
            img.load()  # raises OSError on truncation (LOAD_TRUNCATED_IMAGES stays False)
            if img.mode != "RGB":
                raise DecodeError(f"codec 'jpeg': decoded mode {img.mode}, expected RGB")
            return np.asarray(img, dtype=np.uint8).copy()
