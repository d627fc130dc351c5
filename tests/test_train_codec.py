"""``vcm train codec``: a tiny real training run, exact resume, NaN stop, bad configs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vcm_plugin.cli import main
from vcm_plugin.config import ConfigError, load_model_config
from vcm_plugin.training import codec as trainer
from vcm_plugin.training.codec import CodecTrainConfig
from vcm_plugin.training.loop import TrainingError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_file(shared: Path, tmp_path: Path) -> Path:
    data = {
        "output": str(tmp_path / "run"),
        "architecture": "bmshj2018-hyperprior",
        "arch_params": {"N": 8, "M": 12},
        "lmbda": 0.01,
        "data": {"train": [str(shared / "data/coco/train2017")], "val_count": 1, "crop": 64, "batch_size": 2,
                 "max_train_images": 6, "max_val_pixels": 96 * 128},
        "steps": 6, "warmup_steps": 2, "lr": 1e-3, "seed": 3, "threads": 1,
        "checkpoint_every": 2, "val_every": 3,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_tiny_run_exports_a_codec_usable_by_path(config_file: Path, tmp_path: Path, small_crop) -> None:
    assert main(["train", "codec", str(config_file), "--quiet"]) == 0
    run = tmp_path / "run"
    assert {"last.pt", "best.pt", "model.pt", "result.json"} <= {p.name for p in run.iterdir()}
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6 and [h["step"] for h in result["history"]] == [3, 6]
    assert result["val"]["bpp"] > 0 and np.isfinite(result["val"]["psnr_rgb"])
    assert "threads" in result and result["config"]["lmbda"] == 0.01

    from vcm_plugin import get_codec

    codec = get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(run / "model.pt"))
    assert codec.decode(codec.encode(small_crop, 1)).shape == small_crop.shape


@pytest.mark.slow
def test_resume_after_a_kill_9_continues_the_same_run(config_file: Path, tmp_path: Path, kill_once_saved) -> None:
    """A real ``kill -9`` of ``vcm train codec`` once it has saved a checkpoint, then a resume."""
    overrides = ["steps=24", "checkpoint_every=2", "val_every=6"]
    config = load_model_config(config_file, CodecTrainConfig, overrides)
    trainer.train(config, tmp_path / "straight")

    killed = tmp_path / "killed"
    kill_once_saved([sys.executable, "-m", "vcm_plugin", "train", "codec", str(config_file),
                                    *overrides, "-o", str(killed), "--quiet"], killed / "last.pt")
    step = load_checkpoint(killed / "last.pt")["step"]
    assert 2 <= step < 24 and not (killed / "result.json").exists()  # killed in the middle of the run
    result = trainer.train(config, killed)
    assert result["steps"] == 24
    straight, resumed = _weights(tmp_path / "straight/last.pt"), _weights(killed / "last.pt")
    assert straight.keys() == resumed.keys()
    # equal up to float rounding (oneDNN kernels may sum in another order after a reload);
    # a run restarted from scratch or from a wrong state differs by orders of magnitude more
    assert all(torch.allclose(straight[k].float(), resumed[k].float(), rtol=0, atol=1e-6) for k in straight)
    assert [h["step"] for h in result["history"]] == [6, 12, 18, 24]


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(config_file: Path, tmp_path: Path, monkeypatch) -> None:
    config = load_model_config(config_file, CodecTrainConfig)
    real_batch, calls = trainer.random_batch, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        x = real_batch(*args, **kwargs)
        return x * float("nan") if calls["n"] == 3 else x

    monkeypatch.setattr(trainer, "random_batch", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3.*last good checkpoint.*step 2"):
        trainer.train(config, tmp_path / "nan")
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values()
                                      if v.is_floating_point())


def test_resume_with_a_different_config_is_refused(config_file: Path, tmp_path: Path) -> None:
    config = load_model_config(config_file, CodecTrainConfig, ["steps=2"])
    trainer.train(config, tmp_path / "r")
    other = load_model_config(config_file, CodecTrainConfig, ["steps=4", "lmbda=0.05"])
    with pytest.raises(TrainingError, match="different training config"):
        trainer.train(other, tmp_path / "r")


def test_unknown_key_is_named(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data.crops'.*crop"):
        load_model_config(config_file, CodecTrainConfig, ["data.crops=5"])
    assert main(["train", "codec", str(config_file), "lmbdaa=1"]) == 2


def test_missing_training_data_is_named(config_file: Path, tmp_path: Path) -> None:
    config = load_model_config(config_file, CodecTrainConfig, [f"data.train=[{tmp_path}/nothing/*.png]"])
    with pytest.raises(TrainingError, match="nothing"):
        trainer.train(config, tmp_path / "x")


def test_excluded_and_overlapping_images_never_train(shared: Path, tmp_path: Path) -> None:
    folder = shared / "data/coco/train2017"
    files = sorted(folder.iterdir())
    data = trainer.CodecDataConfig(train=[str(folder)], val=[str(files[0])], exclude=[str(files[1])])
    with pytest.raises(TrainingError, match="both train and val"):
        trainer.resolve_images(data, 0)
    data = trainer.CodecDataConfig(train=[str(folder)], val_count=2, exclude=[str(files[1])])
    train, val = trainer.resolve_images(data, 0)
    assert files[1] not in train + val and not set(train) & set(val) and len(val) == 2


def test_lr_schedule_warms_up_then_decays() -> None:
    config = CodecTrainConfig(output="x", lmbda=0.01, data={"train": ["x"]}, steps=100, warmup_steps=10, lr=1e-3)
    lrs = [trainer.lr_at(s, config) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3) and lrs[-1] < 1e-4 and lrs[50] < lrs[20]


def test_grid_trains_each_point_once_and_resumes_an_unfinished_one(config_file: Path, tmp_path: Path) -> None:
    """`vcm train CONFIG --grid Q:LMBDA:STEPS ...`: one folder per quality; finished points are skipped."""
    command = ["train", "codec", str(config_file), f"output={tmp_path}/q{{quality}}", "val_every=2", "--quiet",
               "--grid", "1:0.01:2", "2:0.02:3"]
    assert main(command) == 0
    results = {q: json.loads((tmp_path / f"q{q}" / "result.json").read_text()) for q in (1, 2)}
    assert [(r["steps"], r["config"]["lmbda"], r["config"]["output"]) for r in results.values()] == \
        [(2, 0.01, f"{tmp_path}/q1"), (3, 0.02, f"{tmp_path}/q2")]
    done = (tmp_path / "q1" / "result.json").stat().st_mtime_ns
    (tmp_path / "q2" / "result.json").unlink()  # q2 unfinished: it resumes from its last.pt
    before = _weights(tmp_path / "q2" / "last.pt")
    assert main(command) == 0
    assert (tmp_path / "q1" / "result.json").stat().st_mtime_ns == done
    assert json.loads((tmp_path / "q2" / "result.json").read_text())["val"] == results[2]["val"]
    after = _weights(tmp_path / "q2" / "last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert main(["train", "codec", str(config_file), "--grid", "1:0.01:2", "2:x:3"]) == 2  # names the bad point
    assert main(["train", "codec", str(config_file), f"output={tmp_path}/same", "--grid", "1:0.01:2", "2:0.02:3"]) == 2


def test_decoded_training_images_are_kept_per_process_until_a_file_changes(tmp_path: Path) -> None:
    from PIL import Image

    files = []
    for i in range(3):
        files.append(tmp_path / f"im{i}.png")
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(files[-1])
    first = trainer.load_images(files, 16)
    assert trainer.load_images(files, 16) is first and not first[0].flags.writeable  # shared, read-only
    assert trainer.load_images(files, 24) is not first  # another padding is another list
    Image.fromarray(np.full((30, 24, 3), 7, np.uint8)).save(files[1])  # the file changes: decoded again
    again = trainer.load_images(files, 16)
    assert again is not first and again[1].shape == (30, 24, 3) and int(again[1][0, 0, 0]) == 7


def test_device_is_a_resumable_setting_and_auto_trains_here(config_file: Path) -> None:
    config = load_model_config(config_file, CodecTrainConfig)
    assert config.device == "cpu" and "device" in trainer.RESUMABLE
    result = trainer.train(config.model_copy(update={"device": "auto", "steps": 3, "val_every": 3}),
                           Path(config.output))
    assert result["device"] == ("cpu" if not torch.cuda.is_available() else result["device"])
    assert result["val"] == {k: v for k, v in result["history"][-1].items() if k != "step"}  # validated once
    with pytest.raises(ValueError, match="device"):
        CodecTrainConfig(**{**yaml.safe_load(config_file.read_text()), "device": "tpu"})
