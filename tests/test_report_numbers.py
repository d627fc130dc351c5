"""The numbers in a run's reports, recomputed independently of the package.

* ``bd_rate.csv``: every BD-rate (against the local anchor and against a published anchor)
  recomputed from the ``results.csv`` points with the ``bjontegaard`` package called directly
  (not through ``vcm_plugin.evaluation.bd``), the monotone envelope applied here by hand, and the
  points it drops listed in the note.
* ``results.csv``: bits, pixels, bpp, ``mean_bpp``, PSNR-Y / PSNR-RGB and MS-SSIM of every point
  recomputed from the stored rows; one stored row recomputed from the image itself.
* ``ms_ssim`` pinned against a value computed with an independent numpy implementation.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import run

JPEG_Q = [5, 10, 20, 30, 50, 70]
WEBP_Q = [5, 10, 20, 40, 60, 80]
# A published anchor in this run's metric (bbox/AP, percent) spanning every AP, so it overlaps both curves
PUBLISHED = [(0.05, 0.0), (0.2, 25.0), (0.6, 50.0), (1.5, 75.0), (4.0, 100.0)]


@pytest.fixture(scope="module")
def report(shared: Path, tmp_path_factory) -> Path:
    """3 COCO images of the embedded sample, YOLOv5n, JPEG (the anchor) and WebP at 6 qualities each."""
    root = tmp_path_factory.mktemp("report_numbers")
    published = root / "published.yaml"
    published.write_text(yaml.safe_dump({
        "name": "test-published", "task": "detection", "metric": "bbox/AP", "unit": "percent",
        "dataset": "made up for the test", "task_model": "made up", "scale": 1.0,
        "points": [{"bpp": b, "metric": m} for b, m in PUBLISHED]}))
    config = config_from_dict({
        "name": "report-numbers", "output": str(root / "run"),
        "dataset": {"name": "sample", "max_images": 3},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": JPEG_Q}, "webp": {"qualities": WEBP_Q}},
        "anchors": ["jpeg"], "published_anchors": [str(published)], "jobs": 1,
    })
    run(config, quiet=True)
    return root / "run"


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _envelope(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Sorted by rate, keep a point only if its metric is above every lower-rate point's: (kept, dropped)."""
    kept: list[tuple[float, float]] = []
    dropped: list[tuple[float, float]] = []
    for rate, metric in sorted(points):
        (dropped if kept and metric <= max(m for _, m in kept) else kept).append((rate, metric))
    return kept, dropped


def _bd(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    import bjontegaard

    a, t = np.array(anchor), np.array(test)
    return float(bjontegaard.bd_rate(a[:, 0], a[:, 1], t[:, 0], t[:, 1], method="pchip",
                                     require_matching_points=False, min_overlap=0.0))


def _dropped_in_note(note: str, codec: str) -> list[float]:
    return [float(x) for x in re.findall(rf"\b{re.escape(codec)} bpp ([0-9.]+)", note)]


@pytest.mark.slow
def test_bd_rate_csv_matches_bjontegaard_on_the_results_csv_points(report: Path) -> None:
    results = _read(report / "results.csv")
    curves = {codec: [(float(r["bpp"]), float(r["bbox/AP"])) for r in results if r["codec"] == codec]
              for codec in ("jpeg", "webp")}
    assert [len(c) for c in curves.values()] == [len(JPEG_Q), len(WEBP_Q)]
    rows = _read(report / "bd_rate.csv")
    by_anchor = {(r["codec"], r["anchor"]): r for r in rows}
    assert set(by_anchor) == {("webp", "jpeg"), ("jpeg", "published:test-published"),
                              ("webp", "published:test-published")}

    # the local anchor: BD-rate of WebP against JPEG on bbox/AP, monotone envelopes, dropped points listed
    jpeg_kept, jpeg_dropped = _envelope(curves["jpeg"])
    webp_kept, webp_dropped = _envelope(curves["webp"])
    row = by_anchor[("webp", "jpeg")]
    assert row["metric"] == "bbox/AP" and row["method"] == "pchip" and row["scale"] == "1.00"
    expected = _bd(jpeg_kept, webp_kept)
    swapped = _bd(webp_kept, jpeg_kept)
    assert abs(expected - swapped) > 10  # the check below tells anchor and test apart
    assert float(row["bd_rate_percent"]) == pytest.approx(expected, abs=0.02), (row, expected)
    assert sorted(_dropped_in_note(row["note"], "jpeg")) == pytest.approx([r for r, _ in jpeg_dropped], abs=1e-4)
    assert sorted(_dropped_in_note(row["note"], "webp")) == pytest.approx([r for r, _ in webp_dropped], abs=1e-4)
    assert jpeg_dropped or webp_dropped, "this run is meant to exercise the envelope (a non-monotone curve)"

    # the published anchor (its points as given, monotone) against each codec
    for codec, kept, dropped in (("jpeg", jpeg_kept, jpeg_dropped), ("webp", webp_kept, webp_dropped)):
        row = by_anchor[(codec, "published:test-published")]
        assert row["metric"] == "bbox/AP" and "task model made up" in row["note"]
        assert float(row["bd_rate_percent"]) == pytest.approx(_bd(PUBLISHED, kept), abs=0.02), row
        assert sorted(_dropped_in_note(row["note"], codec)) == pytest.approx([r for r, _ in dropped], abs=1e-4)


@pytest.mark.slow
def test_results_csv_aggregates_equal_the_stored_rows(report: Path) -> None:
    from vcm_plugin.results.store import ResultsStore

    with ResultsStore(report / "results.sqlite") as store:
        stored = [r for r in store.rows(with_predictions=False) if r.codec != "uncompressed"]
    assert len(stored) == 3 * (len(JPEG_Q) + len(WEBP_Q)) and all(r.status == "ok" for r in stored)
    rows = {(r["codec"], int(r["quality"])): r for r in _read(report / "results.csv") if r["codec"] != "uncompressed"}
    assert len(rows) == len(JPEG_Q) + len(WEBP_Q)
    for (codec, quality), row in rows.items():
        units = [r for r in stored if r.codec == codec and int(r.quality) == quality]
        assert len(units) == int(row["images"]) == 3
        bits, pixels = sum(u.bits for u in units), sum(u.pixels for u in units)
        assert (int(row["bits"]), int(row["pixels"])) == (bits, pixels), (codec, quality)
        assert float(row["bpp"]) == pytest.approx(bits / pixels, abs=6e-7)
        assert float(row["mean_bpp"]) == pytest.approx(np.mean([u.bits / u.pixels for u in units]), abs=6e-7)
        assert float(row["psnr_y"]) == pytest.approx(np.mean([u.psnr_y for u in units]), abs=6e-4)
        assert float(row["psnr_rgb"]) == pytest.approx(np.mean([u.psnr_rgb for u in units]), abs=6e-4)
        assert all(u.ms_ssim is not None for u in units)  # COCO images: every shorter side > 160
        assert float(row["ms_ssim"]) == pytest.approx(np.mean([u.ms_ssim for u in units]), abs=6e-6)
        assert float(row["bpp"]) != pytest.approx(float(row["mean_bpp"]), abs=1e-5)  # the two are distinct


@pytest.mark.slow
def test_a_stored_row_equals_its_image_coded_again(report: Path) -> None:
    """One unit recomputed from the image: the same JPEG bits, PSNRs from numpy formulas, MS-SSIM."""
    from vcm_plugin import get_codec, read_image, sample
    from vcm_plugin.images.metrics import ms_ssim
    from vcm_plugin.results.store import ResultsStore

    with ResultsStore(report / "results.sqlite") as store:
        units = [r for r in store.rows(with_predictions=False) if r.codec == "jpeg" and int(r.quality) == 30]
    unit = units[0]
    path = next(p for p in sample.coco_images_dir().iterdir() if int(p.stem) == int(unit.image_id))
    image = read_image(path)
    bitstream = get_codec("jpeg").encode(image, 30)
    decoded = get_codec("jpeg").decode(bitstream)
    assert (unit.bits, unit.pixels) == (8 * len(bitstream.data), image.shape[0] * image.shape[1])
    diff = image.astype(np.float64) - decoded.astype(np.float64)
    luma = diff @ np.array([0.299, 0.587, 0.114])
    assert unit.psnr_rgb == pytest.approx(10 * math.log10(255**2 / np.mean(diff**2)), abs=1e-9)
    assert unit.psnr_y == pytest.approx(10 * math.log10(255**2 / np.mean(luma**2)), abs=1e-9)
    assert unit.ms_ssim == pytest.approx(ms_ssim(image, decoded), abs=1e-6)


# -- MS-SSIM pinned ------------------------------------------------------------------------------
def ms_ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """MS-SSIM after Wang, Simoncelli & Bovik 2003, written in float64 numpy, independent of the package.

    Per channel: 11-tap Gaussian window (sigma 1.5, normalised), 'valid' filtering; C1 = (0.01 L)^2,
    C2 = (0.03 L)^2; at each of 5 scales the mean contrast-structure term cs, at the last scale the
    mean SSIM; between scales a 2x2 block average (even sizes only here); MS-SSIM =
    prod(relu(cs_1..4) ** w_1..4) * relu(ssim_5) ** w_5 with w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333);
    the mean over the three channels. (pytorch-msssim's conventions, which ``ms_ssim`` follows.)
    """
    from numpy.lib.stride_tricks import sliding_window_view

    coords = np.arange(11, dtype=np.float64) - 5
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    g /= g.sum()
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        a = sliding_window_view(a, 11, axis=0) @ g
        return sliding_window_view(a, 11, axis=1) @ g

    values = []
    for ch in range(3):
        a, b = x[..., ch].astype(np.float64), y[..., ch].astype(np.float64)
        terms = []
        for level in range(5):
            mu_a, mu_b = blur(a), blur(b)
            var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
            cov = blur(a * b) - mu_a * mu_b
            cs = (2 * cov + c2) / (var_a + var_b + c2)
            if level < 4:
                terms.append(max(cs.mean(), 0.0))
                assert a.shape[0] % 2 == 0 and a.shape[1] % 2 == 0
                a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
                b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
            else:
                ssim = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)) * cs
                terms.append(max(ssim.mean(), 0.0))
        values.append(float(np.prod(np.array(terms) ** weights)))
    return float(np.mean(values))


def _pinned_pair() -> tuple[np.ndarray, np.ndarray]:
    """kodim23 of the embedded sample, the 192x256 crop at (200, 300) (sides divisible by 16), and the
    same crop quantised to 8 levels per channel (v // 32 * 32 + 16): deterministic, no codec involved."""
    from vcm_plugin import read_image, sample

    path = next(p for p in sample.kodak_images() if p.name == "kodim23.png")
    reference = np.ascontiguousarray(read_image(path)[200:392, 300:556])
    return reference, (reference // 32 * 32 + 16).astype(np.uint8)


# ms_ssim_numpy(*_pinned_pair()) = 0.9086482381484403 (float64, computed once with the function above
# and kept here, so a change of either implementation shows); pytorch-msssim (float32) gives 0.9086521.
# With data range 1 instead of 255 (C1, C2 then negligible) it would be 0.6920.
PINNED_MS_SSIM = 0.9086482


def test_ms_ssim_equals_an_independent_implementation_on_a_fixed_pair() -> None:
    from vcm_plugin.images.metrics import ms_ssim

    reference, distorted = _pinned_pair()
    independent = ms_ssim_numpy(reference, distorted)
    assert independent == pytest.approx(PINNED_MS_SSIM, abs=1e-6)
    assert ms_ssim(reference, distorted) == pytest.approx(PINNED_MS_SSIM, abs=2e-5)  # float32 in torch
    assert ms_ssim(reference, reference) == pytest.approx(1.0, abs=1e-6)
