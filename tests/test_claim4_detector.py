"""experiments/claim4_rho.py, section ``yolov5n``: ρ per backbone layer of YOLOv5n on COCO object crops."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from vcm_plugin.analysis.appropriateness import limit_threads
from vcm_plugin.analysis.report import CSV_COLUMNS, read_rho_csv

torch.set_num_threads(1)
limit_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_claim4() -> ModuleType:
    spec = importlib.util.spec_from_file_location("claim4_rho", ROOT / "experiments" / "claim4_rho.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["claim4_rho"] = module  # dataclasses / pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def test_square_crop_centres_the_box_and_pads_outside_the_image() -> None:
    claim4 = load_claim4()
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255  # a white 20x20 object
    crop = claim4.square_crop(image, [90, 40, 20, 20], pad=0.25, size=32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert crop[16, 16].tolist() == [255, 255, 255] and crop[1, 1].tolist() == [0, 0, 0]
    corner = claim4.square_crop(image, [0, 0, 20, 10], pad=0.5, size=40, fill=114)  # sticks out top-left
    assert corner[0, 0].tolist() == [114, 114, 114] and corner.shape == (40, 40, 3)
    assert claim4.SECTIONS.keys() >= {"cifar10-vgg", "yolov5n"}
    assert [name for name, _ in claim4.YOLO_LAYERS][0] == "input" and claim4.YOLO_LAYERS[-1] == ("layer.9", 9)


@pytest.mark.slow
def test_claim4_yolov5n_quick_writes_csv_figure_json_and_report(shared: Path, tmp_path: Path) -> None:
    claim4 = load_claim4()
    assert claim4.main(["--output", str(tmp_path), "--quick", "--quiet", "--sections", "yolov5n",
                        "--coco-root", str(shared / "data" / "coco"),
                        "--weights-dir", str(shared / "weights")]) == 0
    out = tmp_path / "yolov5n"
    with open(out / "rho.csv", newline="") as fh:
        assert next(csv.reader(fh)) == CSV_COLUMNS
    rows = read_rho_csv(out / "rho.csv")
    layers = [name for name, _ in claim4.YOLO_LAYERS]
    assert [r.layer for r in rows if r.k == 2] == layers and {r.k for r in rows} == {2, 8}
    assert [r.depth for r in rows if r.k == 8] == list(range(len(layers)))
    n = rows[0].n_samples
    assert 100 <= n <= 160 and all(r.n_samples == n and r.bootstrap == 3 and r.estimator == "kmeans-mi"
                                   for r in rows)
    assert all(0 <= r.rho <= 1 and 0 <= r.rho_shuffled <= 1 and math.isfinite(r.ci_low) for r in rows)
    raw = {r.layer: r.raw_dims for r in rows}
    assert raw["input"] == 3 * 16 * 16 and raw["layer.0"] == 16 and raw["layer.9"] == 256  # pooled channels
    assert (out / "rho.png").read_bytes().startswith(PNG_MAGIC)

    info = json.loads((tmp_path / "claim4_rho.json").read_text())
    section = info["sections"]["yolov5n"]
    assert list(info["sections"]) == ["yolov5n"] and info["quick"] is True
    assert section["n_samples"] == n == sum(section["class_counts"].values()) and len(section["class_counts"]) == 5
    assert "person" in section["class_counts"] and max(section["class_counts"].values()) <= 30
    assert [t["k"] for t in section["trends"]] == [2, 8] and section["verdict"] in ("yes", "no", "for some k only")
    detail = json.loads((out / "rho.json").read_text())
    assert detail["counts"]["used"] == section["class_counts"] and len(detail["rows"]) == len(rows)
    assert detail["config"]["pooling"] == "global average" and len(detail["config"]["weights_sha256"]) == 64

    report = (tmp_path / "REPORT_section.md").read_text()
    assert report.startswith("## Claim (iv)") and "QUICK run" in report
    assert f"Does ρ rise with depth on the detector's backbone? {section['verdict']}" in report
    assert f"**{n} object crops**" in report and "**5 categories**" in report and "global-average-pooled" in report
    table = [line for line in report.splitlines() if line.startswith("| layer.") or line.startswith("| input")]
    assert len(table) == len(layers) and all(line.count("|") == 5 + 2 * 2 for line in table)
    r9 = next(r for r in rows if r.layer == "layer.9" and r.k == 2)
    assert f"| layer.9 | SPPF | 6 | 256 -> 32 | {r9.rho:.3f} [{r9.ci_low:.3f}, {r9.ci_high:.3f}]" in report
