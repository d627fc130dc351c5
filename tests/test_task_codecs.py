"""Split points, direct coding and learned feature codecs: training by distillation, codecs, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from vcm_plugin.cli import main
from vcm_plugin.codecs.registry import get_codec
from vcm_plugin.errors import BitstreamFormatError, DecodeError, TaskModelError
from vcm_plugin.images.io import read_image
from vcm_plugin.learned.task_checkpoint import TaskCodecCheckpointError
from vcm_plugin.pipeline.objects import decoded_sha256
from vcm_plugin.splitting.adapter import split_adapter
from vcm_plugin.tasks.registry import get_task_model
from vcm_plugin.training import task_codec
from vcm_plugin.training.loop import TrainingError, load_checkpoint
from vcm_plugin.training.task_codec import TaskCodecTrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar() -> object:
    return get_task_model("cifar10-vgg")


@pytest.fixture(scope="module")
def yolo(shared: Path) -> object:
    return get_task_model("yolov5", search_path=[str(shared / "weights")])


@pytest.fixture(scope="module")
def cifar_images(shared: Path) -> list[np.ndarray]:
    files = sorted((shared / "data/cifar10/test").rglob("*.png"))[::500][:8]
    return [read_image(p) for p in files]


def _config(shared: Path, out: Path, **changes) -> dict:
    data = {
        "output": str(out), "task_model": "cifar10-vgg", "cut": "block2", "distill": "output",
        "distortion": "kl", "lmbda": 1.0, "arch": {"N": 16, "M": 24, "down": 2},
        "data": {"train": [str(shared / "data/cifar10/train/airplane"), str(shared / "data/cifar10/train/cat")],
                 "val_count": 4, "crop": 32, "batch_size": 8, "max_train_images": 200},
        "steps": 8, "warmup_steps": 2, "lr": 1e-3, "seed": 1, "threads": 1, "checkpoint_every": 4, "val_every": 4,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def _write(tmp_path: Path, data: dict, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def trained(shared: Path, tmp_path_factory) -> dict[str, Path]:
    """A tiny direct codec and a tiny feature codec for cifar10-vgg cut at block2 (a few seconds each)."""
    root = tmp_path_factory.mktemp("task_codecs")
    out = {}
    for kind, extra in (("direct", {}), ("feature", {"distill": "block3", "distortion": "mse",
                                                     "arch": {"N": 16, "M": 24, "down": 1}})):
        data = _config(shared, root / kind, kind=kind, **extra)
        assert main(["train", str(_write(root, data, f"{kind}.yaml")), "--quiet"]) == 0
        out[kind] = root / kind / "model.pt"
    return out


# -- split points --------------------------------------------------------------------------
def test_yolo_cut_front_mid_and_back_agree_with_the_whole_model(yolo, kodim23) -> None:
    adapter = split_adapter(yolo, "layer.4")
    x = adapter.input_tensor(kodim23[:200, :300])
    y1 = adapter.front(x)
    assert y1.shape[1] == 64 and x.shape[-1] // y1.shape[-1] == 8
    assert [tuple(t.shape[1:2]) for t in adapter.mid(y1, "output")] == [(255,), (255,), (255,)]
    assert adapter.mid(y1, "layer.9")[0].shape[1] == 256
    with torch.no_grad():
        assert torch.equal(adapter.mid(y1, "layer.6")[0], yolo.network().forward_to(x, 6)[6])
    whole = yolo.predict(kodim23[:200, :300])
    split = yolo.run_from("layer.4", adapter.to_value(y1, (200, 300)))
    np.testing.assert_allclose(split.boxes, whole.boxes, atol=1e-3)


def test_a_cut_that_needs_more_tensors_is_refused_naming_them(yolo) -> None:
    with pytest.raises(TaskModelError, match=r"needs the outputs of layers \[4, 6\]"):
        split_adapter(yolo, "backbone")


def test_unknown_layer_names_list_the_nearest_valid_ones(yolo, cifar) -> None:
    with pytest.raises(TaskModelError, match="block2"):
        split_adapter(cifar, "blok2")
    with pytest.raises(TaskModelError, match="layer.<k>"):
        split_adapter(yolo, "layer.99")
    with pytest.raises(TaskModelError, match=r"nearest: \['layer.9'"):
        split_adapter(yolo, "layer.4").check_distillation_point("layer.9x")


def test_distillation_point_before_the_cut_is_refused(cifar, shared: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskModelError, match="'block1' comes before the cut 'block2'"):
        split_adapter(cifar, "block2").check_distillation_point("block1")
    data = _config(shared, tmp_path / "o", kind="direct", distill="block1", distortion="mse")
    assert main(["train", str(_write(tmp_path, data)), "--quiet"]) == 2


def test_torchvision_models_split_with_feature_extraction_nodes(tmp_path: Path, small_crop) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = get_task_model("torchvision-classification", architecture="resnet18", weights="IMAGENET1K_V1",
                           checkpoint=str(path))
    y1 = model.front("layer2", small_crop)
    assert tuple(y1.tensor.shape) == (1, 128, 28, 28)
    np.testing.assert_allclose(model.run_from("layer2", y1).probs, model.predict(small_crop).probs, atol=1e-5)
    adapter = split_adapter(model, "layer2")
    y1 = y1.tensor
    assert adapter.mid(y1, "layer3")[0].shape[1] == 256 and adapter.mid(y1, "output")[0].shape == (1, 1000)
    with pytest.raises(TaskModelError, match="maxpool"):  # inside a residual block: the skip tensor is named
        model.front("layer1.0.conv1", small_crop)
    with pytest.raises(TaskModelError, match="nearest clean cut points"):
        model.front("layer9", small_crop)


# -- training --------------------------------------------------------------------------------
def test_training_writes_a_bound_export_and_codec_entry(trained: dict[str, Path]) -> None:
    for kind, path in trained.items():
        result = json.loads((path.parent / "result.json").read_text())
        assert result["steps"] == 8 and result["val"]["bpp"] > 0 and np.isfinite(result["val"]["distortion"])
        assert result["codec"] == {"direct": "direct", "feature": "feature-learned"}[kind]
        export = torch.load(path, weights_only=True)
        assert export["binding"]["task_model"] == "cifar10-vgg" and export["binding"]["cut"] == "block2"
        assert len(export["binding"]["weights"]) == 64  # the classifier's SHA-256
        entry = yaml.safe_load((path.parent / "codec.yaml").read_text())
        assert entry["name"] == result["codec"] and entry["checkpoint"] == str(path)
    assert "top1_agreement" in json.loads((trained["direct"].parent / "result.json").read_text())["val"]


@pytest.mark.slow
def test_training_is_reproducible_and_resumes_exactly_after_a_kill_9(shared: Path, tmp_path: Path,
                                                                     kill_once_saved) -> None:
    """A real ``kill -9`` of ``vcm train`` (direct codec) once it has saved a checkpoint, then a resume."""
    data = _config(shared, tmp_path / "b", kind="direct", steps=24, checkpoint_every=2, val_every=12)
    config = TaskCodecTrainConfig(**data)
    task_codec.train(config, "direct", tmp_path / "a")
    straight = load_checkpoint(tmp_path / "a" / "last.pt")["model"]

    last = tmp_path / "b" / "last.pt"
    cmd = [sys.executable, "-m", "vcm_plugin", "train", str(_write(tmp_path, data)), "--quiet"]
    kill_once_saved(cmd, last)
    step = load_checkpoint(last)["step"]
    assert 2 <= step < 24 and not (tmp_path / "b" / "result.json").exists()  # killed in the middle of the run
    task_codec.train(config, "direct", tmp_path / "b")
    resumed = load_checkpoint(last)["model"]
    assert load_checkpoint(last)["step"] == 24
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shared: Path, tmp_path: Path, monkeypatch) -> None:
    config = TaskCodecTrainConfig(**_config(shared, tmp_path / "n", steps=8))
    real, calls = task_codec.distortion, {"n": 0}

    def nan_at_six(*args, **kwargs):
        value = real(*args, **kwargs)
        if kwargs.get("teacher") is None and args[3].requires_grad:
            calls["n"] += 1
            if calls["n"] == 6:
                return value * float("nan")
        return value

    monkeypatch.setattr(task_codec, "distortion", nan_at_six)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 6 .*\(step 4\)"):
        task_codec.train(config, "direct", tmp_path / "n")
    assert load_checkpoint(tmp_path / "n" / "last.pt")["step"] == 4


def test_bad_training_data_is_named(shared: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = TaskCodecTrainConfig(**_config(shared, tmp_path / "e", data={"train": [str(empty)]}))
    with pytest.raises(TrainingError, match="empty.* contains no images"):
        task_codec.train(config, "direct", tmp_path / "e")
    config = TaskCodecTrainConfig(**_config(shared, tmp_path / "s", data={"crop": 48}))
    with pytest.raises(TrainingError, match=r"is 32x32 pixels, smaller than the 48-pixel crop"):
        task_codec.train(config, "direct", tmp_path / "s")
    with pytest.raises(TrainingError, match="'kl' compares class posteriors"):
        task_codec.train(TaskCodecTrainConfig(**_config(shared, tmp_path / "k", distill="block3")), "direct",
                         tmp_path / "k")


# -- codecs in the harness -------------------------------------------------------------------
@pytest.mark.parametrize("kind,codec_name", [("direct", "direct"), ("feature", "feature-learned")])
def test_codec_round_trip_scores_at_the_cut_with_an_honest_rate(trained, cifar, cifar_images, kind,
                                                                codec_name) -> None:
    codec = get_codec(codec_name, task_model="cifar10-vgg", cut="block2", checkpoint=str(trained[kind]))
    assert codec.output_point == "block2"
    codec.check_ready(1)
    for image in cifar_images[:3]:
        stream = codec.encode(image, 1)
        assert stream.bpp == pytest.approx(8 * len(stream.data) / (32 * 32))
        value = codec.decode(stream)
        assert tuple(value.tensor.shape) == (1, 64, 8, 8)
        assert cifar.run_from("block2", value).probs.sum() == pytest.approx(1, abs=1e-4)
        assert torch.equal(codec.decode(stream).tensor, value.tensor)  # deterministic decoder
        assert decoded_sha256(codec.decode(stream)) == decoded_sha256(value)  # what `vcm verify` compares
        assert stream.estimated_bits is not None and 0 < stream.estimated_bits < 10 * stream.num_bits  # not the rate


def test_checkpoint_for_another_cut_model_or_paradigm_is_refused(trained) -> None:
    with pytest.raises(TaskCodecCheckpointError, match="cut 'block2', but the codec is configured for .* 'block3'"):
        get_codec("direct", task_model="cifar10-vgg", cut="block3", checkpoint=str(trained["direct"])).check_ready(1)
    with pytest.raises(TaskCodecCheckpointError, match="is a 'feature' codec export"):
        get_codec("direct", task_model="cifar10-vgg", cut="block2", checkpoint=str(trained["feature"])).check_ready(1)


def test_corrupt_or_truncated_checkpoint_is_named(trained, tmp_path: Path) -> None:
    cut_short = tmp_path / "short.pt"
    cut_short.write_bytes(trained["direct"].read_bytes()[:3000])
    codec = get_codec("direct", task_model="cifar10-vgg", cut="block2", checkpoint=str(cut_short))
    with pytest.raises(TaskCodecCheckpointError, match="short.pt.*corrupt, truncated"):
        codec.check_ready(1)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(TaskCodecCheckpointError, match="not a task codec export"):
        get_codec("direct", task_model="cifar10-vgg", cut="block2", checkpoint=str(other)).check_ready(1)


def test_a_feature_bitstream_fed_to_the_wrong_model_is_refused(trained, cifar_images, tmp_path: Path,
                                                              shared: Path) -> None:
    codec = get_codec("feature-learned", task_model="cifar10-vgg", cut="block2", checkpoint=str(trained["feature"]))
    stream = codec.encode(cifar_images[0], 1)
    data = _config(shared, tmp_path / "f2", kind="feature", distill="block3", distortion="mse", steps=2, seed=9,
                   arch={"N": 16, "M": 24, "down": 1})
    assert main(["train", str(_write(tmp_path, data)), "--quiet"]) == 0
    other = get_codec("feature-learned", task_model="cifar10-vgg", cut="block2",
                      checkpoint=str(tmp_path / "f2" / "model.pt"))
    with pytest.raises(BitstreamFormatError, match="made by another model"):
        other.decode(stream)
    with pytest.raises(DecodeError):  # an fcm-vvc stream is not this codec's
        codec.decode(dataclasses.replace(stream, codec="fcm-vvc"))
    with pytest.raises(BitstreamFormatError, match="truncated"):
        codec.decode(dataclasses.replace(stream, data=stream.data[:-2]))


@pytest.mark.slow
def test_vcm_run_reports_the_three_paradigms_in_one_table(trained, shared: Path, tmp_path: Path) -> None:
    config = {
        "name": "paradigms", "output": str(tmp_path / "run"),
        "dataset": {"name": "cifar10", "root": str(shared / "data/cifar10"), "split": "test", "max_images": 10},
        "tasks": {"classification": {"model": "cifar10-vgg"}},
        "codecs": {"jpeg": {"qualities": [5, 20, 50, 90]},
                   "direct-block2": {"codec": "direct", "task_model": "cifar10-vgg", "cut": "block2",
                                     "checkpoint": str(trained["direct"]), "qualities": [1]},
                   "feature-block2": {"codec": "feature-learned", "task_model": "cifar10-vgg", "cut": "block2",
                                      "checkpoint": str(trained["feature"]), "qualities": [1]}},
        "anchors": ["jpeg"],
    }
    assert main(["run", str(_write(tmp_path, config, "run.yaml")), "--jobs", "1"]) == 0
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert sum(r.split(",")[1] in ("direct-block2", "feature-block2") for r in rows) == 2 or \
        sum(("direct-block2" in r) or ("feature-block2" in r) for r in rows) == 2
    from vcm_plugin.results.store import ResultsStore

    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:  # the front's seconds, timed apart
        fronts = {(r.codec, r.front_s is None) for r in store.rows(with_predictions=False) if r.codec != "uncompressed"}
        assert all(0 < r.front_s < r.encode_s for r in store.rows(with_predictions=False)
                   if r.codec == "feature-block2")
    assert fronts == {("jpeg", True), ("direct-block2", True), ("feature-block2", False)}  # direct: no front


def test_front_decoder_starts_from_the_image_codec_and_the_task_models_front(shared: Path, tmp_path: Path,
                                                                             cifar, cifar_images) -> None:
    from vcm_plugin.learned.task_nets import TaskNetConfig, build_task_net
    from vcm_plugin.weights import load_state_dict_safely
    from vcm_plugin.zoo import zoo_entry, zoo_file

    adapter = split_adapter(cifar, "block2")
    net = build_task_net(TaskNetConfig("direct", 3, 64, 4, 2, 48, 96, decoder="front"), adapter.front_module())
    keys = task_codec.init_from_image_codec(net, "vcm-hyperprior-q1")
    zoo = load_state_dict_safely(zoo_file(zoo_entry("vcm-hyperprior-q1")))
    assert any(k.startswith("g_s.") for k in keys) and torch.equal(net.state_dict()["g_a.0.weight"],
                                                                   zoo["g_a.0.weight"].float())
    # the front copy is the task model's own front: an image through it gives exactly Y1
    x = adapter.input_tensor(cifar_images[0])
    with torch.no_grad():
        torch.testing.assert_close(net.front_copy(x), adapter.front(x))
    assert all(p.requires_grad for p in net.front_copy.parameters())
    assert not any(p.requires_grad for p in cifar.network().parameters())  # the task model stays frozen
    with pytest.raises(TrainingError, match="does not fit this codec's N=16"):
        task_codec.init_from_image_codec(
            build_task_net(TaskNetConfig("direct", 3, 64, 4, 2, 16, 24, decoder="front"), adapter.front_module()),
            "vcm-hyperprior-q1")

    data = _config(shared, tmp_path / "front", kind="direct", steps=4, arch={"N": 16, "M": 24, "down": 2,
                                                                             "decoder": "front"})
    assert main(["train", str(_write(tmp_path, data)), "--quiet"]) == 0
    codec = get_codec("direct", task_model="cifar10-vgg", cut="block2", checkpoint=str(tmp_path / "front/model.pt"))
    assert tuple(codec.decode(codec.encode(cifar_images[1], 1)).tensor.shape) == (1, 64, 8, 8)


def test_likelihood_bounds_survive_float16_exports_and_image_codec_starts(cifar, shared: Path, tmp_path: Path) -> None:
    """1e-9 stored as float16 is 0: a zero bound let a likelihood reach 0 (infinite rate) in training."""
    from vcm_plugin.learned.task_nets import TaskNetConfig, build_task_net

    net = build_task_net(TaskNetConfig("direct", 3, 64, 4, 2, 48, 96, decoder="front"),
                         split_adapter(cifar, "block2").front_module())
    task_codec.init_from_image_codec(net, "vcm-hyperprior-q1")  # a float16 zoo export
    bounds = {k: v for k, v in net.state_dict().items() if k.endswith("likelihood_lower_bound.bound")}
    assert len(bounds) == 2 and all(float(v) == pytest.approx(1e-9) for v in bounds.values())
    data = _config(shared, tmp_path / "h", kind="feature", distill="block3", distortion="mse", steps=2,
                   export_dtype="float16", arch={"N": 16, "M": 24, "down": 1})
    assert main(["train", str(_write(tmp_path, data)), "--quiet"]) == 0
    state = torch.load(tmp_path / "h" / "model.pt", weights_only=True)["state_dict"]
    assert state["g_a.0.weight"].dtype == torch.float16
    assert all(float(v) == pytest.approx(1e-9) for k, v in state.items() if k.endswith("likelihood_lower_bound.bound"))


def test_vcm_train_finds_the_trainer_from_the_configs_kind(tmp_path: Path, capsys) -> None:
    """`vcm train CONFIG`: every shipped training config names its kind; a config without one is refused."""
    from vcm_plugin.training import kind_of_config

    root = Path(__file__).resolve().parents[1] / "eval_configs" / "train"
    kinds = {p.name: kind_of_config(str(p)) for p in sorted(root.glob("*.yaml"))}
    assert kinds["vcm_hyperprior.yaml"] == "codec" and kinds["cifar10_vgg.yaml"] == "classifier"
    assert kinds["direct_yolov5n.yaml"] == "direct"
    plain = _write(tmp_path, {"output": "x"}, "nokind.yaml")
    assert main(["train", str(plain)]) == 2
    assert "no valid `kind` key" in capsys.readouterr().err
    assert main(["train", "direct"]) == 2


def test_torchvision_rcnn_splits_at_its_backbone_body(kodim23) -> None:
    """Faster R-CNN (random weights, small input): front + rest == the whole model; later cuts carry the FPN's inputs
    and are refused for learned codecs (one tensor)."""
    from vcm_plugin.tasks.split import CutValue

    model = get_task_model("torchvision-detection", architecture="fasterrcnn_resnet50_fpn", weights=None,
                           min_size=128, max_size=192)
    image = kodim23[100:220, 200:380]
    assert model.cut_points()[:2] == ["input", "body.conv1"] and "body.layer1" in model.cut_points()
    whole = model.predict(image)
    feats = model.front("body.layer1", image)
    assert isinstance(feats, CutValue) and list(feats.tensors) == ["layer1"] and feats.tensor.shape[1] == 256
    split = model.run_from("body.layer1", feats)
    assert len(split) == len(whole) > 0
    np.testing.assert_allclose(split.boxes, whole.boxes, atol=1e-2)
    assert list(model.front("body.layer3", image).tensors) == ["layer1", "layer2", "layer3"]
    with pytest.raises(TaskModelError, match=r"'body.layer3' carries 3 tensors \['layer1', 'layer2', 'layer3'\]"):
        split_adapter(model, "body.layer3")
    with pytest.raises(TaskModelError, match="nearest"):
        model.front("body.layer7", image)
    adapter = split_adapter(model, "body.layer1")
    y1 = adapter.front(adapter.input_tensor(image))
    torch.testing.assert_close(y1, feats.tensor, atol=1e-4, rtol=1e-4)
    assert adapter.mid(y1, "body.layer2")[0].shape[1] == 512 and len(adapter.mid(y1, "output")) == 5
    assert [t.shape for t in adapter.mid(y1, "fpn")] == [t.shape for t in model.front("fpn", image).tensors.values()]
    again = model.run_from("body.layer1", adapter.to_value(y1, image.shape[:2]))
    np.testing.assert_allclose(again.boxes, whole.boxes, atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("kind,codec_name", [("direct", "direct"), ("feature", "feature-learned")])
def test_check_codec_passes_for_the_trained_task_codecs(trained, kind, codec_name) -> None:
    """`vcm check-codec` on the two built-in codecs that need a trained checkpoint (tests/test_check_codec.py
    covers the others)."""
    from vcm_plugin.conformance import check_codec

    report = check_codec(codec_name, {"task_model": "cifar10-vgg", "cut": "block2",
                                      "checkpoint": str(trained[kind])}, max_images=1, qualities=2)
    assert report.passed, [(c.check, c.detail) for c in report.failed]
    rate = report.result("rate monotone")  # one checkpoint for every index: one trained point
    assert rate.status == "n/a" and "loads the same weights" in rate.detail


# -- direct coding that starts as the split codec; training device ------------------------------
def test_encoder_front_direct_codec_is_the_split_codec_while_its_front_is_frozen(shared: Path, tmp_path: Path,
                                                                                 cifar, cifar_images) -> None:
    """``arch.encoder: front``: a front copy + the feature codec's analysis. With the same seed and the front
    frozen for every step it trains exactly as the feature codec (same weights, same bitstreams); unfrozen,
    the front copy moves away from the task model's front (which itself stays frozen)."""
    feature = _config(shared, tmp_path / "feature", kind="feature", arch={"N": 16, "M": 24, "down": 1}, steps=6)
    frozen = _config(shared, tmp_path / "frozen", kind="direct", arch={"N": 16, "M": 24, "down": 3, "encoder": "front"},
                     steps=6, front_frozen_steps=6)
    thawed = {**frozen, "output": str(tmp_path / "thawed"), "front_frozen_steps": 3}
    for data, name in ((feature, "feature"), (frozen, "frozen"), (thawed, "thawed")):
        assert main(["train", str(_write(tmp_path, data, f"{name}.yaml")), "--quiet"]) == 0
    exports = {n: torch.load(tmp_path / n / "model.pt", weights_only=True) for n in ("feature", "frozen", "thawed")}
    assert exports["frozen"]["net"]["encoder"] == "front" and exports["frozen"]["paradigm"] == "direct"
    ours = exports["frozen"]["state_dict"]
    split = exports["feature"]["state_dict"]
    assert set(split) == {k for k in ours if not k.startswith("front_encoder.")}
    for key, value in split.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=key)
    front = split_adapter(cifar, "block2").front_module().state_dict()
    assert all(torch.equal(ours[f"front_encoder.{k}"], v) for k, v in front.items())  # never trained
    moved = exports["thawed"]["state_dict"]
    assert any(not torch.equal(moved[f"front_encoder.{k}"], v) for k, v in front.items() if v.is_floating_point())
    assert not any(p.requires_grad for p in cifar.network().parameters())
    # in the harness: the direct codec (image in) makes the feature codec's strings for the same image
    direct = get_codec("direct", task_model="cifar10-vgg", cut="block2", checkpoint=str(tmp_path / "frozen/model.pt"))
    split_codec = get_codec("feature-learned", task_model="cifar10-vgg", cut="block2",
                            checkpoint=str(tmp_path / "feature/model.pt"))
    for image in cifar_images[:3]:
        a, b = direct.encode(image, 1), split_codec.encode(image, 1)
        assert a.data[6:] == b.data[6:]  # after version, paradigm and the 4-byte checkpoint tag
        assert tuple(direct.decode(a).tensor.shape) == (1, 64, 8, 8)
    result = json.loads((tmp_path / "frozen" / "result.json").read_text())
    assert result["device"] == "cpu"  # the default
    assert result["val"]["bpp"] == pytest.approx(json.loads((tmp_path / "feature" / "result.json").read_text())
                                                 ["val"]["bpp"])


def test_encoder_front_takes_a_plain_decoder_and_is_for_direct_coding(shared: Path, tmp_path: Path) -> None:
    for kind, arch, match in (("direct", {"encoder": "front", "decoder": "front"}, "takes arch.decoder: 'plain'"),
                              ("direct", {"encoder": "front", "down": 2}, "must exceed the cut's 2"),
                              ("feature", {"encoder": "front", "down": 1}, "'front' is for direct coding")):
        config = TaskCodecTrainConfig(**_config(shared, tmp_path / kind, arch=arch))
        with pytest.raises(TrainingError, match=match):
            task_codec.train(config, kind, tmp_path / kind)


def test_training_device_resolves_and_the_device_front_is_the_adapters_front(cifar, cifar_images) -> None:
    from vcm_plugin.training.codec import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="torch sees 0 CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        TaskCodecTrainConfig(**{**_config(Path("/x"), Path("/y")), "device": "gpu"})
    # the copy a CUDA run uses computes exactly what SplitAdapter.front does (here on the CPU)
    adapter = split_adapter(get_task_model("cifar10-vgg"), "block2")
    front = task_codec.device_front(adapter, "cpu", copy=True)
    x = torch.cat([adapter.input_tensor(im) for im in cifar_images[:4]])
    assert torch.equal(front(x), split_adapter(cifar, "block2").front(x))
