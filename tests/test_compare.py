"""``vcm compare`` and ``vcm_plugin.pipeline.compare``: every number recomputed here from the images."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin import get_codec, read_image, sample, write_image
from vcm_plugin.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two crops of the embedded kodim23: 96x128 and an odd 61x97."""
    kodim23 = read_image(next(p for p in sample.kodak_images() if p.name == "kodim23.png"))
    folder = tmp_path_factory.mktemp("compare")
    paths = [folder / "a.png", folder / "b.png"]
    write_image(paths[0], np.ascontiguousarray(kodim23[200:296, 300:428]))
    write_image(paths[1], np.ascontiguousarray(kodim23[400:461, 100:197]))
    return paths


def _expected(paths: list[Path], codec_name: str, quality: int) -> dict[str, float]:
    """bits, pixels, bpp (total bits / total original pixels), mean_bpp, mean PSNR-Y / PSNR-RGB (numpy)."""
    codec = get_codec(codec_name)
    bits, pixels, per_bpp, psnr_y, psnr_rgb = [], [], [], [], []
    for path in paths:
        image = read_image(path)
        bitstream = codec.encode(image, quality)
        decoded = codec.decode(bitstream)
        b, p = 8 * len(bitstream.data), image.shape[0] * image.shape[1]
        bits.append(b)
        pixels.append(p)
        per_bpp.append(b / p)
        diff = image.astype(np.float64) - decoded.astype(np.float64)
        luma = diff @ np.array([0.299, 0.587, 0.114])  # BT.601 luma of the difference
        psnr_rgb.append(10 * math.log10(255**2 / np.mean(diff**2)))
        psnr_y.append(10 * math.log10(255**2 / np.mean(luma**2)))
    return {"bits": sum(bits), "pixels": sum(pixels), "bpp": sum(bits) / sum(pixels), "mean_bpp": np.mean(per_bpp),
            "psnr_y": np.mean(psnr_y), "psnr_rgb": np.mean(psnr_rgb)}


def test_compare_csv_equals_numbers_recomputed_from_the_images(images: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "points.csv"
    assert main(["compare", *map(str, images), "--codec", "jpeg:30,70", "--jobs", "1", "--quiet",
                 "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["codec"], r["quality"], r["images"]) for r in rows] == [("jpeg", "30", "2"), ("jpeg", "70", "2")]
    assert 96 * 128 + 61 * 97 == 18205
    for row in rows:
        want = _expected(images, "jpeg", int(row["quality"]))
        assert (int(row["bits"]), int(row["pixels"])) == (want["bits"], want["pixels"]) == (want["bits"], 18205)
        assert float(row["bpp"]) == pytest.approx(want["bpp"], rel=1e-12)
        assert float(row["mean_bpp"]) == pytest.approx(want["mean_bpp"], rel=1e-12)
        assert float(row["bpp"]) != pytest.approx(float(row["mean_bpp"]), rel=1e-6)  # distinct aggregates
        assert float(row["psnr_y"]) == pytest.approx(want["psnr_y"], abs=1e-9)
        assert float(row["psnr_rgb"]) == pytest.approx(want["psnr_rgb"], abs=1e-9)
        assert row["ms_ssim"] == ""  # undefined below 161 px on the shorter side
        line = re.search(rf"^jpeg\s+{row['quality']}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", printed, re.M)
        assert line is not None, printed
        assert [float(v) for v in line.groups()] == pytest.approx(
            [want["bpp"], want["psnr_y"], want["psnr_rgb"]], abs=6e-3)
    assert "2 image(s); bpp = total bits / total original pixels" in printed


def test_compare_bd_rate_against_an_anchor_equals_bjontegaard(images: list[Path], capsys) -> None:
    import bjontegaard

    assert main(["compare", *map(str, images), "--codec", "jpeg:20,40,60,80", "--codec", "webp:20,40,60,80",
                 "--anchor", "jpeg", "--jobs", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    anchor = [_expected(images, "jpeg", q) for q in (20, 40, 60, 80)]
    test = [_expected(images, "webp", q) for q in (20, 40, 60, 80)]
    expected = bjontegaard.bd_rate([p["bpp"] for p in anchor], [p["psnr_y"] for p in anchor],
                                   [p["bpp"] for p in test], [p["psnr_y"] for p in test], method="pchip",
                                   require_matching_points=False, min_overlap=0.0)
    match = re.search(r"^\s+webp\s+([+-][0-9.]+) %", printed, re.M)
    assert match is not None, printed
    assert float(match.group(1)) == pytest.approx(expected, abs=0.006)


def test_measure_points_keep_spec_order_and_parallel_equals_serial(images: list[Path], tmp_path: Path) -> None:
    from vcm_plugin.pipeline.compare import CodecSpec, measure

    specs = [CodecSpec("jpeg", (70, 30)), CodecSpec("jpeg", (50,), {"subsampling": "4:4:4"})]
    serial = measure(specs, images, jobs=1, progress=False)
    assert [(p.codec, p.quality) for p in serial] == [("jpeg", 70), ("jpeg", 30), ("jpeg[subsampling=4:4:4]", 50)]
    want = _expected(images, "jpeg", 30)
    assert (serial[1].bits, serial[1].pixels) == (want["bits"], want["pixels"])
    assert serial[1].bpp == pytest.approx(want["bpp"], rel=1e-12)
    parallel = measure(specs, images, output=tmp_path / "run", jobs=2, progress=False)

    def strip(points):
        return [(p.codec, p.quality, p.bits, p.pixels, p.bpp, p.mean_bpp, p.image_metrics) for p in points]

    assert strip(parallel) == strip(serial)


def test_compare_caches_its_units_in_the_output_folder(images: list[Path], tmp_path: Path, monkeypatch) -> None:
    from vcm_plugin.pipeline import units
    from vcm_plugin.pipeline.compare import CodecSpec, measure

    first = measure([CodecSpec("jpeg", (40,))], images, output=tmp_path / "run", jobs=1, progress=False)
    monkeypatch.setattr(units, "run_job", lambda job: pytest.fail("a stored unit was computed again"))
    again = measure([CodecSpec("jpeg", (40,))], images, output=tmp_path / "run", jobs=1, progress=False)
    assert [(p.bits, p.image_metrics) for p in again] == [(p.bits, p.image_metrics) for p in first]
