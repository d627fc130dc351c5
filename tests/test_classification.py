"""Classification: top-1/top-5 evaluator, the imagenet and cifar10 datasets on the real shared data,
the TFLite MobileNetV2 and the torchvision classifiers (offline: random checkpoints only)."""

from __future__ import annotations

import csv
import pickle
import shutil
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.datasets import DatasetError, Sample, dataset_names, get_dataset
from vcm_plugin.datasets.cifar10 import CIFAR10_CLASSES, balanced_selection
from vcm_plugin.datasets.imagenet import ImageNetDataset
from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.evaluation.base import EvaluationError
from vcm_plugin.evaluation.classification import ClassificationEvaluator, true_class_rank
from vcm_plugin.tasks import get_task_model
from vcm_plugin.tasks.predictions import ClassScores, Detections
from vcm_plugin.tasks.registry import task_model_names

TFLITE = "mobilenet_v2_1.0_224_quant.tflite"


def sample(image_id: str, class_index: int) -> Sample:
    return Sample(image_id, Path(image_id), 1, 1, [{"class_index": class_index}])


@pytest.fixture(scope="module")
def imagenet_dir(shared: Path) -> Path:
    return shared / "data" / "imagenet"


@pytest.fixture(scope="module")
def imagenet(imagenet_dir: Path) -> ImageNetDataset:
    return ImageNetDataset(imagenet_dir)


@pytest.fixture(scope="module")
def cifar_dir(shared: Path) -> Path:
    return shared / "data" / "cifar10"


# -- evaluator --------------------------------------------------------------------------------
def test_evaluator_top1_top5_on_hand_made_scores() -> None:
    evaluator = ClassificationEvaluator(10, [f"c{i}" for i in range(10)])
    assert evaluator.primary_metric == "top1"
    ramp = np.arange(10, dtype=np.float32)[::-1] / 45  # class 0 best, class 9 worst
    evaluator.process(sample("a", 0), ClassScores(ramp))  # rank 0: top-1 and top-5
    evaluator.process(sample("b", 3), ClassScores(ramp))  # rank 3: top-5 only
    evaluator.process(sample("c", 5), ClassScores(ramp))  # rank 5: neither
    evaluator.process(sample("d", 9), ClassScores(ramp))  # rank 9: neither
    assert evaluator.ranks == {"a": 0, "b": 3, "c": 5, "d": 9}
    assert evaluator.evaluate() == {"top1": 25.0, "top5": 50.0, "images": 4}
    evaluator.reset()
    evaluator.process(sample("a", 2), ClassScores(np.eye(10)[2]))
    assert evaluator.evaluate() == {"top1": 100.0, "top5": 100.0, "images": 1}


def test_ties_rank_lower_class_index_first() -> None:
    probs = np.array([0.1, 0.3, 0.3, 0.3, 0.0], np.float32)
    assert [true_class_rank(probs, c) for c in range(5)] == [3, 0, 1, 2, 4]
    order = np.argsort(-probs, kind="stable")  # the documented equivalent
    assert [int(np.flatnonzero(order == c)[0]) for c in range(5)] == [3, 0, 1, 2, 4]
    uniform = np.full(1000, 0.001, np.float32)
    assert true_class_rank(uniform, 4) == 4 and true_class_rank(uniform, 5) == 5


def test_evaluator_errors_name_the_image() -> None:
    evaluator = ClassificationEvaluator(10)
    with pytest.raises(EvaluationError, match=r"image id x: the model gives 1000 class scores, the dataset has 10"):
        evaluator.process(sample("x", 1), ClassScores(np.full(1000, 1e-3)))
    with pytest.raises(EvaluationError, match="image id x: classification needs ClassScores, got Detections"):
        evaluator.process(sample("x", 1), Detections.empty())
    with pytest.raises(EvaluationError, match="image id x: class scores contain NaN"):
        evaluator.process(sample("x", 1), ClassScores(np.full(10, np.nan)))
    with pytest.raises(EvaluationError, match="image id x: class_index 10 is outside 0..9"):
        evaluator.process(sample("x", 10), ClassScores(np.full(10, 0.1)))
    with pytest.raises(EvaluationError, match="image id y: classification needs exactly one annotation"):
        evaluator.process(Sample("y", Path("y"), 1, 1, []), ClassScores(np.full(10, 0.1)))
    with pytest.raises(EvaluationError, match="no image was processed"):
        evaluator.evaluate()
    evaluator.process(sample("x", 1), ClassScores(np.full(10, 0.1)))
    with pytest.raises(EvaluationError, match="image id x was already processed"):
        evaluator.process(sample("x", 1), ClassScores(np.full(10, 0.1)))
    with pytest.raises(EvaluationError, match="3 class names for 10 classes"):
        ClassificationEvaluator(10, ["a", "b", "c"])


def test_registries_list_the_new_names() -> None:
    assert {"imagenet", "cifar10"} <= set(dataset_names())
    assert {"torchvision-classification", "tflite-classification"} <= set(task_model_names())


# -- imagenet ---------------------------------------------------------------------------------
def test_imagenet_reads_the_real_subset(imagenet: ImageNetDataset, imagenet_dir: Path) -> None:
    assert len(imagenet) == 1000 and imagenet.num_classes == 1000
    samples = list(imagenet)
    assert len({s.annotations[0]["class_index"] for s in samples}) == 725
    assert {(s.height, s.width) for s in samples} == {(227, 227)}
    with open(imagenet_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [s.image_id for s in samples] == [r["file"] for r in rows]  # the CSV is sorted by file
    assert all(s.annotations == [{"class_index": int(r["class_index"])}] for s, r in zip(samples, rows))
    first = samples[0]
    assert first.image_id == "val/ILSVRC2012_val_00000355.JPEG" and first.path == imagenet_dir / first.image_id
    assert first.load().shape == (227, 227, 3)
    assert imagenet.class_names[:2] == ["tench", "goldfish"] and imagenet.class_names[260] == "chow"
    ident = imagenet.identity()
    sums = dict(line.split()[::-1] for line in (imagenet_dir / "SHA256SUMS").read_text().splitlines())
    assert ident["labels_sha256"] == sums["labels.csv"] and ident["classes_sha256"] == sums["classes.csv"]
    assert ident["image_ids"] == [s.image_id for s in samples]
    evaluator = imagenet.evaluator("classification")
    assert isinstance(evaluator, ClassificationEvaluator) and evaluator.num_classes == 1000
    with pytest.raises(DatasetError, match="no evaluator for task 'detection'"):
        imagenet.evaluator("detection")


def test_imagenet_image_ids_and_max_images(imagenet_dir: Path) -> None:
    first3 = get_dataset("imagenet", root=imagenet_dir, max_images=3)
    assert first3.image_ids == ["val/ILSVRC2012_val_00000355.JPEG", "val/ILSVRC2012_val_00000363.JPEG",
                                "val/ILSVRC2012_val_00000560.JPEG"]
    chosen = ["val/ILSVRC2012_val_00000560.JPEG", "ILSVRC2012_val_00000355.JPEG"]  # bare names work when unique
    picked = get_dataset("imagenet", root=imagenet_dir, image_ids=chosen)
    assert picked.image_ids == ["val/ILSVRC2012_val_00000560.JPEG", "val/ILSVRC2012_val_00000355.JPEG"]
    assert get_dataset("imagenet", root=imagenet_dir, image_ids=chosen, max_images=1).image_ids == \
        ["val/ILSVRC2012_val_00000560.JPEG"]
    assert first3.identity()["image_ids"] != picked.identity()["image_ids"]
    with pytest.raises(DatasetError, match=r"image id\(s\) \['nope.JPEG'\]"):
        ImageNetDataset(imagenet_dir, image_ids=["nope.JPEG"])
    with pytest.raises(DatasetError, match="listed more than once"):
        ImageNetDataset(imagenet_dir, image_ids=chosen + chosen[:1])
    with pytest.raises(DatasetError, match="max_images must be a positive integer"):
        ImageNetDataset(imagenet_dir, max_images=0)


@pytest.fixture
def folder_layout(tmp_path: Path, imagenet_dir: Path) -> tuple[Path, dict[str, int]]:
    """root/<wnid>/<file> with 3 real images of 3 classes; returns the root and file -> class index."""
    with open(imagenet_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = [rows[0], rows[1], rows[2]]
    expected = {}
    for row in picked:
        name = Path(row["file"]).name
        (tmp_path / "tiny" / row["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_dir / row["file"], tmp_path / "tiny" / row["wnid"] / name)
        expected[f"{row['wnid']}/{name}"] = int(row["class_index"])
    return tmp_path / "tiny", expected


def test_imagenet_class_folder_layout(folder_layout: tuple[Path, dict[str, int]], imagenet_dir: Path) -> None:
    root, expected = folder_layout
    with_classes = ImageNetDataset(root, classes=imagenet_dir / "classes.csv")
    assert with_classes.image_ids == sorted(expected) and with_classes.num_classes == 1000
    assert {s.image_id: s.annotations[0]["class_index"] for s in with_classes} == expected
    assert [(s.height, s.width) for s in with_classes] == [(227, 227)] * 3
    assert with_classes.identity()["labels_sha256"] is None
    with pytest.warns(UserWarning, match="3 class folders, not 1000"):
        ranks_only = ImageNetDataset(root)  # no classes CSV: sorted wnids, as torchvision's ImageFolder
    wnids = sorted({i.split("/")[0] for i in expected})
    assert ranks_only.num_classes == 3 and ranks_only.class_names == wnids
    assert {s.image_id: s.annotations[0]["class_index"] for s in ranks_only} == \
        {i: wnids.index(i.split("/")[0]) for i in expected}
    (root / "n99999999").mkdir()
    shutil.copyfile(root / next(iter(expected)), root / "n99999999" / "x.JPEG")
    with pytest.raises(DatasetError, match=r"class folder\(s\) \['n99999999'\].*not wnids of classes file"):
        ImageNetDataset(root, classes=imagenet_dir / "classes.csv")


def test_labels_with_unknown_class_id_name_file_line_and_id(tmp_path: Path, imagenet_dir: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\nval/ILSVRC2012_val_00000355.JPEG,260\n"
                      "val/ILSVRC2012_val_00000363.JPEG,1000\n")
    with pytest.raises(DatasetError, match=rf"{labels} line 3: class id 1000 is outside 0..999"):
        ImageNetDataset(imagenet_dir, labels=labels)
    labels.write_text("file,wnid\nval/ILSVRC2012_val_00000355.JPEG,n02112137\n"
                      "val/ILSVRC2012_val_00000363.JPEG,n00000042\n")
    with pytest.raises(DatasetError, match=rf"{labels} line 3: class id \(wnid\) 'n00000042' is not in"):
        ImageNetDataset(imagenet_dir, labels=labels)
    labels.write_text("file,wnid,class_index\nval/ILSVRC2012_val_00000355.JPEG,n02112137,5\n")
    with pytest.raises(DatasetError, match=rf"{labels} line 2: class_index 5 disagrees with wnid 'n02112137'"):
        ImageNetDataset(imagenet_dir, labels=labels)
    labels.write_text("name,label\nx,1\n")
    with pytest.raises(DatasetError, match=rf"labels file {labels} has no 'file' column"):
        ImageNetDataset(imagenet_dir, labels=labels)
    labels.write_text("file,wnid\nval/ILSVRC2012_val_00000355.JPEG,n02112137\n")  # wnid-only works with classes
    only = ImageNetDataset(imagenet_dir, labels=labels)
    assert [s.annotations for s in only] == [[{"class_index": 260}]]


def test_missing_image_policy_names_the_file(tmp_path: Path, imagenet_dir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\nval/ILSVRC2012_val_00000355.JPEG,260\nval/gone.JPEG,1\n")
    with pytest.raises(DatasetError, match=r"1 image file\(s\) listed in .* are missing: .*val/gone.JPEG"):
        ImageNetDataset(imagenet_dir, labels=labels)
    with caplog.at_level("WARNING", logger="vcm_plugin"):  # a log record, shown by the CLI as one line
        kept = ImageNetDataset(imagenet_dir, labels=labels, missing="skip")
    assert "skipped 1 image" in caplog.text
    assert kept.image_ids == ["val/ILSVRC2012_val_00000355.JPEG"] and kept.skipped_ids == ["val/gone.JPEG"]
    with pytest.raises(DatasetError, match="missing must be 'error' or 'skip'"):
        ImageNetDataset(imagenet_dir, labels=labels, missing="ignore")


# -- cifar10 ----------------------------------------------------------------------------------
def test_cifar10_test_and_train_splits(cifar_dir: Path) -> None:
    test = get_dataset("cifar10", root=cifar_dir)
    assert len(test) == 10_000 and test.num_classes == 10 and test.class_names == list(CIFAR10_CLASSES)
    assert Counter(e.class_index for e in test.entries.values()) == {c: 1000 for c in range(10)}
    first, last = test[0], test[len(test) - 1]
    assert first.image_id == "test/airplane/aeroplane_s_000002.png" and first.annotations == [{"class_index": 0}]
    assert last.image_id.startswith("test/truck/") and last.annotations == [{"class_index": 9}]
    assert (first.height, first.width) == (32, 32) and first.load().shape == (32, 32, 3)
    train = get_dataset("cifar10", root=cifar_dir, split="train")
    assert len(train) == 10_000 and not set(train.image_ids) & set(test.image_ids)
    assert train.identity()["split"] == "train" and train.identity()["labels_sha256"] != \
        test.identity()["labels_sha256"]
    with pytest.raises(DatasetError, match="split must be one of"):
        get_dataset("cifar10", root=cifar_dir, split="val")


def test_cifar10_max_images_is_class_balanced(cifar_dir: Path) -> None:
    subset = get_dataset("cifar10", root=cifar_dir, max_images=25)
    counts = Counter(s.annotations[0]["class_index"] for s in subset)
    assert counts == {0: 3, 1: 3, 2: 3, 3: 3, 4: 3, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2}
    full = get_dataset("cifar10", root=cifar_dir)
    per_class = {c: [i for i in full.image_ids if full.entries[i].class_index == c] for c in range(10)}
    assert subset.image_ids == [i for c in range(10) for i in per_class[c][:counts[c]]]  # first n of each class
    assert get_dataset("cifar10", root=cifar_dir, max_images=25).image_ids == subset.image_ids  # deterministic
    # a class short of images leaves its share to the others
    order = ["a1", "b1", "b2", "b3", "b4"]
    assert balanced_selection(order, {"a1": 0, "b1": 1, "b2": 1, "b3": 1, "b4": 1}, 3) == ["a1", "b1", "b2"]


def test_cifar10_folder_layout_without_csv(tmp_path: Path, cifar_dir: Path) -> None:
    for cls in ("airplane", "truck"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for src in sorted((cifar_dir / "test" / cls).iterdir())[:2]:
            shutil.copyfile(src, tmp_path / "test" / cls / src.name)
    data = get_dataset("cifar10", root=tmp_path)
    assert [s.annotations[0]["class_index"] for s in data] == [0, 0, 9, 9]
    assert data.identity()["labels_sha256"] is None
    (tmp_path / "test" / "unicorn").mkdir()
    shutil.copyfile(data[0].path, tmp_path / "test" / "unicorn" / "u.png")
    with pytest.raises(DatasetError, match=r"class folder\(s\) \['unicorn'\]"):
        get_dataset("cifar10", root=tmp_path)


# -- TFLite MobileNetV2 -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tflite_model(shared: Path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    model = get_task_model("tflite-classification", search_path=[str(shared / "weights")])
    model.load()
    return model


def test_tflite_mobilenet_v2_on_real_imagenet_images(tflite_model, imagenet_dir: Path) -> None:
    data = ImageNetDataset(imagenet_dir, max_images=20)
    evaluator = data.evaluator("classification")
    for item in data:
        scores = tflite_model.run_from("input", item.load())
        assert scores.probs.shape == (1000,) and scores.probs.dtype == np.float32
        assert abs(float(scores.probs.sum()) - 1.0) < 1e-5 and scores.probs.min() >= 0
        evaluator.process(item, scores)
    metrics = evaluator.evaluate()
    assert metrics["images"] == 20
    assert metrics["top1"] >= 40.0 and metrics["top5"] >= metrics["top1"]  # chance is 0.1 % (measured: 60 %)
    ident = tflite_model.identity()
    assert ident["model_sha256"] == "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
    assert "search_path" not in ident["params"] and ident["params"]["central_fraction"] == 0.875
    clone = pickle.loads(pickle.dumps(tflite_model))  # the interpreter is rebuilt in the new process
    assert clone._interpreter is None
    np.testing.assert_array_equal(clone.predict(data[0].load()).probs, tflite_model.predict(data[0].load()).probs)


def test_tflite_preprocessing_crop_rule() -> None:
    from vcm_plugin.tasks.tflite_backend import central_crop, to_input, to_probabilities

    image = np.zeros((227, 300, 3), np.uint8)
    assert central_crop(image, 0.875).shape == (199, 264, 3)  # offsets 14 and 18
    pixels = np.array([[0, 128, 255]], np.uint8)
    assert to_input(pixels, np.uint8, 1 / 128, 128) is pixels
    np.testing.assert_allclose(to_input(pixels, np.float32, 0.0, 0), [[-1.0, 128 / 127.5 - 1, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(to_input(pixels, np.int8, 1 / 128, 0), [[-128, 0, 127]])
    raw = np.array([128, 64, 64, 0], np.uint8)  # background 0.5, two classes at 0.25
    np.testing.assert_allclose(to_probabilities(raw, 1 / 256, 0, True), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(to_probabilities(np.array([255, 0, 0], np.uint8), 1 / 256, 0, True), [0.5, 0.5])


def test_tflite_errors(tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VCM_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError, match=TFLITE):
        get_task_model("tflite-classification", search_path=[str(tmp_path)]).load()
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = bytearray((shared / "weights" / TFLITE).read_bytes())
    blob[-1] ^= 1
    (bad / TFLITE).write_bytes(bytes(blob))
    with pytest.raises(TaskModelError, match="has SHA-256 .* expected 7aad0c74"):
        get_task_model("tflite-classification", search_path=[str(bad)]).load()
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails as if not installed
    with pytest.raises(TaskModelError, match="pip install ai-edge-litert"):
        get_task_model("tflite-classification", search_path=[str(shared / "weights")]).load()


# -- torchvision classifiers ------------------------------------------------------------------
@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Empty weights folders (TORCH_HOME, HOME, no VCM_WEIGHTS) and every download path refused."""
    torch = pytest.importorskip("torch")
    import torchvision.models._api as tv_api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VCM_WEIGHTS", raising=False)
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(str(args[:1]))
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def test_torchvision_classifier_offline_names_file_and_folders(tmp_path: Path, offline: list[str]) -> None:
    model = get_task_model("torchvision-classification", search_path=[str(tmp_path / "mine")])
    assert model.params()["architecture"] == "resnet50" and model.weights_file_name() == "resnet50-11ad3fa6.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        model.predict(np.zeros((40, 50, 3), np.uint8))
    message = str(info.value)
    assert "resnet50-11ad3fa6.pth" in message
    for folder in (tmp_path / "mine", tmp_path / "torch" / "hub" / "checkpoints",
                   tmp_path / "home" / ".cache" / "vcm_plugin" / "weights"):
        assert str(folder) in message
    assert "download" in message and not offline
    assert model.identity()["weights"]["url"].endswith("/resnet50-11ad3fa6.pth")  # no file needed


def test_torchvision_classifier_bad_names() -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(TaskModelError, match=r"'resnet5' is not a torchvision classification model; nearest valid "
                                             r"names: \['resnet50'"):
        get_task_model("torchvision-classification", architecture="resnet5")
    with pytest.raises(TaskModelError, match="has no weights 'IMAGENET9K'; valid: IMAGENET1K_V1, IMAGENET1K_V2"):
        get_task_model("torchvision-classification", weights="IMAGENET9K")


@pytest.mark.slow
def test_torchvision_classifier_runs_a_random_checkpoint(tmp_path: Path, offline: list[str],
                                                         imagenet: ImageNetDataset) -> None:
    import torch
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    model = get_task_model("torchvision-classification", architecture="resnet18", checkpoint="r18.pt",
                           search_path=[str(tmp_path)])
    scores = model.run_from("input", imagenet[0].load())
    assert scores.probs.shape == (1000,) and abs(float(scores.probs.sum()) - 1.0) < 1e-4
    assert len(model.categories) == 1000 and model.categories[0] == "tench"
    ident = model.identity()
    assert ident["weights"]["enum"] == "ResNet18_Weights.IMAGENET1K_V1" and len(ident["weights"]["sha256"]) == 64
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict(imagenet[0].load()).probs, scores.probs, atol=1e-6)
    with pytest.raises(TaskModelError, match="no node 'backbone'; nearest clean cut points"):
        model.run_from("backbone", imagenet[0].load())
    assert not offline


@pytest.mark.slow
def test_torchvision_classifier_refuses_wrong_and_unsafe_checkpoints(tmp_path: Path, offline: list[str]) -> None:
    import torch
    import torchvision

    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "squeezenet.pt")
    model = get_task_model("torchvision-classification", architecture="resnet18",
                           checkpoint=str(tmp_path / "squeezenet.pt"))
    with pytest.raises(TaskModelError) as info:
        model.load()
    message = str(info.value)
    assert "squeezenet.pt" in message and "does not fit 'resnet18'" in message
    assert "missing keys (122): conv1.weight" in message and "unexpected keys (52): features.0.weight" in message
    torch.save({"model": torchvision.models.squeezenet1_1()}, tmp_path / "pickled.pt")
    with pytest.raises(TaskModelError, match="pickled.pt' is not a weights-only checkpoint"):
        get_task_model("torchvision-classification", architecture="squeezenet1_1",
                       checkpoint=str(tmp_path / "pickled.pt")).load()
    assert not offline
