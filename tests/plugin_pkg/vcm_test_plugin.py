"""An out-of-tree codec: drop low bits of every sample, then zlib. It imports only the public API."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vcm_plugin import Bitstream, Codec, QualityRange


@dataclass
class PosterizeZlibCodec(Codec):
    name: ClassVar[str] = "posterize-zlib"
    quality_range: ClassVar[QualityRange] = QualityRange("bits", 1, 8, higher_is_more_bits=True)

    level: int = 9

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        shift = 8 - int(quality)
        kept = (image >> shift).astype(np.uint8)
        header = bytes([shift]) + image.shape[0].to_bytes(4, "big") + image.shape[1].to_bytes(4, "big")
        return self.make_bitstream(header + zlib.compress(kept.tobytes(), self.level), quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        shift, data = bitstream.data[0], bitstream.data[9:]
        height, width = int.from_bytes(bitstream.data[1:5], "big"), int.from_bytes(bitstream.data[5:9], "big")
        kept = np.frombuffer(zlib.decompress(data), np.uint8).reshape(height, width, 3)
        return ((kept.astype(np.uint16) << shift) + ((1 << shift) >> 1)).astype(np.uint8)
