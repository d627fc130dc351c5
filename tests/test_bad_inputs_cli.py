"""Bad inputs of the `vcm` command line (issue 21): each gets exit status 2 and one line `vcm: error: ...`
naming the input, and inputs that are fine are not refused.

- `vcm bd-rate`: BD-rate and BD-metric are each computed or marked n/a on their own (a JPEG-vs-VVC
  pair overlaps fully in metric but little in rate); `--min-overlap`; the n/a reason names the
  quantity; the non-monotonic hint names the flag; envelope points are printed readably.
- `vcm decode` uses the codec parameters stored in the `.vcmb` file (format version 2; version 1
  still read); a contradicting `--param` is refused naming the key; a stream of a codec that is not
  installed says so.
- `--jobs 0|-1` (`vcm run`, `vcm compare`) and booleans in `qualities` are refused.
- `vcm encode|decode` never write over an input, and not over an existing file without `--force`.
- `vcm compare --anchor` not among the codecs is refused before any coding.
- `vcm codecs` does not import compressai/torch and keeps lines within 120 characters.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

import vcm_plugin
from vcm_plugin import Bitstream, get_codec, read_image, write_image
from vcm_plugin.cli import main
from vcm_plugin.images.metrics import psnr_rgb, psnr_y

ROOT = Path(__file__).resolve().parents[1]

# measured on kodim23 (768x512): jpeg quality 20, 40, 60, 80 and vvc (preset faster) QP 42, 37, 32, 27;
# (bpp, PSNR-Y dB). PSNR ranges: vvc 33.0..41.2 contains jpeg 34.5..40.8 (100 % metric overlap);
# log10(bpp) ranges overlap by only 19 % of jpeg's.
JPEG = [(0.3342, 34.467), (0.4928, 36.938), (0.6435, 38.465), (0.992, 40.759)]
VVC = [(0.0732, 33.026), (0.1305, 35.764), (0.2348, 38.549), (0.4112, 41.244)]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(capsys, *args: str, contains: str | list[str]) -> str:
    """Run; assert exit 2 and one stderr line `vcm: error: ...` containing every ``contains``."""
    code, _, err = run(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vcm: error:"), err
    for text in [contains] if isinstance(contains, str) else contains:
        assert text in lines[0], lines[0]
    return lines[0]


def write_curve(path: Path, points: list[tuple[float, float]]) -> str:
    path.write_text("rate,metric\n" + "".join(f"{r},{m}\n" for r, m in points))
    return str(path)


def _rm(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


# ------------------------------------------------------------------------------ bd-rate
def test_bd_rate_prints_the_library_value_for_jpeg_vs_vvc(capsys, tmp_path: Path) -> None:
    anchor, test = write_curve(tmp_path / "vvc.csv", VVC), write_curve(tmp_path / "jpeg.csv", JPEG)
    expected = vcm_plugin.bd_rate(*_rm(VVC), *_rm(JPEG))
    assert 150 < expected < 250  # JPEG needs about three times VVC's rate
    code, out, err = run(capsys, "bd-rate", anchor, test)
    assert code == 0, err
    assert f"BD-rate (pchip): {expected:+.3f} %" in out
    # BD-metric is n/a (19 % rate overlap < 50 %) and its reason names BD-metric and the rate axis
    assert "BD-metric (pchip): n/a: BD-metric needs the curves to overlap in log10(rate)" in out
    # with a lower threshold both are computed
    code, out, err = run(capsys, "bd-rate", "--min-overlap", "0.1", anchor, test)
    assert code == 0, err
    assert f"{expected:+.3f} %" in out
    assert f"BD-metric (pchip): {vcm_plugin.bd_metric(*_rm(VVC), *_rm(JPEG), min_overlap=0.1):+.5f}" in out


def test_bd_rate_na_names_bd_rate_and_the_metric_axis(capsys, tmp_path: Path) -> None:
    # same rates, metric ranges 30..36 and 35..41: the rate axis overlaps fully, the metric axis by 1/6
    rates = [1.0, 2.0, 4.0, 8.0]
    a = write_curve(tmp_path / "a.csv", list(zip(rates, [30.0, 32.0, 34.0, 36.0])))
    t = write_curve(tmp_path / "t.csv", list(zip(rates, [35.0, 37.0, 39.0, 41.0])))
    code, out, err = run(capsys, "bd-rate", a, t)
    assert code == 0, err
    assert "BD-rate (pchip): n/a: BD-rate needs the curves to overlap in metric" in out
    assert "BD-metric (pchip): +5.00000" in out


def test_bd_rate_neither_computable_is_one_line(capsys, tmp_path: Path) -> None:
    a = write_curve(tmp_path / "a.csv", [(1, 30), (2, 32), (4, 34), (8, 36)])
    t = write_curve(tmp_path / "t.csv", [(100, 40), (200, 42), (400, 44), (800, 46)])
    expect_error(capsys, "bd-rate", a, t, contains=["neither BD-rate nor BD-metric", "a.csv", "t.csv"])


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_bd_rate_min_overlap_out_of_range(capsys, tmp_path: Path, value: str) -> None:
    a, t = write_curve(tmp_path / "a.csv", VVC), write_curve(tmp_path / "t.csv", JPEG)
    expect_error(capsys, "bd-rate", "--min-overlap", value, a, t, contains="--min-overlap")


NOISY = [(0.1, 0.50), (0.2, 0.60), (0.4, 0.58), (0.8, 0.70), (1.6, 0.75), (3.2, 0.80)]


def test_bd_rate_non_monotonic_hint_names_the_flag(capsys, tmp_path: Path) -> None:
    a = write_curve(tmp_path / "a.csv", [(r, m + 0.01) for r, m in NOISY if r != 0.4])
    t = write_curve(tmp_path / "noisy.csv", NOISY)
    line = expect_error(capsys, "bd-rate", a, t, contains=["noisy.csv", "--non-monotonic envelope"])
    assert "non_monotonic=" not in line


def test_bd_rate_envelope_prints_dropped_points_readably(capsys, tmp_path: Path) -> None:
    a = write_curve(tmp_path / "a.csv", [(r, m + 0.01) for r, m in NOISY if r != 0.4])
    t = write_curve(tmp_path / "noisy.csv", NOISY)
    code, out, err = run(capsys, "bd-rate", "--non-monotonic", "envelope", a, t)
    assert code == 0, err
    assert "CurvePoint(" not in out
    assert "point 2 (rate=0.4, metric=0.58)" in out and "dropped" in out


# ------------------------------------------------------------------------------ decode parameters
@pytest.fixture()
def crop_png(tmp_path: Path, small_crop: np.ndarray) -> Path:
    path = tmp_path / "crop.png"
    write_image(path, small_crop)
    return path


def test_decode_uses_the_parameters_stored_in_the_file(capsys, tmp_path: Path, crop_png: Path) -> None:
    coded, decoded = tmp_path / "c.vcmb", tmp_path / "c.png"
    params = {"matrix": "bt601", "range": "pc", "preset": "faster"}
    code, _, err = run(capsys, "encode", "--codec", "vvc", "-q", "32", *[f"--param={k}={v}" for k, v in params.items()],
                       str(crop_png), str(coded))
    assert code == 0, err

    # decoded without --param: the same picture (and PSNR) as the in-library round trip
    code, out, err = run(capsys, "decode", "--reference", str(crop_png), str(coded), str(decoded))
    assert code == 0, err
    source = read_image(crop_png)
    codec = get_codec("vvc", **params)
    library = codec.decode(codec.encode(source, 32))
    cli = read_image(decoded)
    assert psnr_y(source, cli) == pytest.approx(psnr_y(source, library), abs=1e-9)
    assert psnr_rgb(source, cli) == pytest.approx(psnr_rgb(source, library), abs=1e-9)
    assert f"PSNR-Y {psnr_y(source, library):.3f} dB" in out
    assert np.array_equal(cli, library)
    bitstream = Bitstream.from_bytes(coded.read_bytes())
    assert bitstream.params is not None and {k: bitstream.params[k] for k in params} == params
    # the defaults (bt709, tv) would give other colours: the stored parameters matter
    assert not np.array_equal(get_codec("vvc").decode(bitstream), library)

    # a --param equal to the stored one is fine; a contradicting one is an error naming the key
    code, _, err = run(capsys, "decode", "--force", "--param", "range=pc", str(coded), str(decoded))
    assert code == 0, err
    expect_error(capsys, "decode", "--force", "--param", "matrix=bt709", str(coded), str(decoded),
                 contains=["matrix", "bt601", str(coded)])


def _v1_file(bitstream: Bitstream) -> bytes:
    """``bitstream`` in the version-1 .vcmb layout (no codec parameters)."""
    from vcm_plugin.codecs import base

    name = bitstream.codec.encode()
    header = base._HEADER.pack(b"VCMBS", 1, len(name), b"i", float(bitstream.quality), bitstream.height,
                               bitstream.width, len(bitstream.data))
    body = header + name + bitstream.data
    return body + struct.pack(">I", zlib.crc32(body))


def test_version_1_files_are_still_read(capsys, tmp_path: Path, small_crop: np.ndarray) -> None:
    bitstream = get_codec("jpeg").encode(small_crop, 75)
    path = tmp_path / "old.vcmb"
    path.write_bytes(_v1_file(bitstream))
    back = Bitstream.from_bytes(path.read_bytes())
    assert back == bitstream and back.params is None
    code, _, err = run(capsys, "decode", str(path), str(tmp_path / "old.png"))
    assert code == 0, err
    assert np.array_equal(read_image(tmp_path / "old.png"), get_codec("jpeg").decode(bitstream))


def test_file_round_trip_keeps_the_parameters(small_crop: np.ndarray) -> None:
    bitstream = get_codec("jpeg", optimize=True).encode(small_crop, 60)
    assert bitstream.params == get_codec("jpeg", optimize=True).params()
    back = Bitstream.from_bytes(bitstream.to_bytes())
    assert back == bitstream and back.params == bitstream.params
    assert back.num_bits == 8 * len(bitstream.data)  # the stored parameters are not part of the rate


def test_machine_parameters_are_not_stored_so_a_file_decodes_elsewhere(small_crop: np.ndarray, capsys,
                                                                       tmp_path: Path) -> None:
    """An ffmpeg path, threads or a time limit of the encoding machine must not bind the decoder."""
    import imageio_ffmpeg

    codec = get_codec("webp", ffmpeg=imageio_ffmpeg.get_ffmpeg_exe(), timeout=77.0)
    bitstream = codec.encode(small_crop, 60)
    assert bitstream.params is not None
    assert not {"ffmpeg", "timeout"} & set(bitstream.params), bitstream.params
    path = tmp_path / "w.vcmb"
    path.write_bytes(bitstream.to_bytes())
    code, _, err = run(capsys, "decode", "--param", "timeout=5", str(path), str(tmp_path / "w.png"))
    assert code == 0, err


def test_decode_of_a_codec_not_installed_here(capsys, tmp_path: Path) -> None:
    path = tmp_path / "half.vcmb"
    path.write_bytes(Bitstream(b"\xff\xd8junk", "halfjpeg", 50, 8, 8).to_bytes())
    line = expect_error(capsys, "decode", str(path), str(tmp_path / "o.png"),
                        contains=[str(path), "made by codec 'halfjpeg', which is not installed here"])
    assert "Did you mean" not in line


# ------------------------------------------------------------------------------ --jobs, qualities
@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_run_refuses_non_positive_jobs(capsys, tmp_path: Path, jobs: str) -> None:
    # refused before the config is read (a missing one here, so that old code fails fast, naming the file)
    expect_error(capsys, "run", str(tmp_path / "missing.yaml"), "--jobs", jobs, "--output", str(tmp_path / "out"),
                 contains=f"--jobs {jobs}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_compare_refuses_non_positive_jobs(capsys, monkeypatch, crop_png: Path, jobs: str) -> None:
    import vcm_plugin.pipeline.compare as compare

    monkeypatch.setattr(compare, "measure", lambda *a, **k: pytest.fail("coded before checking --jobs"))
    expect_error(capsys, "compare", "--codec", "jpeg:50", "--jobs", jobs, str(crop_png), contains=f"--jobs {jobs}")


def test_boolean_quality_is_refused_naming_the_key(tmp_path: Path) -> None:
    from vcm_plugin.config import ConfigError, load_config

    data = yaml.safe_load((ROOT / "eval_configs" / "quickstart.yaml").read_text())
    data["codecs"]["jpeg"]["qualities"] = [True, 40]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="codecs.jpeg.qualities") as info:
        load_config(path, check_plugins=False)
    assert "boolean" in str(info.value) and str(path) in str(info.value)


# ------------------------------------------------------------------------------ outputs
def test_encode_refuses_to_overwrite_its_input(capsys, crop_png: Path) -> None:
    before = crop_png.read_bytes()
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "50", str(crop_png), str(crop_png),
                 contains=[str(crop_png), "same file"])
    # also through another spelling of the same path, and with --force
    other = crop_png.parent / "." / crop_png.name
    expect_error(capsys, "encode", "--force", "--codec", "jpeg", "-q", "50", str(crop_png), str(other),
                 contains="same file")
    assert crop_png.read_bytes() == before


def test_encode_and_decode_refuse_an_existing_output_without_force(capsys, tmp_path: Path, crop_png: Path) -> None:
    coded, decoded = tmp_path / "c.vcmb", tmp_path / "c.png"
    coded.write_bytes(b"keep")
    expect_error(capsys, "encode", "--codec", "jpeg", "-q", "50", str(crop_png), str(coded),
                 contains=[str(coded), "--force"])
    assert coded.read_bytes() == b"keep"
    code, _, err = run(capsys, "encode", "--force", "--codec", "jpeg", "-q", "50", str(crop_png), str(coded))
    assert code == 0, err

    decoded.write_bytes(b"keep")
    expect_error(capsys, "decode", str(coded), str(decoded), contains=[str(decoded), "--force"])
    assert decoded.read_bytes() == b"keep"
    expect_error(capsys, "decode", "--force", str(coded), str(coded), contains="same file")
    # the original given as --reference is never overwritten either
    expect_error(capsys, "decode", "--force", "--reference", str(crop_png), str(coded), str(crop_png),
                 contains=["--reference", "same file"])
    code, _, err = run(capsys, "decode", "--force", str(coded), str(decoded))
    assert code == 0, err
    assert read_image(decoded).shape == read_image(crop_png).shape


# ------------------------------------------------------------------------------ compare --anchor
def test_compare_checks_the_anchor_before_any_coding(capsys, monkeypatch, crop_png: Path) -> None:
    import vcm_plugin.pipeline.compare as compare

    monkeypatch.setattr(compare, "measure", lambda *a, **k: pytest.fail("coded before checking --anchor"))
    expect_error(capsys, "compare", "--codec", "jpeg:20,40,60,80", "--anchor", "vvc", str(crop_png),
                 contains=["--anchor 'vvc'", "jpeg"])


# ------------------------------------------------------------------------------ vcm codecs
def test_codecs_listing_is_light_and_narrow() -> None:
    script = ("import sys\nfrom vcm_plugin.cli import main\nassert main(['codecs']) == 0\n"
              "print('HEAVY', sorted(m for m in ('torch', 'compressai', 'torch_geometric') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "HEAVY []", lines[-1]
    table = lines[:-1]
    assert max(len(line) for line in table) <= 120, "\n".join(table)
    assert any(line.startswith("compressai ") for line in table)
