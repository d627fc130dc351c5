"""`vcm inspect` (per-image matched-rate deltas, drivers, gallery) and `vcm report --format cttc` (the MPEG FCM
CTTC template), on run folders written by hand (known bits, times and predictions on the embedded sample's
images) and on a real YOLOv5n run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from vcm_plugin.cli.main import main
from vcm_plugin.results.store import ResultsStore, UnitRow

# Two sample images with disjoint category sets (4 and 6 categories): predicting all of one image's ground
# truth and nothing on the other gives COCO AP 100 * 4/10 or 100 * 6/10.
A, B = "62554", "119828"
PIXELS = {A: 428 * 640, B: 375 * 500}
QUALITIES = (10, 30, 50, 90)
BPP = {"jpeg": {A: (0.25, 0.5, 1, 2), B: (0.25, 0.5, 1, 2)}, "webp": {A: (0.25, 0.75, 1, 2), B: (0.25, 0.75, 1, 2)}}
FOUND = {"jpeg": {A: (0, 0, 1, 1), B: (0, 1, 1, 1)}, "webp": {A: (0, 1, 1, 1), B: (0, 0, 1, 1)}}  # 1: all GT found
SECONDS = {"jpeg": (0.5, 0.25, 1.0), "webp": (1.5, 0.75, 1.25)}  # encode, decode, inference per image


def _ground_truth_detections(image_id: str) -> dict:
    from vcm_plugin.datasets.registry import get_dataset

    sample = next(s for s in get_dataset("sample") if str(s.image_id) == image_id)
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in sample.annotations)]
    return {"kind": "detections", "boxes": boxes, "scores": [1.0] * len(boxes),
            "labels": [a["category_id"] for a in sample.annotations]}


def make_run(folder: Path, task: str = "detection", dataset: str = "sample", failed: tuple = ()) -> Path:
    """A run folder as `vcm run` leaves it: config.yaml and a results store with the units above."""
    folder.mkdir(parents=True, exist_ok=True)
    model = {"detection": "yolov5", "classification": "yolov5", "image-quality": "image-quality"}[task]
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "name": "hand-made", "output": str(folder), "dataset": {"name": dataset, "image_ids": [int(A), int(B)]},
        "tasks": {"det": {"model": model, "task": task}},
        "codecs": {"jpeg": {"qualities": list(QUALITIES)}, "webp": {"qualities": list(QUALITIES)}},
        "anchors": ["jpeg"]}))
    empty = {"kind": "detections", "boxes": [], "scores": [], "labels": []}
    found = {A: _ground_truth_detections(A), B: _ground_truth_detections(B)}
    grid = []
    with ResultsStore(folder / "results.sqlite") as store:
        for codec in ("jpeg", "webp"):
            enc, dec, inf = SECONDS[codec]
            for k, q in enumerate(QUALITIES):
                for image in (A, B):
                    key = f"{codec}-{q}-{image}"
                    grid.append((codec, q, 1.0, "det", image, key))
                    if (codec, q, image) in failed:
                        store.put(UnitRow(key, codec, q, 1.0, "det", image, "failed", error="codec crashed"))
                        continue
                    predictions = ({"kind": "image_only"} if task == "image-quality"
                                   else found[image] if FOUND[codec][image][k] else empty)
                    store.put(UnitRow(key, codec, q, 1.0, "det", image, "ok", bits=int(BPP[codec][image][k] *
                                                                                         PIXELS[image]),
                                      pixels=PIXELS[image], metrics={"psnr_y": 30 + q / 10}, encode_s=enc,
                                      decode_s=dec, inference_s=inf, predictions=predictions))
        store.set_grid(grid)
    return folder


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cttc_csv_equals_the_hand_made_golden_file(tmp_path: Path) -> None:
    """Columns and row order of CompressAI-Vision's FCM CTTC template; seconds summed over the 2 images."""
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--format", "cttc", "--quiet"]) == 0
    header = ("Dataset,qp,avg_bpp,end_accuracy,y_psnr,nn_part_1,feat_cov_plus_nn_part_1,encode,encode_total,decode,"
              "inv_conv_plus_nn_part_2,nn_part_2,dec_total\n")
    assert (run / "cttc" / "det_jpeg.csv").read_text().replace("\r\n", "\n") == header + (
        "sample,10,0.250000,0.0000,31.0000,0.0000,0.0000,1.0000,1.0000,0.5000,2.0000,2.0000,2.5000\n"
        "sample,30,0.500000,60.0000,33.0000,0.0000,0.0000,1.0000,1.0000,0.5000,2.0000,2.0000,2.5000\n"
        "sample,50,1.000000,100.0000,35.0000,0.0000,0.0000,1.0000,1.0000,0.5000,2.0000,2.0000,2.5000\n"
        "sample,90,2.000000,100.0000,39.0000,0.0000,0.0000,1.0000,1.0000,0.5000,2.0000,2.0000,2.5000\n")
    assert (run / "cttc" / "det_webp.csv").read_text().replace("\r\n", "\n") == header + (
        "sample,10,0.250000,0.0000,31.0000,0.0000,0.0000,3.0000,3.0000,1.5000,2.5000,2.5000,4.0000\n"
        "sample,30,0.750000,40.0000,33.0000,0.0000,0.0000,3.0000,3.0000,1.5000,2.5000,2.5000,4.0000\n"
        "sample,50,1.000000,100.0000,35.0000,0.0000,0.0000,3.0000,3.0000,1.5000,2.5000,2.5000,4.0000\n"
        "sample,90,2.000000,100.0000,39.0000,0.0000,0.0000,3.0000,3.0000,1.5000,2.5000,2.5000,4.0000\n")
    from openpyxl import load_workbook

    sheet = load_workbook(run / "cttc" / "det_webp.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(header.strip().split(","))
    assert rows[2][:4] == ("sample", 30, pytest.approx(0.75), pytest.approx(40.0)) and rows[2][-1] == pytest.approx(4.0)
    assert not (run / "results.csv").exists()  # only the format asked for


def make_split_run(folder: Path) -> Path:
    """A run of two fcm-vvc entries as `vcm run` leaves it: ``fcm``'s units have the front timed apart
    (``front_s``, 0.25 s of each 1.5 s encode); ``fcm-old``'s units were stored before it was recorded (None),
    but for one image at QP 42."""
    folder.mkdir(parents=True, exist_ok=True)
    split = {"codec": "fcm-vvc", "task_model": "yolov5", "cut": "backbone", "qualities": [42, 37]}
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "name": "hand-made-split", "output": str(folder), "dataset": {"name": "sample", "image_ids": [int(A), int(B)]},
        "tasks": {"det": {"model": "yolov5", "task": "detection"}},
        "codecs": {"fcm": split, "fcm-old": split}, "anchors": ["fcm"]}))
    grid = []
    with ResultsStore(folder / "results.sqlite") as store:
        for codec in ("fcm", "fcm-old"):
            for q, bpp in ((42, 0.25), (37, 0.5)):
                for image in (A, B):
                    key = f"{codec}-{q}-{image}"
                    grid.append((codec, q, 1.0, "det", image, key))
                    front = 0.25 if codec == "fcm" or (q, image) == (42, A) else None
                    store.put(UnitRow(key, codec, q, 1.0, "det", image, "ok", bits=int(bpp * PIXELS[image]),
                                      pixels=PIXELS[image], encode_s=1.5, decode_s=0.5, inference_s=0.75,
                                      front_s=front, predictions=_ground_truth_detections(image)))
        store.set_grid(grid)
    return folder


def test_cttc_of_a_split_codec_reports_the_measured_front_as_nn_part_1(tmp_path: Path) -> None:
    """nn_part_1 = the summed front seconds, encode = the codec's encode without them, encode_total = both; a
    point with a unit whose front was not measured (stored before) leaves nn_part_1 empty and encode whole."""
    run = make_split_run(tmp_path / "run")
    assert main(["report", str(run), "--format", "cttc", "--quiet"]) == 0
    header = ("Dataset,qp,avg_bpp,end_accuracy,y_psnr,nn_part_1,feat_cov_plus_nn_part_1,encode,encode_total,decode,"
              "inv_conv_plus_nn_part_2,nn_part_2,dec_total\n")
    assert (run / "cttc" / "det_fcm.csv").read_text().replace("\r\n", "\n") == header + (
        "sample,37,0.500000,100.0000,,0.5000,0.5000,2.5000,3.0000,1.0000,1.5000,1.5000,2.5000\n"
        "sample,42,0.250000,100.0000,,0.5000,0.5000,2.5000,3.0000,1.0000,1.5000,1.5000,2.5000\n")
    assert (run / "cttc" / "det_fcm-old.csv").read_text().replace("\r\n", "\n") == header + (
        "sample,37,0.500000,100.0000,,,,3.0000,3.0000,1.0000,1.5000,1.5000,2.5000\n"
        "sample,42,0.250000,100.0000,,,,3.0000,3.0000,1.0000,1.5000,1.5000,2.5000\n")
    from openpyxl import load_workbook

    rows = list(load_workbook(run / "cttc" / "det_fcm.xlsx").active.iter_rows(values_only=True))
    assert rows[1][5:9] == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(2.5), pytest.approx(3.0))


@pytest.mark.parametrize("task, dataset, missing", [("classification", "sample", "task 'classification'"),
                                                    ("detection", "cifar10", "dataset 'cifar10'")])
def test_cttc_refuses_what_the_template_does_not_cover(tmp_path: Path, capsys, task: str, dataset: str,
                                                       missing: str) -> None:
    run = make_run(tmp_path / "run", task=task, dataset=dataset)
    assert main(["report", str(run), "--format", "cttc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vcm: error: ") and missing in err[0] and "CTTC" in err[0]
    assert not (run / "cttc").exists()


def test_report_config_section_takes_formats() -> None:
    from vcm_plugin.config import ConfigError, config_from_dict

    base = {"dataset": {"name": "sample"}, "tasks": {"d": {"model": "yolov5"}}, "codecs": {"jpeg": {"qualities": [5]}}}
    assert config_from_dict(base, check_plugins=False).report.formats == ["default"]
    assert config_from_dict({**base, "report": {"formats": ["default", "cttc"]}},
                            check_plugins=False).report.formats == ["default", "cttc"]
    with pytest.raises(ConfigError, match="formats"):
        config_from_dict({**base, "report": {"formats": ["xls"]}}, check_plugins=False)


def test_inspect_matched_rate_deltas_drivers_and_gallery(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert main(["inspect", str(run), "--worst", "2"]) == 0
    matched = {(r["image_id"], r["quality"]): r for r in _read(run / "inspect" / "matched_rate.csv")}
    assert len(matched) == 8 and {r["codec"] for r in matched.values()} == {"webp"}
    # webp q 30 is at 0.75 bpp: jpeg's per-image curve interpolated in log10(bpp) between 0.5 and 1 bpp
    t = math.log10(0.75 / 0.5) / math.log10(2)
    assert float(matched[(A, "30")]["anchor_score_at_bpp"]) == pytest.approx(100 * t, abs=1e-4)
    assert float(matched[(A, "30")]["delta"]) == pytest.approx(100 - 100 * t, abs=1e-4)
    assert float(matched[(B, "30")]["delta"]) == pytest.approx(-100.0)
    assert all(float(matched[(i, q)]["delta"]) == 0 for i in (A, B) for q in ("10", "50", "90"))
    drivers = _read(run / "inspect" / "drivers.csv")
    assert [(d["rank"], d["image_id"]) for d in drivers] == [("1", B), ("2", A)]
    assert float(drivers[0]["mean_delta"]) == pytest.approx(-25.0)
    assert float(drivers[1]["mean_delta"]) == pytest.approx((100 - 100 * t) / 4, abs=1e-4)
    assert float(drivers[0]["contribution"]) == pytest.approx(-12.5)
    gallery = sorted((run / "inspect" / "gallery").glob("*.png"))
    assert [p.name for p in gallery] == [f"det_webp_vs_jpeg_s1_{B}.png", f"det_webp_vs_jpeg_s1_{A}.png"]
    from vcm_plugin.images import read_image

    picture = read_image(gallery[0])
    assert picture.shape[1] > picture.shape[0] and picture.std() > 20  # two panels side by side, real content
    index = (run / "inspect" / "index.html").read_text()
    assert all(f"gallery/{p.name}" in index for p in gallery)


def test_gallery_draws_the_stored_boxes(tmp_path: Path) -> None:
    """A box drawn by draw_predictions changes the pixels on its outline, in the colour of its label."""
    from vcm_plugin.analysis.gallery import _color, draw_predictions

    image = np.full((60, 80, 3), 128, np.uint8)
    record = {"kind": "detections", "boxes": [[10, 10, 50, 40], [0, 0, 5, 5]], "scores": [0.9, 0.1],
              "labels": [1, 3]}
    drawn, caption = draw_predictions(image, record, str, 0.3)
    assert caption == "1 of 2 detections with score >= 0.3"
    assert tuple(drawn[25, 10]) == _color(1) and tuple(drawn[2, 2]) == (128, 128, 128)
    _, top5 = draw_predictions(image, {"kind": "class_scores", "probs": [0.1, 0.6, 0.3]}, lambda k: f"c{k}", 0.3)
    assert top5 == "top-5: c1 0.60, c2 0.30, c0 0.10"


def test_inspect_leaves_out_incomplete_points_and_names_them(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", failed=(("webp", 90, B),))
    assert main(["inspect", str(run), "--worst", "0"]) == 0
    assert "left out (incomplete): det webp q 90" in capsys.readouterr().out
    rows = _read(run / "inspect" / "matched_rate.csv")
    assert {r["quality"] for r in rows} == {"10", "30", "50"}
    assert "det webp q 90" in (run / "inspect" / "index.html").read_text()


@pytest.mark.parametrize("case", ["not a run", "no per-image scores", "unknown anchor"])
def test_inspect_bad_inputs_exit_2_naming_the_folder(tmp_path: Path, capsys, case: str) -> None:
    folder = tmp_path / "run"
    args = ["inspect", str(folder)]
    if case == "not a run":
        folder.mkdir()
        (folder / "results.csv").write_text("task\n")
        expected = "is not a run folder"
    elif case == "no per-image scores":
        make_run(folder, task="image-quality")
        expected = "has no per-image task scores"
    else:
        make_run(folder)
        args += ["--anchor", "vvc"]
        expected = "anchor 'vvc' is not one of its codecs"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vcm: error: ") and str(folder) in err[0] and expected in err[0]
    assert not (folder / "inspect").exists()


@pytest.mark.slow
def test_real_run_writes_cttc_and_inspects(shared: Path, tmp_path: Path) -> None:
    """`vcm run` with report.formats [default, cttc] on YOLOv5n, then `vcm inspect`: the CTTC rows are the
    results.csv points; the drivers cover every image."""
    from vcm_plugin.config import config_from_dict
    from vcm_plugin.pipeline.run import run

    out = tmp_path / "run"
    run(config_from_dict({
        "name": "cttc", "output": str(out), "dataset": {"name": "sample", "max_images": 2},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [10, 50, 90]}, "webp": {"qualities": [10, 50, 90]}},
        "anchors": ["jpeg"], "jobs": 1, "report": {"formats": ["default", "cttc"]}}), quiet=True)
    results = {(r["codec"], r["quality"]): r for r in _read(out / "results.csv")}
    cttc = _read(out / "cttc" / "detection_webp.csv")
    assert [r["qp"] for r in cttc] == ["10", "50", "90"]
    for row in cttc:
        point = results[("webp", row["qp"])]
        assert float(row["avg_bpp"]) == pytest.approx(float(point["bpp"]), abs=1e-6)
        assert float(row["end_accuracy"]) == pytest.approx(float(point["bbox/AP"]), abs=1e-3)
        assert float(row["nn_part_2"]) == pytest.approx(2 * float(point["inference_s_per_image"]), abs=1e-3)
    assert main(["inspect", str(out), "--worst", "1"]) == 0
    drivers = _read(out / "inspect" / "drivers.csv")
    assert len(drivers) == 2 and len(list((out / "inspect" / "gallery").glob("*.png"))) == 1
