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
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "CRC-32"),
        (lambda b: b"", "too short"),
        (lambda b: b[:5] + b"\x09" + b[6:], "version 9"),
    ],
)
def test_damaged_files_name_the_source(mangle, message) -> None:
    blob = mangle(make(b"payload" * 10).to_bytes())
    with pytest.raises(BitstreamFormatError, match=message) as info:
        Bitstream.from_bytes(blob, source="kodim23.vcmb")
    assert "kodim23.vcmb" in str(info.value)
