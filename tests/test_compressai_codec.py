"""The ``compressai`` learned codec: real entropy-coded bitstreams, safe checkpoint loading, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcm_plugin import available_codecs, get_codec
from vcm_plugin.errors import BitstreamFormatError, DecodeError, QualityError, TaskModelError, WeightsNotFoundError
from vcm_plugin.learned.models import LearnedModelError, import_compressai
from vcm_plugin.learned.packing import LearnedPayload
from vcm_plugin.weights import NotWeightsOnlyError

import_compressai()
from compressai.models import FactorizedPrior, ScaleHyperprior  # noqa: E402


def _save(model, path, seed: int = 0):
    model.update(force=True)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two small random-weight ScaleHyperprior checkpoints (qualities 1 and 2) and a FactorizedPrior one."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    _save(ScaleHyperprior(16, 24), folder / "hp-q1.pt")
    torch.manual_seed(1)
    _save(ScaleHyperprior(16, 24), folder / "hp-q2.pt")
    _save(FactorizedPrior(16, 24), folder / "factorized.pt")
    return folder


@pytest.fixture(scope="module")
def codec(checkpoints):
    return get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(checkpoints / "hp-q{quality}.pt"))


def test_round_trip_counts_every_byte(codec, small_crop) -> None:
    bitstream = codec.encode(small_crop, 1)
    decoded = codec.decode(bitstream)
    assert decoded.shape == small_crop.shape and decoded.dtype == np.uint8
    payload = LearnedPayload.from_bytes(bitstream.data)
    assert (payload.height, payload.width) == small_crop.shape[:2]
    assert len(payload.strings) == 2  # y and z strings of a hyperprior model
    header = len(bitstream.data) - sum(len(s) for s in payload.strings)
    assert 8 <= header <= 24
    assert bitstream.bpp == 8 * len(bitstream.data) / (small_crop.shape[0] * small_crop.shape[1])
    assert codec.encode(small_crop, 1).data == bitstream.data  # deterministic on one machine


def test_quality_template_selects_one_checkpoint_per_quality(codec, small_crop) -> None:
    one, two = codec.encode(small_crop, 1), codec.encode(small_crop, 2)
    assert one.data != two.data
    assert codec.model_identity(1) != codec.model_identity(2)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (1001, 1), (70, 130)])
def test_sizes_below_the_downsampling_multiple_are_padded_and_cropped(codec, kodim23, size) -> None:
    image = np.ascontiguousarray(kodim23[: size[0], : size[1]])
    decoded = codec.decode(codec.encode(image, 1))
    assert decoded.shape == image.shape


def test_stream_of_another_model_is_refused(checkpoints, small_crop) -> None:
    q1 = get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(checkpoints / "hp-q1.pt"))
    other = get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(checkpoints / "hp-q2.pt"))
    with pytest.raises(BitstreamFormatError, match="model tag"):
        other.decode(q1.encode(small_crop, 1))


def test_truncated_or_padded_stream_is_refused(codec, small_crop) -> None:
    import dataclasses

    bitstream = codec.encode(small_crop, 1)
    for data in (bitstream.data[:-3], bitstream.data + b"\x00", bitstream.data[:5]):
        with pytest.raises((BitstreamFormatError, DecodeError), match="compressai"):
            codec.decode(dataclasses.replace(bitstream, data=data))


def test_checkpoint_of_another_architecture_lists_mismatched_keys(checkpoints, small_crop) -> None:
    codec = get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(checkpoints / "factorized.pt"))
    with pytest.raises(LearnedModelError, match=r"factorized\.pt.*not a 'bmshj2018-hyperprior'.*missing keys: .*h_a"):
        codec.encode(small_crop, 1)


def test_truncated_checkpoint_names_the_file(checkpoints, tmp_path, small_crop) -> None:
    bad = tmp_path / "cut.pt"
    bad.write_bytes((checkpoints / "hp-q1.pt").read_bytes()[:5000])
    with pytest.raises(TaskModelError, match="cut.pt"):
        get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(bad)).encode(small_crop, 1)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_checkpoint_is_refused(tmp_path, small_crop) -> None:
    bad = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, bad, pickle_protocol=2)
    with pytest.raises(NotWeightsOnlyError, match="pickled.pt"):
        get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(bad)).encode(small_crop, 1)


def test_zoo_model_offline_names_the_file_and_folders(tmp_path, monkeypatch, small_crop) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    codec = get_codec("compressai", model="bmshj2018-hyperprior", metric="mse")
    with pytest.raises(WeightsNotFoundError, match=r"bmshj2018-hyperprior-2-93677231\.pth\.tar(.|\n)*torch_home"):
        codec.encode(small_crop, 2)


def test_zoo_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch, small_crop) -> None:
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    _save(ScaleHyperprior(16, 24), hub / "bmshj2018-hyperprior-1-7eb97409.pth.tar")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(LearnedModelError, match="SHA-256"):
        get_codec("compressai", model="bmshj2018-hyperprior").encode(small_crop, 1)


def test_unknown_architecture_lists_valid_names(small_crop) -> None:
    with pytest.raises(LearnedModelError, match="mbt2018-mean"):
        get_codec("compressai", model="no-such-model").encode(small_crop, 1)


def test_bad_metric_is_rejected_at_construction() -> None:
    from vcm_plugin.errors import VcmError

    expected = "codec 'compressai': parameter 'metric': expected 'mse' or 'ms-ssim', got 'psnr'"
    with pytest.raises(VcmError, match=expected):
        get_codec("compressai", metric="psnr")


def test_missing_library_is_listed_as_unavailable_with_install_hint(monkeypatch) -> None:
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "compressai")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "compressai"
                        else real_find_spec(name, *a))
    row = next(c for c in available_codecs() if c.name == "compressai")
    assert not row.availability and "pip install compressai" in row.availability.reason


def test_payload_rejects_a_wrong_version_and_garbage() -> None:
    good = LearnedPayload(b"abcd", 1, 10, 20, (1, 2), (b"xy", b"z")).to_bytes()
    assert LearnedPayload.from_bytes(good).strings == (b"xy", b"z")
    with pytest.raises(BitstreamFormatError, match="version"):
        LearnedPayload.from_bytes(b"\x07" + good[1:])
    with pytest.raises(BitstreamFormatError, match="truncated"):
        LearnedPayload.from_bytes(good[:-1])


def test_project_zoo_family_codes_kodak_at_four_rates(kodim23) -> None:
    from vcm_plugin.images.metrics import psnr_y
    from vcm_plugin.zoo import zoo_group

    qualities = sorted(zoo_group("vcm-hyperprior"))
    assert qualities == [1, 2, 3, 4]
    codec = get_codec("compressai")  # the default model is the project-zoo family
    crop = np.ascontiguousarray(kodim23[:256, :256])
    points = []
    for q in qualities:
        bitstream = codec.encode(crop, q)
        points.append((bitstream.bpp, psnr_y(crop, codec.decode(bitstream))))
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(points, points[1:])), points
    assert points[-1][1] > 28
    assert (codec.quality_range.minimum, codec.quality_range.maximum) == (1, 4)  # the family's, not the class's 1..8
    with pytest.raises(QualityError, match=r"quality 5 is outside 1\.\.4"):
        codec.encode(crop, 5)
