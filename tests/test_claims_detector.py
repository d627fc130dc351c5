"""experiments/claims_detector.py (claims (i)-(iii) on YOLOv5n cut after layer 4): its training configs are
valid configs of the one training loop, its verdict rules are the docstring's, and its --quick version runs
end to end as --train-only then --eval-only. Whether a claim holds is NOT tested: quick runs are smoke tests."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import pytest
from test_experiments import load_script


def test_training_configs_are_valid_for_the_one_training_loop(tmp_path: Path) -> None:
    from vcm_plugin.training.codec import CodecTrainConfig
    from vcm_plugin.training.task_codec import TaskCodecTrainConfig

    d = load_script("claims_detector")
    args = types.SimpleNamespace(coco_root=str(tmp_path / "coco"), weights_dir=str(tmp_path), seed=0, threads=1,
                                 device="cpu")
    distills = {}
    for arm, spec in d.ARMS.items():
        kind, config = d.train_config(arm, 2, 4.0, dict(d.FULL), args)
        assert kind == spec["kind"] and config["steps"] == d.FULL["steps"] and config["data"]["crop"] == 256
        assert config["data"]["exclude"] == [str(tmp_path / "coco" / "val2017")]  # never the evaluation images
        schema = CodecTrainConfig if kind == "codec" else TaskCodecTrainConfig
        parsed = schema(**config, output=str(tmp_path / arm))
        if kind == "codec":
            assert parsed.lmbda == d.ZOO_LMBDAS[1] and parsed.init_from.endswith("vcm-hyperprior-q2.pt")
        else:
            assert parsed.cut == "layer.4" and parsed.task_model == "yolov5" and parsed.lmbda == 4.0
            distills[arm] = parsed.distill
        if kind == "direct":  # 5 lambdas: the two smallest start from the zoo's q1, the others from q2..q4
            assert parsed.init_image_codec == "vcm-hyperprior-q1"
            starts = [d.train_config(arm, q, 1.0, dict(d.FULL), args)[1]["init_image_codec"] for q in range(1, 6)]
            assert starts == [f"vcm-hyperprior-q{k}" for k in (1, 1, 2, 3, 4)]
    assert distills == {"feature-l4": "layer.4", "feature-l6": "layer.6", "feature-l9": "layer.9",
                        "feature-out": "output", "direct-l9": "layer.9"}


def test_verdict_rules_are_the_docstrings() -> None:
    d = load_script("claims_detector")
    worse = {"bd_rate_pct": 45.0, "ci95": [30.0, 60.0], "bd_top1_pts": -2.0, "ci95_top1": [-3.0, -1.5]}
    assert d.verdict_parity(worse) == "not supported" and d.verdict_better(worse) == "contradicted"
    assert d.verdict_parity({**worse, "bd_rate_pct": 3.0, "ci95": [-8.0, 12.0]}) == "supported"
    assert d.verdict_parity({**worse, "bd_rate_pct": 10.0, "ci95": [-5.0, 30.0]}) == "inconclusive"
    no_rate = {**worse, "bd_rate_pct": None, "ci95": None}
    assert d.verdict_parity(no_rate) == "not supported (by BD-mAP)"  # BD-mAP interval outside +-1 point
    assert d.verdict_better(no_rate) == "contradicted (by BD-mAP)"
    better = {**worse, "bd_rate_pct": -30.0, "ci95": [-40.0, -20.0]}
    assert d.verdict_depth([better, better]) == "supported"
    assert d.verdict_depth([better, {**better, "ci95": [-10.0, 5.0]}]) == "partly"
    assert d.verdict_depth([worse, {**better, "ci95": [-10.0, 5.0]}]) == "contradicted"


def test_a_lambda_grid_that_cannot_start_the_direct_codec_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = load_script("claims_detector")
    for grid in ("1,4,16", "1,16,4,64"):  # fewer than the zoo's four starts; not increasing
        with pytest.raises(SystemExit) as e:
            d.main(["--quick", "--output", str(tmp_path / "det"), "--lmbdas", grid])
        assert e.value.code == 2 and "--lmbdas: at least 4 increasing values" in capsys.readouterr().err
    assert not (tmp_path / "det" / "train").exists()


@pytest.mark.slow
def test_quick_train_only_then_eval_only_writes_records_and_section(shared: Path, tmp_path: Path) -> None:
    d = load_script("claims_detector")
    out = tmp_path / "det"
    common = ["--quick", "--output", str(out), "--quiet", "--coco-root", str(shared / "data" / "coco"),
              "--weights-dir", str(shared / "weights"), "--arms", "feature-l4,feature-l9,direct-l9,image-mse"]
    assert d.main([*common, "--train-only"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["runs"] == 19 and summary["mean_s_per_step"] > 0 and not summary["failed"]
    assert not (out / "eval").exists()  # --train-only stops before the harness
    assert d.main([*common, "--eval-only"]) == 0
    with open(out / "rd_points.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["arm"] for r in rows} == {"feature-l4", "feature-l9", "direct-l9", "image-mse"} and len(rows) == 19
    assert all(float(r["bpp"]) > 0 and 0 <= float(r["map"]) <= 100 and int(r["images"]) == 4 for r in rows)
    info = json.loads((out / "claims_detector.json").read_text())
    assert info["config"]["mode"] == "eval-only" and set(info["verdicts"]) == {"i", "ii", "iii"}
    assert [(b["claim"], b["anchor"], b["test"]) for b in info["bd"]] == [
        ("i", "feature-l9", "direct-l9"), ("ii", "image-mse", "direct-l9"), ("iii", "feature-l4", "feature-l9")]
    for b in info["bd"]:
        assert b["metric"] == "map" and (b["bd_rate_pct"] is not None or b["note"].startswith("n/a: "))
    assert len(info["zoo_points"]) == 4 and 0 < info["uncompressed_map"] <= 100
    section = (out / "REPORT_section.md").read_text()
    assert section.startswith("## Claims (i)-(iii) on the detector") and "QUICK run" in section and "![" in section
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
