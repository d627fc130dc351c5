"""Learned codecs and image-quality metrics inside `vcm run`: MS-SSIM per point, weights in unit keys, preflight."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm_plugin.cli import main
from vcm_plugin.config import config_from_dict
from vcm_plugin.errors import WeightsNotFoundError
from vcm_plugin.images.metrics import MS_SSIM_MIN_SIDE, ms_ssim
from vcm_plugin.learned.models import import_compressai
from vcm_plugin.pipeline.run import run


def _random_checkpoint(path: Path, seed: int) -> Path:
    import_compressai()
    from compressai.models import ScaleHyperprior

    torch.manual_seed(seed)
    model = ScaleHyperprior(16, 24)
    model.update(force=True)
    torch.save(model.state_dict(), path)
    return path


def _config(shared: Path, output: Path, checkpoint: Path) -> dict:
    return {
        "name": "learned", "output": str(output), "jobs": 1,
        "dataset": {"name": "sample", "max_images": 2},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [20, 50]},
                   "learned": {"codec": "compressai", "model": "bmshj2018-hyperprior",
                               "checkpoint": str(checkpoint), "qualities": [1]}},
        "anchors": ["jpeg"],
    }


def test_ms_ssim_is_one_for_identical_lower_for_noise_and_undefined_when_small(kodim23) -> None:
    assert ms_ssim(kodim23, kodim23) == pytest.approx(1.0)
    noisy = np.clip(kodim23.astype(int) + np.random.default_rng(0).integers(-20, 21, kodim23.shape), 0, 255)
    assert 0.5 < ms_ssim(kodim23, noisy.astype(np.uint8)) < 0.99
    small = np.ascontiguousarray(kodim23[:MS_SSIM_MIN_SIDE, :400])
    assert ms_ssim(small, small) is None


@pytest.mark.slow
def test_run_records_ms_ssim_and_reruns_when_the_checkpoint_changes(shared: Path, tmp_path: Path) -> None:
    checkpoint = _random_checkpoint(tmp_path / "model.pt", 0)
    config = config_from_dict(_config(shared, tmp_path / "out", checkpoint))
    first = run(config, quiet=True)
    assert first.units_failed == 0 and first.units_computed == 2 * (1 + 2 + 1)
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    learned = [r for r in rows if r["codec"] == "learned"]
    assert learned and float(learned[0]["bpp"]) > 0 and 0 < float(learned[0]["ms_ssim"]) <= 1
    assert all(r["ms_ssim"] for r in rows if r["codec"] == "jpeg")
    assert run(config, quiet=True).units_computed == 0  # all cached
    _random_checkpoint(checkpoint, 1)  # retrained weights at the same path: its units are recomputed
    assert run(config, quiet=True).units_computed == 2


def test_missing_learned_weights_stop_the_run_before_any_work(shared: Path, tmp_path: Path, capsys) -> None:
    data = _config(shared, tmp_path / "out", tmp_path / "nowhere.pt")
    with pytest.raises(WeightsNotFoundError, match="nowhere.pt"):
        run(config_from_dict(data), quiet=True)
    assert not (tmp_path / "out" / "results.sqlite").exists() or \
        __import__("sqlite3").connect(tmp_path / "out" / "results.sqlite").execute(
            "SELECT COUNT(*) FROM units").fetchone()[0] == 0


def test_missing_zoo_weights_exit_2_naming_the_codec_and_file(shared: Path, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    import yaml

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    data = _config(shared, tmp_path / "out", tmp_path / "x.pt")
    data["codecs"]["learned"] = {"codec": "compressai", "model": "mbt2018-mean", "qualities": [3]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "codec 'learned' at quality 3" in err and "mbt2018-mean-3-723404a8.pth.tar" in err


@pytest.mark.slow
def test_learned_points_report_the_likelihood_estimate_beside_the_real_rate(tmp_path: Path) -> None:
    config = config_from_dict({
        "name": "estimate", "output": str(tmp_path / "out"), "jobs": 1,
        "dataset": {"name": "sample", "max_images": 1},
        "tasks": {"quality": {"model": "image-quality"}},
        "codecs": {"jpeg": {"qualities": [50]},
                   "hyperprior": {"codec": "compressai", "qualities": [1, 4]}},  # the project zoo (embedded)
    })
    assert run(config, quiet=True).units_failed == 0
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = {(r["codec"], r["quality"]): r for r in csv.DictReader(fh)}
    assert rows[("jpeg", "50")]["estimated_bpp"] == "" and rows[("uncompressed", "")]["estimated_bpp"] == ""
    for q in ("1", "4"):
        bpp, estimated = float(rows[("hyperprior", q)]["bpp"]), float(rows[("hyperprior", q)]["estimated_bpp"])
        # the estimate is close to, and distinct from, the real rate (which adds the header and the coder's overhead)
        assert estimated != bpp and 0.8 * bpp < estimated < 1.05 * bpp, (q, bpp, estimated)
    from vcm_plugin.results import PointLabel, UnitRow, aggregate

    def unit(image: str, estimated: float | None) -> UnitRow:
        return UnitRow("k" + image, "c", 1, 1.0, "t", image, "ok", bits=100, pixels=50, estimated_bits=estimated)

    assert aggregate([unit("1", 90.0), unit("2", 60.0)], PointLabel("t", "c", 1)).estimated_bpp == 1.5
    assert aggregate([unit("1", 90.0), unit("2", None)], PointLabel("t", "c", 1)).estimated_bpp is None
