"""Bitstream: honest rate arithmetic and the .vcmb file format."""

from __future__ import annotations

import pytest

from vcm_plugin import Bitstream, BitstreamFormatError


def make(data: bytes = b"\x01\x02\x03", quality: int | float = 32) -> Bitstream:
    return Bitstream(data=data, codec="vvc", quality=quality, height=512, width=768)


def test_rate_is_bits_over_original_pixels() -> None:
    bs = make(b"x" * 11037)
    assert bs.num_bits == 8 * 11037
    assert bs.bpp == pytest.approx(8 * 11037 / (512 * 768))


def test_round_trip_keeps_every_field() -> None:
    for quality in (32, 0.75):
        bs = make(b"payload" * 100, quality)
        back = Bitstream.from_bytes(bs.to_bytes())
        assert back == bs
        assert type(back.quality) is type(quality)


def test_side_info_is_kept_but_never_in_the_rate() -> None:
    bs = Bitstream(data=b"v" * 100, codec="fcm-vvc", quality=32, height=512, width=768, side_info=b"sizes" * 4)
    assert bs.num_bits == 800 and bs.side_info_bits == 160 and bs.bpp == pytest.approx(800 / (512 * 768))
    back = Bitstream.from_bytes(bs.to_bytes())
    assert back == bs and back.side_info == b"sizes" * 4
    with pytest.raises(TypeError, match="side_info must be bytes"):
        Bitstream(data=b"v", codec="fcm-vvc", quality=1, height=1, width=1, side_info="sizes")  # type: ignore[arg-type]


def test_version_2_files_are_still_read() -> None:
    """A .vcmb written before side information existed (format version 2) reads with empty side info."""
    import json
    import struct
    import zlib

    params = json.dumps({"preset": "medium"}).encode()
    body = struct.pack(">5sBHcdIIQI", b"VCMBS", 2, 3, b"i", 32.0, 512, 768, 4, len(params)) + b"vvc" + params
    body += b"data"
    back = Bitstream.from_bytes(body + struct.pack(">I", zlib.crc32(body)))
    assert (back.data, back.codec, back.quality, back.params, back.side_info) == (
        b"data", "vvc", 32, {"preset": "medium"}, b"")


def test_bitstream_is_frozen() -> None:
    with pytest.raises(AttributeError):
        make().data = b""  # type: ignore[misc]


def test_non_positive_size_rejected() -> None:
    with pytest.raises(ValueError, match="not positive"):
        Bitstream(data=b"x", codec="jpeg", quality=1, height=0, width=3)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "truncated or padded"),
        (lambda b: b"JUNK" + b[4:], "not a vcm-plugin bitstream"),
        (lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:], "CRC-32"),
        (lambda b: b"", "too short"),
        (lambda b: b[:5] + b"\x09" + b[6:], "version 9"),
    ],
)
def test_damaged_files_name_the_source(mangle, message) -> None:
    blob = mangle(make(b"payload" * 10).to_bytes())
    with pytest.raises(BitstreamFormatError, match=message) as info:
        Bitstream.from_bytes(blob, source="kodim23.vcmb")
    assert "kodim23.vcmb" in str(info.value)
