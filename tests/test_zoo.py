"""The project zoo: every shipped model is small, hash-checked, honestly labelled and reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcm_plugin.cli import main
from vcm_plugin.hashing import file_sha256
from vcm_plugin.zoo import ZooError, zoo_entries, zoo_entry, zoo_file, zoo_group


def test_every_card_is_small_hash_checked_and_reproducible() -> None:
    entries = zoo_entries()
    assert {"vcm-hyperprior-q1", "vcm-hyperprior-q4", "cifar10-vgg"} <= set(entries)
    total = 0
    for entry in entries.values():
        size = zoo_file(entry).stat().st_size  # verifies the SHA-256
        assert size <= 4_000_000, entry.name
        total += size
        assert entry.trained_here
        assert entry.training["command"].startswith("vcm train "), entry.name
        assert entry.training.get("wall_s"), entry.name
    assert total <= 16_000_000


def test_codec_family_has_four_qualities_with_increasing_lambda() -> None:
    family = zoo_group("vcm-hyperprior")
    assert sorted(family) == [1, 2, 3, 4]
    lambdas = [family[q].training["lmbda"] for q in sorted(family)]
    assert lambdas == sorted(lambdas)


def test_unknown_names_list_what_exists() -> None:
    with pytest.raises(ZooError, match="vcm-hyperprior"):
        zoo_group("nope")
    with pytest.raises(ZooError, match="cifar10-vgg"):
        zoo_entry("nope", kind="classifier")


def test_a_damaged_zoo_file_is_refused(tmp_path: Path) -> None:
    import dataclasses

    entry = zoo_entry("vcm-hyperprior-q1")
    bad = dataclasses.replace(entry, sha256="0" * 64)
    with pytest.raises(Exception, match="SHA-256"):
        zoo_file(bad)


def test_vcm_zoo_lists_the_models(capsys) -> None:
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "vcm-hyperprior-q1" in out and "cifar10-vgg" in out and "vcm train codec" in out


def test_publish_writes_a_card_with_the_hash(tmp_path: Path, monkeypatch) -> None:
    import vcm_plugin.zoo.publish as publish

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"x" * 100)
    (run / "result.json").write_text(json.dumps({
        "config": {"architecture": "bmshj2018-hyperprior", "arch_params": {"N": 8, "M": 8}, "distortion": "mse",
                   "lmbda": 0.01, "seed": 0, "export_dtype": "float16", "init_from": None,
                   "data": {"train": ["imgs"], "crop": 64, "batch_size": 2}},
        "steps": 5, "best_step": 5, "wall_s": 1.5, "threads": 1, "machine": "m", "train_images": 3,
        "val_images": ["a"], "val": {"bpp": 0.5, "psnr_rgb": 25.0}}))
    monkeypatch.setattr(publish, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr(publish, "WEIGHTS_DIR", tmp_path / "zoo" / "weights")
    (tmp_path / "zoo").mkdir()
    card = publish.publish_codec(run, "t-q1", "t", 1, "vcm train codec x.yaml")
    text = card.read_text()
    assert "NOT an official CompressAI model" in text
    assert file_sha256(tmp_path / "zoo" / "weights" / "t-q1.pt") in text
    (run / "model.pt").write_bytes(b"x" * (publish.MAX_BYTES + 1))
    with pytest.raises(ZooError, match="limit"):
        publish.publish_codec(run, "t-q2", "t", 2, "cmd")


def test_vcm_zoo_publish_names_a_run_folder_that_is_not_a_finished_training(tmp_path: Path, capsys) -> None:
    assert main(["zoo", "publish", str(tmp_path), "--name", "t-q1", "--group", "t", "--quality", "1",
                 "--command", "vcm train codec x.yaml"]) == 2
    assert f"{tmp_path} has no model.pt/result.json" in capsys.readouterr().err
