"""The ffmpeg-backed codecs HEVC (libx265), AV1 (libaom / SVT-AV1), JPEG XL and WebP on real pictures.

Each codec runs with a fast setting on a 96x128 crop of kodim23; commands are checked
apart from running them; damaged streams must give a DecodeError naming the codec.
"""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.codecs.av1 import AV1Codec
from vcm_plugin.codecs.base import Bitstream
from vcm_plugin.codecs.ffmpeg import FFmpegCodec, unpack_size
from vcm_plugin.codecs.hevc import HEVCCodec
from vcm_plugin.codecs.jxl import JXLCodec
from vcm_plugin.codecs.registry import get_codec
from vcm_plugin.codecs.webp import WebPCodec
from vcm_plugin.errors import CodecUnavailableError, DecodeError, QualityError

TIMEOUT = 15.0  # seconds per ffmpeg run: a decoder that hangs fails the test instead of stalling it
BT709 = (0.2126, 0.7152, 0.0722)
BT601 = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class Case:
    """A fast configuration of one codec and what to expect of it."""

    make: Callable[..., FFmpegCodec]
    qualities: tuple  # three qualities, from fewest to most bits
    top: float  # the highest-rate quality
    luma: tuple[float, float, float]  # the luma weights of the codec's colour path
    format_header: int  # bytes of the format's own header in a headerless stream (0: adapter header)


CASES = {
    "hevc": Case(lambda **kw: HEVCCodec(preset="ultrafast", timeout=TIMEOUT, **kw), (37, 27, 17), 0, BT709, 0),
    "av1-aom": Case(lambda **kw: AV1Codec(cpu_used=8, timeout=TIMEOUT, **kw), (50, 35, 20), 0, BT709, 0),
    "av1-svt": Case(lambda **kw: AV1Codec(encoder="libsvtav1", cpu_used=10, timeout=TIMEOUT, **kw),
                    (50, 35, 20), 0, BT709, 0),
    "jxl": Case(lambda **kw: JXLCodec(effort=3, timeout=TIMEOUT, **kw), (6.0, 2.0, 0.7), 0.1, BT601, 2),
    "webp": Case(lambda **kw: WebPCodec(compression_level=2, timeout=TIMEOUT, **kw), (20, 60, 90), 100, BT601, 20),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[FFmpegCodec, Case]:
    spec = CASES[request.param]
    codec = spec.make()
    availability = codec.is_available()
    if not availability:
        pytest.skip(f"{request.param}: {availability.reason}")
    return codec, spec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def header_length(codec: FFmpegCodec, bitstream: Bitstream, spec: Case) -> int:
    """Bytes in front of the coded picture data: the adapter's header, then the format's own."""
    offset = unpack_size(bitstream.data)[2] if codec.size_header else 0
    if codec.payload_length:  # one more LEB128 varint
        while bitstream.data[offset] & 0x80:
            offset += 1
        offset += 1
    return offset + spec.format_header


def real_strip(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A ``height`` x ``width`` piece of a real picture (tiled when the picture is smaller)."""
    reps = (-(-height // image.shape[0]), -(-width // image.shape[1]), 1)
    return np.ascontiguousarray(np.tile(image, reps)[:height, :width])


# -- round trips -------------------------------------------------------------------------
def test_round_trip_real_crop(case: tuple[FFmpegCodec, Case], small_crop: np.ndarray) -> None:
    codec, spec = case
    bitstream = codec.encode(small_crop, spec.qualities[1])
    assert bitstream.codec == codec.name and bitstream.quality == spec.qualities[1]
    assert (bitstream.height, bitstream.width) == small_crop.shape[:2]
    assert 0.05 < bitstream.bpp < 4.0
    decoded = codec.decode(bitstream)
    assert decoded.shape == small_crop.shape and decoded.dtype == np.uint8
    assert 30.0 < psnr(small_crop, decoded) < 50.0
    # the bitstream survives the .vcmb file format
    again = codec.decode(Bitstream.from_bytes(bitstream.to_bytes()))
    np.testing.assert_array_equal(again, decoded)


def test_rate_and_quality_monotonic(case: tuple[FFmpegCodec, Case], small_crop: np.ndarray) -> None:
    codec, spec = case
    streams = [codec.encode(small_crop, q) for q in spec.qualities]
    bits = [s.num_bits for s in streams]
    assert bits[0] < bits[1] < bits[2], bits
    psnrs = [psnr(small_crop, codec.decode(s)) for s in streams]
    assert psnrs[0] < psnrs[1] < psnrs[2], psnrs


@pytest.mark.parametrize("height, width", [(1, 1), (3, 5), (5, 3), (1, 1001), (1001, 1)])
def test_odd_and_tiny_sizes(case: tuple[FFmpegCodec, Case], kodim23: np.ndarray, height: int, width: int) -> None:
    codec, spec = case
    image = real_strip(kodim23[250:], height, width)
    bitstream = codec.encode(image, spec.qualities[2])
    decoded = codec.decode(bitstream)
    assert decoded.shape == (height, width, 3)
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 6.0


def test_noise_at_the_highest_rate(case: tuple[FFmpegCodec, Case]) -> None:
    codec, spec = case
    noise = np.random.default_rng(23).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    decoded = codec.decode(codec.encode(noise, spec.top))
    assert decoded.shape == noise.shape
    # 4:2:0 codecs cannot keep colour noise, but luma must survive at the highest rate
    weights = np.array(spec.luma)
    correlation = np.corrcoef((decoded @ weights).ravel(), (noise @ weights).ravel())[0, 1]
    assert correlation > 0.95


def test_headerless_formats(small_crop: np.ndarray) -> None:
    """WebP and JPEG XL carry the size themselves: no size header in front of the file."""
    webp, jxl = CASES["webp"].make(), CASES["jxl"].make()
    if not (webp.is_available() and jxl.is_available()):
        pytest.skip("webp or jxl unavailable")
    data = webp.encode(small_crop, 60).data  # the plain .webp file
    assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8 "  # simple lossy file: no alpha or extended chunks
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    data = jxl.encode(small_crop, 2.0).data  # the codestream's length (LEB128), then the bare codestream
    assert data[2:4] == b"\xff\x0a" and (data[0] & 0x7F) + (data[1] << 7) == len(data) - 2


# -- damaged streams ---------------------------------------------------------------------
DAMAGE = {
    "truncated to 50 %": lambda head, body, rng: head + body[: len(body) // 2],
    "truncated to 10 bytes": lambda head, body, rng: (head + body)[:10],
    "one byte missing": lambda head, body, rng: head + body[:-1],
    "zeros after the header": lambda head, body, rng: head + bytes(len(body)),
    "garbage after the header": lambda head, body, rng: head + rng.integers(0, 256, len(body), np.uint8).tobytes(),
    "garbage only": lambda head, body, rng: rng.integers(0, 256, len(head) + len(body), np.uint8).tobytes(),
    "one byte appended": lambda head, body, rng: head + body + b"\x00",
    "malformed size header": lambda head, body, rng: b"\xff" * 6 + body,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_stream_gives_decode_error(case: tuple[FFmpegCodec, Case], small_crop: np.ndarray,
                                           damage: str) -> None:
    codec, spec = case
    bitstream = codec.encode(small_crop, spec.qualities[1])
    cut = header_length(codec, bitstream, spec)
    data = DAMAGE[damage](bitstream.data[:cut], bitstream.data[cut:], np.random.default_rng(7))
    if damage == "one byte appended" and codec.name == "webp":
        # the RIFF header holds the file's length: the decoder ignores what follows
        np.testing.assert_array_equal(codec.decode(dataclasses.replace(bitstream, data=data)), codec.decode(bitstream))
        return
    with pytest.raises(DecodeError, match=f"'{codec.name}'") as excinfo:
        codec.decode(dataclasses.replace(bitstream, data=data))
    assert "timed out" not in str(excinfo.value)


def test_flipped_byte_never_hangs_or_changes_the_size(case: tuple[FFmpegCodec, Case],
                                                      small_crop: np.ndarray) -> None:
    """A flipped byte inside entropy-coded data is not always detectable (no checksum in
    HEVC, VP8 or AV1 tiles): the decoder must either fail with DecodeError or give a
    picture of the right size, within the timeout."""
    codec, spec = case
    bitstream = codec.encode(small_crop, spec.qualities[1])
    data = bytearray(bitstream.data)
    for position in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        try:
            decoded = codec.decode(dataclasses.replace(bitstream, data=bytes(damaged)))
        except DecodeError as exc:
            assert f"'{codec.name}'" in str(exc) and "timed out" not in str(exc)
        else:
            assert decoded.shape == small_crop.shape


def test_bitstream_of_another_codec_is_refused(small_crop: np.ndarray) -> None:
    webp, hevc = CASES["webp"].make(), CASES["hevc"].make()
    if not (webp.is_available() and hevc.is_available()):
        pytest.skip("webp or hevc unavailable")
    stream = webp.encode(small_crop, 50)
    with pytest.raises(DecodeError, match="'hevc'.*'webp'"):
        hevc.decode(stream)
    with pytest.raises(DecodeError, match="'hevc'"):  # same bytes, relabelled
        hevc.decode(dataclasses.replace(stream, codec="hevc"))


# -- quality and parameters --------------------------------------------------------------
@pytest.mark.parametrize("name, bad", [
    ("hevc", -1), ("hevc", 52), ("hevc", 22.5), ("av1-aom", 64), ("av1-svt", -1),
    ("jxl", 0.0), ("jxl", 15.5), ("jxl", float("nan")), ("webp", 100.5), ("webp", -1), ("webp", "75"),
])
def test_quality_out_of_range(small_crop: np.ndarray, name: str, bad: object) -> None:
    codec = CASES[name].make()
    with pytest.raises(QualityError, match=f"'{codec.name}'.*{codec.quality_range.name}"):
        codec.encode(small_crop, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, params", [
    ("hevc", {"preset": "turbo"}), ("hevc", {"threads": -1}), ("av1", {"encoder": "librav1e"}),
    ("av1", {"cpu_used": 9}), ("av1", {"encoder": "libsvtav1", "cpu_used": 14}), ("jxl", {"effort": 10}),
    ("webp", {"compression_level": 7}),
])
def test_bad_parameters(name: str, params: dict) -> None:
    cls = type(get_codec(name))
    with pytest.raises(ValueError, match=str(next(iter(params.values())))):
        cls(**params)


def test_registered_with_parameters() -> None:
    assert isinstance(get_codec("hevc"), HEVCCodec)
    assert isinstance(get_codec("jxl"), JXLCodec) and isinstance(get_codec("webp"), WebPCodec)
    av1 = get_codec("av1", encoder="libsvtav1", cpu_used=8)
    assert isinstance(av1, AV1Codec)
    assert av1.params() == {"ffmpeg": None, "timeout": 300.0, "matrix": "bt709", "range": "tv",
                            "encoder": "libsvtav1", "cpu_used": 8, "threads": 0}
    assert get_codec("hevc").quality_range.higher_is_more_bits is False
    assert get_codec("webp").quality_range.higher_is_more_bits is True
    assert get_codec("jxl").quality_range.integer is False


# -- availability --------------------------------------------------------------------------
FAKE_ENCODERS = ["libvvenc", "libx264", "libwebp_anim", "librav1e", "libjxl_anim"]
FAKE_DECODERS = ["vvc", "hevc", "libdav1d", "av1", "libjxl", "webp"]


def fake_ffmpeg(tmp_path: Path, encoders: list[str], decoders: list[str]) -> str:
    """An 'ffmpeg' that lists the given components and fails at anything else."""
    enc = "".join(f'echo " V....D {e:<20} fake encoder"\n' for e in encoders)
    dec = "".join(f'echo " V....D {d:<20} fake decoder"\n' for d in decoders)
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\ncase "$*" in\n*-encoders*)\n{enc};;\n*-decoders*)\n{dec};;\n'
                      f'*) echo "fake ffmpeg cannot run" >&2; exit 1;;\nesac\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize("name, missing", [
    ("hevc", "libx265"), ("av1-aom", "libaom-av1"), ("av1-svt", "libsvtav1"), ("jxl", "libjxl"), ("webp", "libwebp"),
])
def test_ffmpeg_without_the_encoder(tmp_path: Path, small_crop: np.ndarray, name: str, missing: str) -> None:
    codec = CASES[name].make(ffmpeg=fake_ffmpeg(tmp_path, FAKE_ENCODERS, FAKE_DECODERS))
    availability = codec.is_available()
    assert not availability
    assert f"'{missing}' encoder" in availability.reason
    with pytest.raises(CodecUnavailableError, match=f"'{codec.name}'.*'{missing}'"):
        codec.encode(small_crop, CASES[name].qualities[0])


def test_ffmpeg_without_the_decoder(tmp_path: Path, small_crop: np.ndarray) -> None:
    exe = fake_ffmpeg(tmp_path, ["libx265", "libaom-av1"], ["hevc"])
    assert HEVCCodec(ffmpeg=exe).is_available()
    availability = AV1Codec(ffmpeg=exe).is_available()
    assert not availability and "'libdav1d' decoder" in availability.reason


# -- commands (built apart from running) ---------------------------------------------------
HEAD = ["ff", "-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x96",
        "-r", "1", "-i", "pipe:0"]
TO_YUV709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int,format=yuv420p10le"]


@pytest.mark.parametrize("codec, quality, expected", [
    (HEVCCodec(), 32, [*TO_YUV709, "-frames:v", "1", "-c:v", "libx265", "-preset", "medium", "-x265-params",
                       "keyint=1:qp=32:aq-mode=0:psy-rd=0:psy-rdoq=0:info=0:log-level=error", "-f", "hevc"]),
    (HEVCCodec(preset="fast", threads=1), 0, [
        *TO_YUV709, "-frames:v", "1", "-c:v", "libx265", "-preset", "fast", "-x265-params",
        "keyint=1:qp=0:aq-mode=0:psy-rd=0:psy-rdoq=0:info=0:log-level=error:pools=1:frame-threads=1", "-f", "hevc"]),
    (AV1Codec(), 30, [*TO_YUV709, "-frames:v", "1", "-c:v", "libaom-av1", "-usage", "allintra", "-still-picture", "1",
                      "-cpu-used", "4", "-crf", "30", "-b:v", "0", "-aq-mode", "0", "-tune", "psnr",
                      "-aom-params", "deltaq-mode=0", "-threads", "0", "-f", "obu"]),
    (AV1Codec(encoder="libsvtav1", cpu_used=8, threads=2), 63, [
        *TO_YUV709, "-frames:v", "1", "-c:v", "libsvtav1", "-preset", "8", "-crf", "63", "-b:v", "0",
        "-svtav1-params", "avif=1:aq-mode=0:enable-variance-boost=0:tune=1:lp=2", "-f", "obu"]),
    (JXLCodec(), 1.5, ["-frames:v", "1", "-c:v", "libjxl", "-distance", "1.5", "-effort", "7", "-modular", "0",
                       "-xyb", "1", "-color_primaries", "bt709", "-color_trc", "iec61966-2-1", "-colorspace", "rgb",
                       "-threads", "0", "-f", "image2pipe"]),
    (WebPCodec(), 75, ["-vf", "format=bgra", "-frames:v", "1", "-c:v", "libwebp", "-quality", "75",
                       "-compression_level", "4", "-preset", "none", "-f", "webp"]),
], ids=["hevc", "hevc-threads", "av1-aom", "av1-svt", "jxl", "webp"])
def test_encode_command(codec: FFmpegCodec, quality: float, expected: list[str]) -> None:
    assert codec.encode_command(96, 128, quality, executable="ff") == [*HEAD, *expected, "pipe:1"]


@pytest.mark.parametrize("codec, demuxer, decoder, matrix", [
    (HEVCCodec(), "hevc", "hevc", "bt709"), (AV1Codec(encoder="libsvtav1"), "obu", "libdav1d", "bt709"),
    (JXLCodec(), "jpegxl_pipe", "libjxl", None), (WebPCodec(), "webp_pipe", "webp", "smpte170m"),
])
def test_decode_command(codec: FFmpegCodec, demuxer: str, decoder: str, matrix: str | None) -> None:
    command = codec.decode_command("ff")
    assert command[command.index("-i") - 4: command.index("-i")] == ["-f", demuxer, "-c:v", decoder]
    assert "explode" in command and command[-1] == "pipe:1"
    vf = command[command.index("-vf") + 1]
    assert vf == ("format=rgb24" if matrix is None else
                  f"scale=in_color_matrix={matrix}:in_range=tv:flags=accurate_rnd+full_chroma_int,format=rgb24")
