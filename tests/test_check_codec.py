"""`vcm check-codec` (the conformance kit) on good and deliberately broken codecs, and `vcm doctor`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from vcm_plugin import Bitstream, Codec, QualityRange, register_codec
from vcm_plugin.cli.main import main
from vcm_plugin.codecs.registry import available_codecs
from vcm_plugin.conformance import CHECKS, check_codec, environment_report
from vcm_plugin.conformance.codec import spread_qualities

ROOT = Path(__file__).resolve().parents[1]
FAKE_VTM = ROOT / "tests" / "fake_vtm"


@dataclass
class _Posterize(Codec):
    """A conforming codec: keep the ``bits`` high bits of every sample, zlib (as tests/plugin_pkg does)."""

    quality_range: ClassVar[QualityRange] = QualityRange("bits", 1, 8, higher_is_more_bits=True)

    def header(self, image: np.ndarray, shift: int) -> bytes:
        return bytes([shift]) + image.shape[0].to_bytes(4, "big") + image.shape[1].to_bytes(4, "big")

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        shift = 8 - int(quality)
        return self.make_bitstream(self.header(image, shift) + zlib.compress((image >> shift).tobytes(), 1),
                                   quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        data = bitstream.data
        shift, height, width = data[0], int.from_bytes(data[1:5], "big"), int.from_bytes(data[5:9], "big")
        kept = np.frombuffer(zlib.decompress(data[len(self.header(np.zeros((1, 1)), 0)):]), np.uint8)
        return (kept.reshape(height, width, 3) << shift).astype(np.uint8)


@register_codec
@dataclass
class GoodCodec(_Posterize):
    name: ClassVar[str] = "test-conforming"


@register_codec
@dataclass
class NonDeterministicCodec(_Posterize):
    """Puts a random nonce in its header: decodes fine, never the same bytes twice."""

    name: ClassVar[str] = "test-nondeterministic"

    def header(self, image: np.ndarray, shift: int) -> bytes:
        return super().header(image, shift) + os.urandom(4)


@register_codec
@dataclass
class SideChannelCodec(_Posterize):
    """Keeps every picture in a class attribute and sends a 4-byte key: decodes only in the encoding process."""

    name: ClassVar[str] = "test-side-channel"
    memory: ClassVar[dict[bytes, np.ndarray]] = {}

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        key = hashlib.sha256(image.tobytes() + bytes([quality])).digest()[:4]
        self.memory[key] = (image >> (8 - quality)) << (8 - quality)
        return self.make_bitstream(key, quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        return self.memory[bitstream.data]


@register_codec
@dataclass
class SwallowingCodec(_Posterize):
    """Turns any damaged stream into a grey picture instead of an error."""

    name: ClassVar[str] = "test-swallows-corrupt"

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        try:
            return super()._decode(bitstream)
        except Exception:
            return np.full((bitstream.height, bitstream.width, 3), 128, np.uint8)


@register_codec
@dataclass
class WrongShapeCodec(_Posterize):
    name: ClassVar[str] = "test-wrong-shape"

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        return super()._decode(bitstream)[:-1]


@register_codec
@dataclass
class ChattyCodec(_Posterize):
    """Prints from Python while encoding and writes to fd 1 directly while decoding."""

    name: ClassVar[str] = "test-chatty"

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        print("encoding...")
        return super()._encode(image, quality)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        os.write(1, b"decoding\n")
        return super()._decode(bitstream)


@register_codec
@dataclass
class HangingCodec(_Posterize):
    name: ClassVar[str] = "test-hangs"
    release: ClassVar[threading.Event] = threading.Event()

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        self.release.wait()
        return super()._encode(image, quality)


def _failed(name: str, **kwargs) -> dict[str, str]:
    report = check_codec(name, max_images=1, **kwargs)
    assert [c.check for c in report.checks] == list(CHECKS)
    return {c.check: c.detail for c in report.failed}


def test_conforming_codec_passes_every_check() -> None:
    report = check_codec("test-conforming", max_images=2)
    assert report.passed, report.failed
    assert report.images == 2 and report.encode_ms_per_mp > 0 and report.decode_ms_per_mp > 0
    assert "1x1" in report.result("odd sizes").detail and "16-bit grey PNG" in report.result("odd sizes").detail


def test_non_deterministic_codec_fails_determinism() -> None:
    failed = _failed("test-nondeterministic")
    assert list(failed) == ["determinism"] and "different streams" in failed["determinism"]


def test_side_channel_codec_fails_the_fresh_process_decode() -> None:
    failed = _failed("test-side-channel")
    assert "fresh-process decode" in failed, failed
    assert "in a fresh process failed (a side channel" in failed["fresh-process decode"]
    assert "round trip" not in failed and "determinism" not in failed


def test_codec_swallowing_corrupt_streams_fails() -> None:
    failed = _failed("test-swallows-corrupt")
    assert list(failed) == ["corrupt streams"]
    assert "truncated to half: decoded without an error" in failed["corrupt streams"]


def test_wrong_shape_fails_the_round_trip() -> None:
    failed = _failed("test-wrong-shape")
    assert "decoded picture is (767, 512, 3), expected (768, 512, 3)" in failed["round trip"], failed


def test_stdout_pollution_is_flagged() -> None:
    failed = _failed("test-chatty")
    assert list(failed) == ["stdout clean"]
    assert "round trip" in failed["stdout clean"] and "encoding..." in failed["stdout clean"]
    assert "decoding" in failed["stdout clean"]


def test_hanging_codec_is_reported_by_check_and_codec() -> None:
    HangingCodec.release.clear()
    try:
        report = check_codec("test-hangs", max_images=1, timeout=1.0)
    finally:
        HangingCodec.release.set()
    assert report.result("round trip").status == "fail"
    assert "timed out after 1 s: codec 'test-hangs' hangs in the 'round trip' check" in report.result(
        "round trip").detail
    assert {c.status for c in report.checks[1:-1]} == {"not run"}


def test_spread_qualities() -> None:
    assert spread_qualities(QualityRange("qp", 0, 63, False), 4) == [8, 24, 39, 55]
    assert spread_qualities(QualityRange("q", 1, 4, True), 4) == [1, 2, 3, 4]


def test_cli_table_and_exit_statuses(capsys) -> None:
    assert main(["check-codec", "test-conforming", "--images", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"{check}" in out for check in CHECKS) and "7 of 7 checks passed" in out and " ms/MP" in out
    assert main(["check-codec", "test-swallows-corrupt", "--images", "1"]) == 1
    out = capsys.readouterr().out
    assert "corrupt streams       FAIL" in out and "failed: corrupt streams" in out
    assert main(["check-codec", "no-such-codec"]) == 2
    assert "vcm: error: unknown codec 'no-such-codec'" in capsys.readouterr().err
    assert main(["check-codec", "jpeg", "--images", "1", "subsampling=4:4:4:4"]) == 2
    assert "jpeg" in capsys.readouterr().err


def test_plugin_example_passes(tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--target", str(target), str(ROOT / "tests" / "plugin_pkg")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "vcm_plugin", "check-codec", "posterize-zlib", "--images", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 of 7 checks passed" in done.stdout


# -- every built-in codec, with the smallest settings (fast presets, one sample image) ---------------------------
FAST = {"vvc": {"preset": "faster"}, "hevc": {"preset": "ultrafast"}, "av1": {"cpu_used": 8}, "jxl": {"effort": 3},
        "fcm-vvc": {"task_model": "cifar10-vgg", "cut": "block2", "preset": "faster"},
        "vtm": {"encoder": str(FAKE_VTM / "EncoderApp"), "decoder": str(FAKE_VTM / "DecoderApp"),
                "config": str(FAKE_VTM / "encoder_intra_fake.cfg")}}
#: rows a built-in codec is known to fail here, and why
EXPECTED_FAILURES = {"vtm": {"rate monotone"}}  # the fake VTM of tests/fake_vtm stores the raw YUV at every QP
NEEDS_CHECKPOINT = {"direct", "feature-learned"}  # an export of `vcm train direct|feature`: none in the zoo or shared
BUILTIN = sorted(c.name for c in available_codecs() if c.origin.startswith("vcm_plugin."))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_codec(name: str) -> None:
    if name in NEEDS_CHECKPOINT:
        pytest.skip(f"codec {name!r} needs a trained checkpoint; tests/test_task_codecs.py trains and checks one")
    report = check_codec(name, FAST.get(name, {}), max_images=1, qualities=3)
    assert {c.check for c in report.failed} == EXPECTED_FAILURES.get(name, set()), report.failed


def test_doctor_one_line_per_item(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VCM_WEIGHTS", str(tmp_path / "absent"))
    monkeypatch.setenv("VCM_FFMPEG", str(tmp_path / "no-ffmpeg"))
    items = environment_report(tmp_path / "out")
    assert main(["doctor", "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(items) and all(line.startswith(("ok  ", "no  ")) for line in lines)
    by_item = {i.item: i for i in items}
    assert not by_item["ffmpeg"].ok and "VCM_FFMPEG" in by_item["ffmpeg"].detail
    assert not by_item["ffmpeg encoder libvvenc"].ok
    assert not by_item["codec vvc"].ok and by_item["codec jpeg"].ok
    assert not by_item[f"weights folder {tmp_path / 'absent'}"].ok
    assert {"VTM", "detectron2", "ai_edge_litert", "dask", "threads"} <= set(by_item)
    assert any(i.startswith("disk of the output folder") for i in by_item)


def test_doctor_lists_weights_files(shared: Path, monkeypatch) -> None:
    monkeypatch.setenv("VCM_WEIGHTS", str(shared / "weights"))
    item = next(i for i in environment_report() if i.item == f"weights folder {shared / 'weights'}")
    assert item.ok and "yolov5n.pt" in item.detail and "mobilenet_v2_1.0_224_quant.tflite" in item.detail
