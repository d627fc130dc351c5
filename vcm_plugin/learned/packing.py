"""The byte layout of a learned codec's bitstream: a small header plus the entropy-coded strings.

CompressAI's ``compress`` returns ``{"strings": [[bytes], [bytes], ...], "shape": (h, w)}``
(one string list per entropy model, batch of 1). The decoder needs every string, the
latent ``shape``, the original picture size (to crop the padding away) and must know
which model made the stream. Layout (LEB128 varints, all counted in the rate)::

    version (1 byte) | model tag (4 bytes) | quality (1 byte) | width | height |
    shape dims n | n shape values | string count k | k x (length | bytes)

The model tag is the first 4 bytes of the SHA-256 of the model identity (architecture,
metric, quality and weights hash), so a stream decoded with another model is refused
instead of decoding to garbage. Typical overhead: 12-16 bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vcm_plugin.errors import BitstreamFormatError
from vcm_plugin.varint import ByteReader, encode_varint

VERSION = 1


def model_tag(identity: str) -> bytes:
    """4 bytes identifying a model (SHA-256 prefix of its identity string)."""
    return hashlib.sha256(identity.encode("utf-8")).digest()[:4]


@dataclass(frozen=True)
class LearnedPayload:
    """Everything a learned decoder reads: tag, quality, original size (pixels), latent shape, strings."""

    tag: bytes
    quality: int
    height: int
    width: int
    shape: tuple[int, ...]
    strings: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        if len(self.tag) != 4 or not 0 <= self.quality < 256:
            raise ValueError("model tag must be 4 bytes and quality 0..255")
        out = bytearray([VERSION]) + self.tag + bytes([self.quality])
        out += encode_varint(self.width) + encode_varint(self.height) + encode_varint(len(self.shape))
        for dim in self.shape:
            out += encode_varint(dim)
        out += encode_varint(len(self.strings))
        for string in self.strings:
            out += encode_varint(len(string)) + string
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "learned bitstream") -> LearnedPayload:
        """Parse; a wrong version, truncation or trailing bytes raise :class:`BitstreamFormatError`."""
        reader = ByteReader(bytes(data), source)
        (version,) = reader.take(1, "version")
        if version != VERSION:
            raise BitstreamFormatError(f"{source}: unknown learned-bitstream version {version}")
        tag = reader.take(4, "model tag")
        (quality,) = reader.take(1, "quality")
        width, height = reader.varint("width"), reader.varint("height")
        ndims = reader.varint("shape dims")
        if ndims > 8:
            raise BitstreamFormatError(f"{source}: implausible latent shape with {ndims} dimensions")
        shape = tuple(reader.varint("shape") for _ in range(ndims))
        count = reader.varint("string count")
        if count > 64:
            raise BitstreamFormatError(f"{source}: implausible string count {count}")
        strings = tuple(reader.take(reader.varint("string length"), "string") for _ in range(count))
        if reader.pos != len(reader.data):
            raise BitstreamFormatError(f"{source}: {len(reader.data) - reader.pos} trailing bytes after the strings")
        return cls(tag, quality, height, width, shape, strings)
