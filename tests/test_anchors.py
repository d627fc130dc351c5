"""Anchor definitions (include:) and published anchor files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcm_plugin.anchors import AnchorError, load_published_anchor
from vcm_plugin.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "anchors" / "published" / "compressai_vision_vtm_openimages_detection_100.yaml"


def test_published_vtm_curve_equals_the_shared_reference(shared: Path) -> None:
    anchor = load_published_anchor(PUBLISHED)
    assert anchor.metric == "oid/mAP50" and anchor.scale == 1.0 and "faster_rcnn_X_101" in anchor.task_model
    assert any("not yet the correct ones" in c for c in anchor.caveats)
    folder = shared / "reference" / "compressai-vision" / "vtm_scale_100"
    for qp, bpp, value in zip(anchor.qualities, anchor.rate, anchor.values):
        record = json.loads((folder / f"vtm_{qp}.json").read_text())
        assert record["bpp"] == [bpp]
        assert 100 * record["map"][0] == pytest.approx(value, abs=1e-12)


def test_include_expands_an_anchor_definition(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("dataset: {name: sample}\ntasks: {d: {model: yolov5}}\n"
                   "codecs: {vvc: {include: anchors/vvc_intra_vcm.yaml, scales: [1.0]}}\n")
    config = load_config(cfg)  # found relative to the working directory or the config's parent folders
    assert config.codecs["vvc"].qualities == [22, 27, 32, 37, 42, 47]
    assert config.codecs["vvc"].scales == [1.0]  # the entry overrides the file
    assert config.codec_params("vvc") == ("vvc", {"preset": "medium", "matrix": "bt709", "range": "tv"})


def test_bad_anchor_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="codecs.vvc.include: anchor file nope.yaml not found"):
        config_from_dict({"dataset": {"name": "sample"}, "tasks": {"d": {"model": "yolov5"}},
                          "codecs": {"vvc": {"include": "nope.yaml"}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: detection\nmetric: m\ndataset: d\ntask_model: t\npoints: [{bpp: a, metric: 1}]\n")
    with pytest.raises(AnchorError, match="bad.yaml"):
        load_published_anchor(bad)
    bad.write_text("name: x\n")
    with pytest.raises(AnchorError, match="missing key"):
        load_published_anchor(bad)
