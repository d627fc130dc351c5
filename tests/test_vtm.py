"""The VTM adapter: command lines, availability, and the YUV file path through fake EncoderApp/DecoderApp.

The real VTM is never needed: tests/fake_vtm/ holds python stand-ins that parse the
same options, check the raw YUV size against -wdt/-hgt, and store/return the YUV
bytes as the "bitstream", so a round trip isolates conversion, padding and cropping.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import vcm_plugin
from vcm_plugin import CodecUnavailableError, DecodeError, EncodeError
from vcm_plugin.codecs import vtm as vtm_module
from vcm_plugin.codecs.ffmpeg import ColourConversion, pack_size
from vcm_plugin.codecs.vtm import VTMCodec
from vcm_plugin.codecs.yuv import read_yuv_file, write_yuv_file, yuv420_frame_bytes
from vcm_plugin.ffmpeg import find_ffmpeg, pad_edge

FAKE = Path(__file__).resolve().parent / "fake_vtm"
FAKE_ENCODER, FAKE_DECODER, FAKE_CFG = FAKE / "EncoderApp", FAKE / "DecoderApp", FAKE / "encoder_intra_fake.cfg"
FAKE_MAGIC = b"FAKEVTM1"
ENV_VARS = ("VTM_ENCODER", "VTM_DECODER", "VTM_CONFIG")

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the fake VTM programs are scripts with a shebang")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(autouse=True)
def no_vtm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a VTM the developer may have configured, nor a leftover fake mode."""
    for var in (*ENV_VARS, "FAKE_VTM_MODE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty folder, to check the adapter leaves nothing behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every program command the adapter runs (and still run it)."""
    seen: list[list[str]] = []
    real = vtm_module._run_program

    def recording(command: list[str], log: Path, timeout: float, cwd: Path) -> None:
        seen.append(list(command))
        assert Path(command[0]).exists() and cwd.is_dir()
        real(command, log, timeout, cwd)

    monkeypatch.setattr(vtm_module, "_run_program", recording)
    return seen


@pytest.fixture
def fake_codec() -> VTMCodec:
    assert os.access(FAKE_ENCODER, os.X_OK) and os.access(FAKE_DECODER, os.X_OK), "fake VTM lost its executable bit"
    return VTMCodec(encoder=str(FAKE_ENCODER), decoder=str(FAKE_DECODER), config=str(FAKE_CFG))


@pytest.fixture
def odd_crop(kodim23: np.ndarray) -> np.ndarray:
    """97x43: odd in both directions and below the 64-pixel minimum in height."""
    return np.ascontiguousarray(kodim23[180:223, 290:387])


# -- command lines ---------------------------------------------------------------------
def test_encoder_command_is_exact() -> None:
    codec = VTMCodec(encoder="/opt/vtm/bin/EncoderAppStatic", decoder="/opt/vtm/bin/DecoderAppStatic",
                     config="/opt/vtm/cfg/encoder_intra_vtm.cfg")
    assert codec.encoder_command("/w/in.yuv", "/w/out.bin", 768, 512, 37) == [
        "/opt/vtm/bin/EncoderAppStatic", "-c", "/opt/vtm/cfg/encoder_intra_vtm.cfg", "-i", "/w/in.yuv",
        "-b", "/w/out.bin", "-o", os.devnull, "-wdt", "768", "-hgt", "512", "-q", "37", "-f", "1", "-fr", "1",
        "--TemporalSubsampleRatio=1", "--InputBitDepth=10", "--InternalBitDepth=10", "--OutputBitDepth=10",
        "--InputChromaFormat=420", "--ConformanceWindowMode=1",
    ]
    with_extra = VTMCodec(encoder="E", decoder="D", config="c.cfg", extra_args=["--Level=6.2"])
    assert with_extra.encoder_command("i", "b", 64, 64, 0, recon="r.yuv")[-1] == "--Level=6.2"
    assert with_extra.encoder_command("i", "b", 64, 64, 0, recon="r.yuv")[7:9] == ["-o", "r.yuv"]


def test_decoder_command_is_exact() -> None:
    codec = VTMCodec(encoder="E", decoder="/opt/vtm/bin/DecoderAppStatic", config="c.cfg")
    assert codec.decoder_command("/w/out.bin", "/w/rec.yuv") == [
        "/opt/vtm/bin/DecoderAppStatic", "-b", "/w/out.bin", "-o", "/w/rec.yuv", "-d", "10"]


def test_paths_come_from_env_and_params_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTM_ENCODER", "/env/EncoderApp")
    monkeypatch.setenv("VTM_DECODER", "/env/DecoderApp")
    monkeypatch.setenv("VTM_CONFIG", "/env/intra.cfg")
    from_env = VTMCodec()
    assert from_env.encoder_command("i", "b", 64, 64, 22)[:3] == ["/env/EncoderApp", "-c", "/env/intra.cfg"]
    assert from_env.decoder_command("b", "o")[0] == "/env/DecoderApp"
    explicit = VTMCodec(encoder="/p/Enc", decoder="/p/Dec", config="/p/x.cfg")
    assert explicit.encoder_command("i", "b", 64, 64, 22)[:3] == ["/p/Enc", "-c", "/p/x.cfg"]
    assert explicit.decoder_command("b", "o")[0] == "/p/Dec"


def test_padded_size_reaches_the_encoder(fake_codec: VTMCodec, odd_crop: np.ndarray, small_crop: np.ndarray,
                                         commands: list[list[str]]) -> None:
    for image, (pw, ph) in ((odd_crop, (98, 64)), (small_crop, (128, 96))):
        fake_codec.encode(image, 30)
        cmd = commands[-1]
        assert cmd[cmd.index("-wdt") + 1] == str(pw) and cmd[cmd.index("-hgt") + 1] == str(ph)
        assert cmd[cmd.index("-q") + 1] == "30"


# -- availability ----------------------------------------------------------------------
def test_unconfigured_vtm_is_listed_unavailable_with_the_reason() -> None:
    rows = {row.name: row for row in vcm_plugin.available_codecs()}
    assert "vtm" in rows
    availability = rows["vtm"].availability
    assert not availability
    for hint in ("VTM EncoderApp not configured: set VTM_ENCODER or the codec parameter encoder=",
                 "set VTM_DECODER or the codec parameter decoder=", "set VTM_CONFIG or the codec parameter config="):
        assert hint in availability.reason
    assert "vtm" not in {row.name for row in vcm_plugin.available_codecs(include_unavailable=False)}


def test_unconfigured_vtm_refuses_to_run(small_crop: np.ndarray) -> None:
    codec = vcm_plugin.get_codec("vtm")
    with pytest.raises(CodecUnavailableError, match="VTM_ENCODER"):
        codec.encode(small_crop, 32)
    with pytest.raises(CodecUnavailableError, match="VTM_DECODER"):
        codec.decoder_command("b", "o")


def test_missing_or_non_executable_programs_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_executable = tmp_path / "DecoderApp"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    monkeypatch.setenv("VTM_CONFIG", str(tmp_path / "missing.cfg"))
    missing = str(tmp_path / "nowhere" / "EncoderApp")
    availability = VTMCodec(encoder=missing, decoder=str(not_executable)).is_available()
    assert not availability
    assert f"VTM EncoderApp {missing!r} (from parameter encoder=) not found" in availability.reason
    assert f"VTM DecoderApp {str(not_executable)!r}" in availability.reason and "not executable" in availability.reason
    assert "missing.cfg" in availability.reason and "$VTM_CONFIG" in availability.reason


def test_configured_fakes_are_available(fake_codec: VTMCodec, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fake_codec.is_available(), fake_codec.is_available().reason
    monkeypatch.setenv("VTM_ENCODER", str(FAKE_ENCODER))
    monkeypatch.setenv("VTM_DECODER", str(FAKE_DECODER))
    monkeypatch.setenv("VTM_CONFIG", str(FAKE_CFG))
    rows = {row.name: row for row in vcm_plugin.available_codecs(include_unavailable=False)}
    assert "vtm" in rows


# -- the YUV files ---------------------------------------------------------------------
def test_yuv_file_is_planar_10bit_limited_range_bt709(tmp_path: Path) -> None:
    grey = np.full((4, 6, 3), 128, np.uint8)
    path = tmp_path / "grey.yuv"
    assert write_yuv_file(grey, path, ColourConversion("bt709", "tv"), find_ffmpeg(), 30) == yuv420_frame_bytes(4, 6)
    samples = np.fromfile(path, "<u2")
    assert samples.size == 4 * 6 + 2 * 2 * 3
    # limited range: Y = 64 + 876 * 128 / 255 = 503.7, Cb = Cr = 512 (10-bit)
    assert (samples[:24] == 504).all() and (samples[24:] == 512).all()
    write_yuv_file(grey, path, ColourConversion("bt709", "pc"), find_ffmpeg(), 30)
    assert (np.fromfile(path, "<u2")[:24] >= 513).all()  # full range: 1023 * 128 / 255 = 513.5


def test_read_yuv_file_rejects_a_wrong_size(tmp_path: Path) -> None:
    path = tmp_path / "short.yuv"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="short.yuv"):
        read_yuv_file(path, 64, 64, ColourConversion(), find_ffmpeg(), 30)


# -- round trips through the fake pair -------------------------------------------------
def test_round_trip_reproduces_the_image(fake_codec: VTMCodec, odd_crop: np.ndarray, temp_root: Path,
                                         commands: list[list[str]], tmp_path: Path) -> None:
    bitstream = fake_codec.encode(odd_crop, 27)
    assert (bitstream.codec, bitstream.quality, bitstream.height, bitstream.width) == ("vtm", 27, 43, 97)
    header = pack_size(43, 97)
    # rate = size header + the .bin byte for byte (the fake .bin is magic + 5 bytes + one 98x64 YUV picture)
    assert bitstream.data.startswith(header + FAKE_MAGIC)
    assert len(bitstream.data) == len(header) + len(FAKE_MAGIC) + 5 + yuv420_frame_bytes(64, 98)
    decoded = fake_codec.decode(bitstream)
    assert decoded.shape == odd_crop.shape and decoded.dtype == np.uint8
    assert psnr(odd_crop, decoded) > 40
    # exactly the colour conversion of the padded picture, cropped: nothing shifted or mis-cropped
    padded = pad_edge(odd_crop, 64, 98)
    write_yuv_file(padded, tmp_path / "ref.yuv", ColourConversion(), find_ffmpeg(), 30)
    reference = read_yuv_file(tmp_path / "ref.yuv", 64, 98, ColourConversion(), find_ffmpeg(), 30)
    np.testing.assert_array_equal(decoded, reference[:43, :97])
    # both programs worked in a temporary folder under tempfile's root, gone afterwards
    assert len(commands) == 2
    for cmd in commands:
        work = Path(cmd[cmd.index("-b") + 1]).parent
        assert work.parent == temp_root and not work.exists()
    assert list(temp_root.iterdir()) == []


def test_colour_matrix_parameter_is_used(odd_crop: np.ndarray) -> None:
    paths = {"encoder": str(FAKE_ENCODER), "decoder": str(FAKE_DECODER), "config": str(FAKE_CFG)}
    bt709, bt601 = VTMCodec(**paths), VTMCodec(**paths, matrix="bt601")
    assert psnr(odd_crop, bt601.decode(bt601.encode(odd_crop, 32))) > 40
    mixed = bt601.decode(bt709.encode(odd_crop, 32))
    assert psnr(odd_crop, mixed) < 38  # decoding BT.709 samples as BT.601 shifts the colours
    with pytest.raises(vcm_plugin.VcmError, match="bt2021"):
        vcm_plugin.get_codec("vtm", matrix="bt2021")


# -- failures --------------------------------------------------------------------------
def test_failing_encoder_gives_encode_error_with_its_log(fake_codec: VTMCodec, small_crop: np.ndarray,
                                                         temp_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VTM_MODE", "fail")
    with pytest.raises(EncodeError) as info:
        fake_codec.encode(small_crop, 32)
    message = str(info.value)
    assert "'vtm'" in message and "status 1" in message and "128x96" in message
    assert "picture too large for Level" in message  # the end of the encoder's log
    assert list(temp_root.iterdir()) == []


def test_hanging_encoder_is_stopped_by_the_timeout(small_crop: np.ndarray, temp_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VTM_MODE", "hang")
    codec = VTMCodec(encoder=str(FAKE_ENCODER), decoder=str(FAKE_DECODER), config=str(FAKE_CFG), timeout=1.5)
    start = time.monotonic()
    with pytest.raises(EncodeError, match=r"'vtm'.*timed out after 1.5 s"):
        codec.encode(small_crop, 32)
    assert time.monotonic() - start < 20
    assert list(temp_root.iterdir()) == []


def test_short_decoder_output_gives_decode_error(fake_codec: VTMCodec, small_crop: np.ndarray, temp_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bitstream = fake_codec.encode(small_crop, 32)
    monkeypatch.setenv("FAKE_VTM_MODE", "short")
    with pytest.raises(DecodeError, match=r"'vtm'.*wrote 18432 bytes.*expected one 128x96 10-bit 4:2:0 picture"):
        fake_codec.decode(bitstream)
    assert list(temp_root.iterdir()) == []


def test_failing_decoder_gives_decode_error(fake_codec: VTMCodec, small_crop: np.ndarray, temp_root: Path) -> None:
    bitstream = fake_codec.encode(small_crop, 32)
    header = pack_size(96, 128)
    damaged = vcm_plugin.Bitstream(data=header + b"NOTVTM" + bitstream.data[len(header) + 6:], codec="vtm",
                                   quality=32, height=96, width=128)
    with pytest.raises(DecodeError, match=r"'vtm'.*DecoderApp failed.*not a fake VTM bitstream"):
        fake_codec.decode(damaged)
    truncated = vcm_plugin.Bitstream(data=bitstream.data[:-10], codec="vtm", quality=32, height=96, width=128)
    with pytest.raises(DecodeError, match="truncated"):
        fake_codec.decode(truncated)
    assert list(temp_root.iterdir()) == []


def test_encoder_that_cannot_start_gives_encode_error(small_crop: np.ndarray, tmp_path: Path, temp_root: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    codec = VTMCodec(encoder=sys.executable, decoder=str(FAKE_DECODER), config=str(FAKE_CFG))
    monkeypatch.setattr(codec, "encoder_command", lambda *a, **k: [str(tmp_path / "gone" / "EncoderApp")])
    with pytest.raises(EncodeError, match=r"'vtm'.*cannot start .*gone/EncoderApp"):
        codec.encode(small_crop, 32)
    assert list(temp_root.iterdir()) == []


def test_version_names_the_programs_and_the_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_a, cfg_b = tmp_path / "a.cfg", tmp_path / "b.cfg"
    cfg_a.write_text("QP : 32\n")
    cfg_b.write_text("QP : 32\nALF : 0\n")
    monkeypatch.setenv("VTM_ENCODER", str(FAKE_ENCODER))
    monkeypatch.setenv("VTM_DECODER", str(FAKE_DECODER))
    monkeypatch.setenv("VTM_CONFIG", str(cfg_a))
    version_a = VTMCodec().version()
    assert f"encoder={FAKE_ENCODER}" in version_a and str(cfg_a) in version_a
    monkeypatch.setenv("VTM_CONFIG", str(cfg_b))
    assert VTMCodec().version() != version_a  # same params(), different cfg: results must not collide
    assert VTMCodec().params() == VTMCodec(config=None).params()
