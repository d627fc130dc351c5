"""``vcm train classifier`` (tiny runs on real CIFAR-10 PNGs) and the shipped ``cifar10-vgg`` task model."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFIG = str(ROOT / "eval_configs" / "train" / "cifar10_vgg.yaml")
TINY = ["max_images=300", "val_images=60", "widths=[8,16]", "convs=[1,1]", "batch_size=32", "max_test_images=100",
        "threads=1", "eval_batch_size=100"]  # 240 training images: 7 steps per epoch


@pytest.fixture(scope="module")
def cifar(shared: Path) -> Path:
    root = shared / "data" / "cifar10"
    if not (root / "test_labels.csv").is_file():
        pytest.skip("CIFAR-10 is absent from ../shared")
    return root


def _train(cifar: Path, out: Path, *overrides: str) -> dict:
    import json

    from vcm_plugin.training import run_trainer

    result = run_trainer("classifier", CONFIG, [f"data={cifar}", *TINY, *overrides], str(out))
    assert result == json.loads((out / "result.json").read_text())
    return result


def _model_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_tiny_run_writes_checkpoints_result_and_export(cifar: Path, tmp_path: Path) -> None:
    import torch

    result = _train(cifar, tmp_path, "steps=8", "checkpoint_every=3")
    assert {"last.pt", "best.pt", "result.json", "cifar10-vgg.pt", "zoo_card.yaml"} <= {p.name for p in
                                                                                        tmp_path.iterdir()}
    assert result["steps"] == 8 and result["steps_per_epoch"] == 7 and result["test_images"] == 100
    assert result["train_images"] == 240 and result["val_images"] == 60 and result["resumed_from"] == []
    assert result["config"]["widths"] == [8, 16] and result["seed"] == 0 and result["threads"] == 1
    assert 0 <= result["test_top1"] <= 1 and result["best_step"] in (7, 8)
    export = torch.load(tmp_path / "cifar10-vgg.pt", weights_only=True)
    assert export["arch"]["widths"] == [8, 16] and len(export["mean"]) == 3 and len(export["classes"]) == 10
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 8


def test_resume_is_exact_and_extends(cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vcm_plugin.training import loop
    from vcm_plugin.training.loop import TrainingError

    straight = _train(cifar, tmp_path / "a", "steps=10", "checkpoint_every=3")

    class Killed(Exception):
        pass

    real_save = loop.atomic_save

    def save_then_die(obj: dict, path: Path) -> Path:
        real_save(obj, path)
        if Path(path).name == "last.pt" and obj["step"] == 6:
            raise Killed  # as if killed right after the step-6 checkpoint
        return Path(path)

    monkeypatch.setattr(loop, "atomic_save", save_then_die)
    with pytest.raises(Killed):
        _train(cifar, tmp_path / "b", "steps=10", "checkpoint_every=3")
    monkeypatch.undo()
    resumed = _train(cifar, tmp_path / "b", "steps=10", "checkpoint_every=3")
    assert resumed["resumed_from"] == [6] and resumed["steps"] == 10
    a, b = _model_state(tmp_path / "a" / "last.pt"), _model_state(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed run must end with the same weights"
    assert resumed["test_top1"] == straight["test_top1"]

    longer = _train(cifar, tmp_path / "a", "steps=13", "checkpoint_every=3")
    assert longer["resumed_from"] == [10] and longer["steps"] == 13
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=True)["step"] == 13
    with pytest.raises(TrainingError, match=r"different training config \(lr changed\)"):
        _train(cifar, tmp_path / "a", "steps=13", "lr=0.05")


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes(cifar: Path, tmp_path: Path, kill_once_saved) -> None:
    from vcm_plugin.training.loop import load_checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vcm_plugin", "train", "classifier", CONFIG, f"data={cifar}", *TINY,
           "steps=100000", "checkpoint_every=2", "-o", str(out), "--quiet"]
    kill_once_saved(cmd, out / "last.pt", timeout=60, grace=0.3)
    step = load_checkpoint(out / "last.pt")["step"]
    assert 2 <= step < 100000
    result = _train(cifar, out, f"steps={step + 3}", "checkpoint_every=2")
    assert result["resumed_from"] == [step] and result["steps"] == step + 3


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(cifar: Path, tmp_path: Path) -> None:
    import torch

    from vcm_plugin.training.loop import TrainingError, load_checkpoint

    with pytest.raises(TrainingError, match=r"non-finite (loss|weights) (at|after) step \d+") as info:
        _train(cifar, tmp_path, "steps=20", "checkpoint_every=1", "lr=1e30", "grad_clip=null")
    assert "last good checkpoint" in str(info.value) or "last good one" in str(info.value)
    state = load_checkpoint(tmp_path / "last.pt")
    assert 1 <= state["step"] < 20
    assert all(bool(v.isfinite().all()) for v in state["model"].values() if v.is_floating_point())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == state["step"]


def test_unknown_config_keys_are_named(tmp_path: Path) -> None:
    from vcm_plugin.config import ConfigError
    from vcm_plugin.training import run_trainer

    with pytest.raises(ConfigError, match="bogus_key"):
        run_trainer("classifier", CONFIG, ["bogus_key=1"], str(tmp_path))
    with pytest.raises(ConfigError, match=r"'epoch'.*did you mean 'epochs'"):
        run_trainer("classifier", CONFIG, ["epoch=3"], str(tmp_path))
    with pytest.raises(ConfigError, match=r"augment\.flip"):
        run_trainer("classifier", CONFIG, ["augment.flip=true"], str(tmp_path))
    assert not (tmp_path / "last.pt").exists()


def test_validation_is_held_out_of_the_train_split() -> None:
    import torch

    from vcm_plugin.training.classifier import Split, augment, hold_out

    data = Split(torch.zeros(50, 3, 32, 32, dtype=torch.uint8), torch.arange(50) % 10, [f"f{i}" for i in range(50)])
    train, val = hold_out(data, 10, seed=1)
    assert len(val.files) == 10 and len(train.files) == 40 and not set(val.files) & set(train.files)
    assert hold_out(data, 10, seed=1)[1].files == val.files != hold_out(data, 10, seed=2)[1].files
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    y = augment(x, torch.Generator().manual_seed(0), 4, True)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), 0, False), x)


# -- the shipped model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from vcm_plugin.tasks.registry import get_task_model

    m = get_task_model("cifar10-vgg")
    m.load()
    return m


def test_zoo_card_and_weights() -> None:
    from vcm_plugin.hashing import file_sha256
    from vcm_plugin.zoo import zoo_entry, zoo_file

    entry = zoo_entry("cifar10-vgg", "classifier")
    path = zoo_file(entry)
    assert path.stat().st_size <= 4 * 2**20 and entry.trained_here and entry.architecture == "cifar10-vgg"
    assert entry.training["command"].startswith("vcm train classifier eval_configs/train/cifar10_vgg.yaml")
    assert entry.results["cifar10_test_top1"] > 0.5 and file_sha256(path) == entry.sha256


def test_zoo_model_classifies_real_test_images(model, cifar: Path) -> None:
    from vcm_plugin import read_image

    with open(cifar / "test_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[::50]  # 200 images, 20 per class
    hits = sum(int(np.argmax(model.predict(read_image(cifar / r["file"])).probs)) == int(r["class_index"])
               for r in rows)
    assert len(rows) == 200 and hits / 200 > 0.5
    assert model.categories[0] == "airplane" and model.task == "classification"
    assert model.identity()["weights_sha256"] == model.weights_sha256()


def test_cut_points_round_trip(model, shared: Path) -> None:
    import torch

    from vcm_plugin.errors import TaskModelError

    points = model.cut_points()
    assert points == ["input", "block1", "block2", "block3", "block4", "block5", "pool", "fc"]
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (48, 64, 3), np.uint8)):
        probs = model.predict(image).probs
        assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-5
        for point in points:
            value = model.front(point, image)
            if point != "input":
                assert isinstance(value.tensor, torch.Tensor) and value.tensor.shape[0] == 1
            np.testing.assert_allclose(model.run_from(point, value).probs, probs, atol=1e-6)
    assert model.front("block1", image).tensor.shape == (1, 32, 16, 16)
    with pytest.raises(TaskModelError, match="no cut point 'block9'"):
        model.front("block9", image)


def test_state_dict_of_another_architecture_is_refused(tmp_path: Path) -> None:
    import torch

    from vcm_plugin.errors import TaskModelError
    from vcm_plugin.tasks.cifar_vgg import CifarVGGClassifier, VGGConfig, build_cifar_vgg

    other = build_cifar_vgg(VGGConfig(widths=(8, 16, 16, 16, 16))).state_dict()
    other["head.weight"] = torch.zeros(10, 16)
    del other["fc.1.bias"]
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(TaskModelError, match=r"missing: fc\.1\.bias.*unexpected: head\.weight.*shape mismatch: "
                                             r"block1\.0\.weight \(8, 3, 3, 3\)") as info:
        CifarVGGClassifier(weights=str(tmp_path / "other.pt")).load()
    assert "other.pt" in str(info.value)
