"""The `vcm` command line: listing, encode/decode round trips, BD-rate, and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vcm_plugin import Bitstream, read_image
from vcm_plugin.cli import main
from vcm_plugin.images.metrics import psnr_y

EXPECTED_CODECS = {"jpeg", "vvc", "hevc", "av1", "jxl", "webp", "vtm"}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_codecs_lists_every_builtin(capsys, monkeypatch) -> None:
    for var in ("VTM_ENCODER", "VTM_DECODER", "VTM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    code, out, _ = run(capsys, "codecs")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 120, out
    rows: dict[str, str] = {}  # a codec's row plus its indented "why not" lines
    name = ""
    for line in out.splitlines()[1:]:
        if line.startswith(" "):
            rows[name] += " " + line.strip()
        else:
            name = line.split()[0]
            rows[name] = line
    assert EXPECTED_CODECS <= set(rows)
    assert "no:" in rows["vtm"] and "VTM_ENCODER" in rows["vtm"]
    for name in EXPECTED_CODECS - {"vtm"}:
        assert " yes " in rows[name], rows[name]
    assert "lower = more bits" in rows["vvc"] and "higher = more bits" in rows["jpeg"]


@pytest.mark.parametrize("codec, quality", [("jpeg", "75"), ("vvc", "32")])
def test_round_trip_kodim23(capsys, tmp_path: Path, shared: Path, codec: str, quality: str) -> None:
    source = shared / "data" / "kodak" / "kodim23.png"
    coded, decoded = tmp_path / "k.vcmb", tmp_path / "k.png"
    code, out, err = run(capsys, "encode", "--codec", codec, "--quality", quality, str(source), str(coded))
    assert code == 0, err
    bitstream = Bitstream.from_bytes(coded.read_bytes())
    assert (bitstream.codec, bitstream.quality, bitstream.width, bitstream.height) == (codec, int(quality), 768, 512)
    assert bitstream.bpp == 8 * len(bitstream.data) / (768 * 512)
    assert f"{bitstream.bpp:.6f} bpp" in out
    code, out, err = run(capsys, "decode", "--reference", str(source), str(coded), str(decoded))
    assert code == 0, err
    assert psnr_y(read_image(source), read_image(decoded)) > 30.0
    assert "PSNR-Y" in out


def expect_error(capsys, *args: str, contains: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vcm: error:"), err
    assert contains in lines[0], lines[0]


def test_input_errors_are_one_line(capsys, tmp_path: Path, shared: Path) -> None:
    source = str(shared / "data" / "kodak" / "kodim23.png")
    out = str(tmp_path / "o.vcmb")
    expect_error(capsys, "encode", "--codec", "vvcc", "-q", "32", source, out, contains="Known codecs")
    expect_error(capsys, "encode", "--codec", "vvc", "-q", "99", source, out, contains="outside 0..63")
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "abc", source, out, contains="'abc'")
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "50", str(tmp_path / "missing.png"), out,
                 contains="missing.png")
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "50", "--param", "subsampling", source, out,
                 contains="key=value")
    junk = tmp_path / "junk.vcmb"
    junk.write_bytes(b"not a bitstream at all")
    expect_error(capsys, "decode", str(junk), str(tmp_path / "x.png"), contains="junk.vcmb")
    expect_error(capsys, "decode", str(tmp_path / "nope.vcmb"), str(tmp_path / "x.png"), contains="nope.vcmb")
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "50", source, str(tmp_path / "no" / "dir" / "o.vcmb"),
                 contains="o.vcmb")


def test_truncated_bitstream_file(capsys, tmp_path: Path, shared: Path) -> None:
    source = str(shared / "data" / "kodak" / "kodim23.png")
    coded = tmp_path / "k.vcmb"
    assert run(capsys, "encode", "--codec", "jpeg", "-q", "50", source, str(coded))[0] == 0
    coded.write_bytes(coded.read_bytes()[:-100])
    expect_error(capsys, "decode", str(coded), str(tmp_path / "x.png"), contains="truncated")


def write_curve(path: Path, points: list[tuple[float, float]]) -> str:
    path.write_text("rate,metric\n" + "".join(f"{r},{m}\n" for r, m in points))
    return str(path)


def test_bd_rate_command(capsys, tmp_path: Path) -> None:
    anchor = [(0.1, 30.0), (0.2, 33.0), (0.4, 36.0), (0.8, 39.0)]
    test = [(r / 2, m) for r, m in anchor]  # same quality at half the rate
    a, t = write_curve(tmp_path / "a.csv", anchor), write_curve(tmp_path / "t.csv", test)
    code, out, err = run(capsys, "bd-rate", a, t)
    assert code == 0, err
    assert "-50.000 %" in out
    bad = write_curve(tmp_path / "bad.csv", anchor[:3])
    expect_error(capsys, "bd-rate", a, bad, contains="bad.csv")


def test_console_script_installed(tmp_path: Path) -> None:
    exe = shutil.which("vcm", path=str(Path(sys.executable).parent))
    assert exe, "the `vcm` console script is not installed beside the interpreter"
    proc = subprocess.run([exe, "encode", "--codec", "nope", "-q", "1", "a", "b"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "unknown codec 'nope'" in proc.stderr
