"""`vcm run` on the OpenImages VCM protocol (the 3 real images in ../shared): the challenge
metric in the report, pre-scaling on the grid, BD-rate against the published VTM anchor."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import run
from vcm_plugin.safe_yaml import safe_load

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_openimages_shared_grid_with_scales_and_published_anchor(shared: Path, tmp_path: Path, monkeypatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("VCM_SHARED", str(shared))
    monkeypatch.chdir(ROOT)  # anchors/ paths in the config are relative to the project
    data = safe_load((ROOT / "eval_configs" / "openimages_shared.yaml").read_text())
    data["codecs"] = {"jpeg": {"include": "anchors/jpeg.yaml", "scales": [1.0, 0.5]}}
    data.update(anchors=["jpeg"], jobs=1)
    config = config_from_dict(data, config_dir=ROOT / "eval_configs")
    with caplog.at_level("WARNING", logger="vcm_plugin"):  # a log record, shown by the CLI as one line
        summary = run(config, output=tmp_path, quiet=True)
    assert "skipped 4997 of 5000" in caplog.text
    assert summary.units_failed == 0 and summary.units_total == 3 * (1 + 12)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {r["scale"] for r in rows} == {"1.00", "0.50"}
    assert all(r["oid/mAP50"] for r in rows)
    ref = next(r for r in rows if r["codec"] == "uncompressed")
    assert float(ref["oid/mAP50"]) == pytest.approx(100.0)
    half = [r for r in rows if r["codec"] == "jpeg" and r["scale"] == "0.50"]
    full = [r for r in rows if r["codec"] == "jpeg" and r["scale"] == "1.00"]
    for h, f in zip(sorted(half, key=lambda r: int(r["quality"])), sorted(full, key=lambda r: int(r["quality"]))):
        assert int(h["pixels"]) == int(f["pixels"])  # bpp always over the ORIGINAL pixels
        assert float(h["bpp"]) < float(f["bpp"])
    bd = list(csv.DictReader(open(tmp_path / "bd_rate.csv")))
    published = [r for r in bd if r["anchor"].startswith("published:")]
    assert published and all("faster_rcnn_X_101" in r["note"] and "yolov5" in r["note"] for r in published)
    assert "published:vtm-oid-det-100" in (tmp_path / "bd_rate.md").read_text()
