"""LEB128 varints and a bounds-checked byte reader for the small headers codec adapters write.

Hand-written because the headers are a few bytes and no dependency is worth it. Codec
adapters and the learned-model packing share it, so it sits at the bottom of the layers.
"""

from __future__ import annotations

from vcm_plugin.errors import BitstreamFormatError


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last byte."""
    if value < 0:
        raise ValueError(f"varint of negative value {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class ByteReader:
    """Reads a header front to back from byte ``pos``; truncation raises :class:`BitstreamFormatError` naming
    ``source``."""

    def __init__(self, data: bytes, source: str, pos: int = 0) -> None:
        self.data, self.pos, self.source = data, pos, source

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamFormatError(f"{self.source}: truncated bitstream (reading {what})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = shift = 0
        for _ in range(10):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
        raise BitstreamFormatError(f"{self.source}: malformed varint ({what})")
