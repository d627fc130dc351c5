"""Run manifests, `vcm verify` across runs, kept bitstreams / reconstructions, and `vcm decode` of a kept file."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm_plugin.cli.main import main
from vcm_plugin.config import config_from_dict
from vcm_plugin.images.io import read_image
from vcm_plugin.pipeline.objects import decoded_sha256, object_path
from vcm_plugin.pipeline.run import run
from vcm_plugin.results.manifest import MANIFEST_NAME


def _config(weights: Path, output: Path, **extra) -> dict:
    return {"name": "verify", "output": str(output), "jobs": 1,
            "dataset": {"name": "sample", "max_images": 1},
            "tasks": {"detection": {"model": "yolov5", "weights": "yolo.pt"}},
            "weights": {"search_path": [str(weights)]},
            "codecs": {"jpeg": {"qualities": [20, 60]}},
            "keep": ["bitstreams", "reconstructions"], **extra}


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(shared: Path, tmp_path_factory) -> dict[str, Path]:
    """Runs A and B of one config (the same weights file), and C with one weight of the detector perturbed."""
    root = tmp_path_factory.mktemp("verify")
    same, perturbed = root / "weights", root / "perturbed"
    same.mkdir()
    perturbed.mkdir()
    state = torch.load(shared / "weights" / "yolov5n_coco_state_dict.pt", map_location="cpu", weights_only=True)
    torch.save(state, same / "yolo.pt")
    state["model.0.conv.weight"][0, 0, 0, 0] += 0.5
    torch.save(state, perturbed / "yolo.pt")
    folders = {"a": root / "a", "b": root / "b", "c": root / "c"}
    for name, weights in (("a", same), ("b", same), ("c", perturbed)):
        summary = run(config_from_dict(_config(weights, folders[name])), quiet=True)
        assert summary.units_failed == 0 and summary.units_computed == 1 + 2  # the reference and 2 jpeg points
    return folders


@pytest.mark.slow
def test_manifest_records_versions_machine_config_and_codec_profiles(runs) -> None:
    manifest = json.loads((runs["a"] / MANIFEST_NAME).read_text())
    assert manifest["packages"]["torch"] == torch.__version__.split("+")[0]
    assert manifest["packages"]["detectron2"] in ("not installed",) or manifest["packages"]["detectron2"]
    assert manifest["ffmpeg"]["build"].startswith("ffmpeg version")
    assert "encoder libvvenc" in manifest["ffmpeg"]["components"]
    assert manifest["cpu"]["model"] and isinstance(manifest["cpu"]["flags"], list)
    assert manifest["threads"]["torch_intra_op"] == torch.get_num_threads()
    assert len(manifest["config_sha256"]) == 64
    assert manifest["codecs"]["jpeg"]["codec"] == "jpeg" and "version" in manifest["codecs"]["jpeg"]
    assert len(manifest["tasks"]["detection"]["weights_sha256"]) == 64
    # the same config in another output folder has the same config hash
    assert json.loads((runs["b"] / MANIFEST_NAME).read_text())["config_sha256"] == manifest["config_sha256"]


@pytest.mark.slow
def test_two_runs_of_one_config_are_identical(runs, capsys) -> None:
    assert main(["verify", str(runs["a"]), str(runs["b"])]) == 0
    out = capsys.readouterr().out
    assert "configs: identical" in out and "units: 3 common, 0 only in A, 0 only in B" in out
    assert "identical: all 3 common units" in out


@pytest.mark.slow
def test_a_perturbed_weight_is_reported_as_diverging_predictions(runs, capsys) -> None:
    assert main(["verify", str(runs["a"]), str(runs["c"]), "--show", "2"]) == 1
    out = capsys.readouterr().out
    assert "weights.search_path" in out  # the config difference
    assert "tasks.detection.weights_sha256" in out  # the manifest difference
    # every unit's key differs (the weights hash is part of it), the codec's outputs do not
    assert "divergent: 3 of 3 common units differ" in out and "unit key 3" in out
    assert "bitstream" not in out.split("divergent:")[1].split("\n")[0]
    assert "predictions" in out and "scores max abs diff" in out
    assert out.count("  jpeg q") + out.count("  uncompressed") == 2  # --show 2


def test_verify_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["verify", str(tmp_path), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vcm: error:") and str(tmp_path) in err and "results store" in err


@pytest.mark.slow
def test_kept_objects_are_one_per_content_and_a_rerun_writes_nothing(runs, shared: Path, tmp_path: Path,
                                                                    capsys) -> None:
    a = runs["a"]
    with sqlite3.connect(a / "results.sqlite") as db:
        rows = db.execute("SELECT bitstream_sha256, decoded_sha256 FROM units WHERE codec='jpeg'").fetchall()
    assert len(rows) == 2 and all(b and d for b, d in rows)
    kept = sorted(p.name for p in (a / "objects" / "bitstreams").rglob("*.vcmb"))
    assert kept == sorted({f"{b}.vcmb" for b, _ in rows})
    assert sorted(p.name for p in (a / "objects" / "reconstructions").rglob("*.png")) == sorted(
        {f"{d}.png" for _, d in rows})
    before = _files(a / "objects")
    config = config_from_dict(_config(a.parent / "weights", a))
    assert run(config, quiet=True).units_computed == 0
    assert _files(a / "objects") == before  # nothing new, nothing rewritten
    # a kept bitstream decodes to the kept reconstruction
    bitstream, decoded = rows[0]
    out = tmp_path / "decoded.png"
    assert main(["decode", str(object_path(a, "bitstreams", bitstream, ".vcmb")), str(out)]) == 0
    image = read_image(out)
    assert decoded_sha256(image) == decoded
    assert np.array_equal(image, read_image(object_path(a, "reconstructions", decoded, ".png")))


@pytest.mark.slow
def test_a_deleted_kept_object_is_made_again(runs, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(runs["b"], folder, ignore=shutil.ignore_patterns(".vcm-run.lock"))
    victim = next((folder / "objects" / "bitstreams").rglob("*.vcmb"))
    victim.unlink()
    config = config_from_dict(_config(Path(runs["b"]).parent / "weights", folder))
    summary = run(config, quiet=True)
    assert summary.units_computed >= 1 and victim.is_file()
