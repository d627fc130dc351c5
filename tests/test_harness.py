"""`vcm run` end to end on the embedded sample with YOLOv5n: reports, resume, failures, locks."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import BitDepthCodec

from vcm_plugin import EncodeError, register_codec
from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import OutputLock, RunError, run

TIMING = {"encode_s_per_image", "decode_s_per_image", "inference_s_per_image"}


@register_codec
@dataclass
class PortraitFailCodec(BitDepthCodec):
    """Test codec: JPEG-like identity that raises on portrait images (to test failure handling)."""

    name: ClassVar[str] = "test-portrait-fail"

    def before_encode(self, image: np.ndarray) -> None:
        if image.shape[0] > image.shape[1]:
            raise EncodeError("codec 'test-portrait-fail': refuses portrait images")


def make_config(shared: Path, output: Path, **extra) -> dict:
    config = {
        "name": "test",
        "output": str(output),
        "dataset": {"name": "sample", "max_images": 3},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [10, 30, 50, 90]}},
        "anchors": ["jpeg"],
        "jobs": 1,
    }
    config.update(extra)
    return config


def read_csv(path: Path, drop: set[str] = TIMING) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def first_run(shared: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = config_from_dict(make_config(shared, out))
    summary = run(config, quiet=True)
    return config, out, summary


@pytest.mark.slow
def test_reports_are_written(first_run) -> None:
    _, out, summary = first_run
    for name in ("results.csv", "bd_rate.csv", "bd_rate.md", "rd_detection.png", "failures.csv", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "results.csv")
    assert [r["codec"] for r in rows] == ["uncompressed"] + ["jpeg"] * 4
    assert summary.units_total == 15 and summary.units_computed == 15 and summary.units_failed == 0
    ref = rows[0]
    assert ref["bpp"] == "" and float(ref["bbox/AP"]) > 10
    for row in rows[1:]:  # honest rate: total bits over total ORIGINAL pixels
        assert float(row["bpp"]) == pytest.approx(int(row["bits"]) / int(row["pixels"]), rel=1e-5)
    bpps = [float(r["bpp"]) for r in rows[1:]]
    assert bpps == sorted(bpps)


@pytest.mark.slow
def test_rerun_is_all_cache_hits_and_identical(first_run) -> None:
    config, out, _ = first_run
    before = (out / "results.csv").read_text()
    summary = run(config, quiet=True)
    assert summary.units_computed == 0 and summary.units_cached == 15
    assert (out / "results.csv").read_text() == before


@pytest.mark.slow
def test_ap_equals_pycocotools_on_stored_predictions(first_run) -> None:
    """The reported AP is what pycocotools computes from the same detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vcm_plugin import sample
    from vcm_plugin.results.store import ResultsStore
    from vcm_plugin.tasks.predictions import Detections

    _, out, _ = first_run
    with ResultsStore(out / "results.sqlite") as store:
        ref_rows = [r for r in store.rows() if r.codec == "uncompressed"]
    gt = COCO(str(sample.coco_annotations()))
    dets = []
    for r in ref_rows:
        d = Detections.from_json(r.predictions)
        for (x1, y1, x2, y2), s, c in zip(d.boxes, d.scores, d.labels):
            dets.append({"image_id": int(r.image_id), "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         "score": float(s), "category_id": int(c)})
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.params.imgIds = sorted(int(r.image_id) for r in ref_rows)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    reported = float(read_csv(out / "results.csv")[0]["bbox/AP"])
    assert reported == pytest.approx(100 * ev.stats[0], abs=1e-3)


@pytest.mark.slow
def test_changed_parameter_never_reuses_rows(first_run, shared: Path, tmp_path: Path) -> None:
    import shutil

    _, clean_out, _ = first_run
    out = tmp_path / "copy"
    shutil.copytree(clean_out, out)
    config = config_from_dict(make_config(shared, out), ["codecs.jpeg.subsampling=4:4:4"])
    summary = run(config, quiet=True)
    assert summary.units_cached == 3  # only the uncompressed reference
    assert summary.units_computed == 12


@pytest.mark.slow
def test_failing_codec_is_reported_and_the_run_goes_on(shared: Path, tmp_path: Path) -> None:
    cfg = make_config(shared, tmp_path, dataset={"name": "sample", "max_images": 6})
    cfg["codecs"] = {"jpeg": {"qualities": [10, 30, 50, 90]}, "test-portrait-fail": {"qualities": [2, 4, 6, 8]}}
    summary = run(config_from_dict(cfg), quiet=True)
    assert summary.units_failed > 0
    failures = read_csv(tmp_path / "failures.csv")
    assert failures and all("refuses portrait" in f["error"] and "image id" in f["error"] for f in failures)
    assert all(f["codec"] == "test-portrait-fail" for f in failures)
    md = (tmp_path / "bd_rate.md").read_text()
    assert "Failures" in md and "incomplete points left out" in md
    rows = read_csv(tmp_path / "results.csv")
    jpeg = [r for r in rows if r["codec"] == "jpeg"]
    assert all(r["failed"] == "0" and r["bbox/AP"] for r in jpeg)  # the other codec is fully scored
    bad = [r for r in rows if r["codec"] == "test-portrait-fail"]
    assert all(int(r["failed"]) > 0 and r["bbox/AP"] == "" for r in bad)


def test_second_run_on_the_same_folder_is_refused(shared: Path, tmp_path: Path) -> None:
    config = config_from_dict(make_config(shared, tmp_path))
    with OutputLock(tmp_path):
        with pytest.raises(RunError, match="in use by another vcm run"):
            run(config, quiet=True)


def test_unwritable_output_folder(shared: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = config_from_dict(make_config(shared, blocker / "out"))
    with pytest.raises(RunError, match="not writable"):
        run(config, quiet=True)


def test_missing_weights_fail_before_any_work(shared: Path, tmp_path: Path, monkeypatch) -> None:
    from vcm_plugin.errors import WeightsNotFoundError

    monkeypatch.delenv("VCM_WEIGHTS", raising=False)
    cfg = make_config(shared, tmp_path, weights={"search_path": [str(tmp_path / "nowhere")]})
    with pytest.raises(WeightsNotFoundError, match="yolov5n.pt"):
        run(config_from_dict(cfg), quiet=True)
    assert not (tmp_path / "results.sqlite").exists() or sqlite3.connect(tmp_path / "results.sqlite").execute(
        "SELECT COUNT(*) FROM units").fetchone()[0] == 0


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(shared: Path, tmp_path: Path, first_run) -> None:
    """A real SIGKILL mid-run loses at most the unit in flight; the resumed tables equal the clean run's."""
    import yaml

    _, clean_out, _ = first_run
    out = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config(shared, out)))
    cmd = [sys.executable, "-m", "vcm_plugin", "run", str(cfg_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "results.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                done = sqlite3.connect(db, timeout=5).execute("SELECT COUNT(*) FROM units").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= 5:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sqlite3.connect(db).execute("SELECT COUNT(*) FROM units").fetchone()[0]
    assert 5 <= kept < 15
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_csv(out / "results.csv") == read_csv(clean_out / "results.csv")
    assert (out / "bd_rate.csv").read_text() == (clean_out / "bd_rate.csv").read_text()


def _coco_copy(shared: Path, tmp_path: Path, ids: list[int]) -> tuple[Path, Path]:
    """A COCO folder with the given val images (copied) and their annotations."""
    import json
    import shutil

    src = json.loads((shared / "data" / "coco" / "annotations" / "instances_val2017_subset.json").read_text())
    images = [im for im in src["images"] if im["id"] in ids]
    folder = tmp_path / "val"
    folder.mkdir()
    for im in images:
        shutil.copy(shared / "data" / "coco" / "val2017" / im["file_name"], folder / im["file_name"])
    src["images"] = images
    src["annotations"] = [a for a in src["annotations"] if a["image_id"] in ids]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(src))
    return folder, ann


def coco_config(shared: Path, out: Path, folder: Path, ann: Path, **dataset) -> dict:
    return make_config(shared, out, dataset={"name": "coco", "images_dir": str(folder), "annotations": str(ann),
                                             **dataset})


def test_missing_image_file_fails_before_work_naming_it(shared: Path, tmp_path: Path) -> None:
    from vcm_plugin.datasets import DatasetError

    folder, ann = _coco_copy(shared, tmp_path, [183709, 119828])
    (folder / "000000119828.jpg").unlink()
    with pytest.raises(DatasetError, match="000000119828.jpg"):
        run(config_from_dict(coco_config(shared, tmp_path / "out", folder, ann)), quiet=True)
    assert not (tmp_path / "out" / "results.sqlite").exists()


@pytest.mark.slow
def test_image_size_not_matching_annotations_fails_that_image_only(shared: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder, ann = _coco_copy(shared, tmp_path, [183709, 119828])
    path = folder / "000000119828.jpg"
    Image.open(path).resize((100, 80)).save(path)  # the json still says 640x480
    cfg = coco_config(shared, tmp_path / "out", folder, ann)
    cfg["codecs"] = {"jpeg": {"qualities": [50]}}
    summary = run(config_from_dict(cfg), quiet=True)
    assert summary.units_failed == 2  # that image, for the reference and for jpeg
    errors = [r["error"] for r in read_csv(tmp_path / "out" / "failures.csv")]
    assert all("image id 119828" in e and "000000119828.jpg" in e and "100x80" in e for e in errors)


@pytest.mark.slow
def test_model_returning_no_detections_scores_zero(shared: Path, tmp_path: Path) -> None:
    cfg = make_config(shared, tmp_path, dataset={"name": "sample", "max_images": 2})
    cfg["tasks"]["detection"]["conf_threshold"] = 0.9999  # nothing survives
    cfg["codecs"] = {"jpeg": {"qualities": [50]}}
    summary = run(config_from_dict(cfg), quiet=True)
    assert summary.units_failed == 0
    rows = read_csv(tmp_path / "results.csv")
    assert [float(r["bbox/AP"]) for r in rows] == [0.0, 0.0]
