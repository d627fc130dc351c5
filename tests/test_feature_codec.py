"""Model splitting in the harness: the FCM-style `fcm-vvc` feature codec decodes to a cut point."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin import get_codec
from vcm_plugin.config import config_from_dict
from vcm_plugin.errors import BitstreamFormatError, DecodeError, VcmError
from vcm_plugin.pipeline.run import run


@pytest.fixture(scope="module")
def cifar_image(shared: Path) -> np.ndarray:
    from vcm_plugin.images.io import read_image

    return read_image(sorted((shared / "data/cifar10/test/cat").glob("*.png"))[0])


def test_fcm_vvc_decodes_to_the_cut_tensor(cifar_image) -> None:
    codec = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster")
    assert codec.output_point == "block2"
    model = codec.model()
    reference = model.front("block2", cifar_image).tensor
    fine, coarse = codec.encode(cifar_image, 12), codec.encode(cifar_image, 42)
    assert coarse.num_bits < fine.num_bits and fine.bpp == fine.num_bits / (32 * 32)  # over INPUT pixels
    decoded = codec.decode(fine)
    assert tuple(decoded.tensor.shape) == tuple(reference.shape)
    error = float((decoded.tensor - reference).abs().max())
    assert error < 0.05 * float(reference.abs().max())
    assert model.run_from("block2", decoded).probs.argmax() == model.predict(cifar_image).probs.argmax()
    for data in (fine.data[:-5], b"\x07" + fine.data[1:]):
        with pytest.raises((DecodeError, BitstreamFormatError), match="fcm-vvc"):
            codec.decode(dataclasses.replace(fine, data=data))


def test_fcm_vvc_ctc_mode_packs_one_frame_and_keeps_the_sizes_out_of_the_rate(cifar_image) -> None:
    """Mode 'ctc' (the FCM anchor): one frame over a global range, the stream is the VVC picture alone, the tensor
    names and sizes are side information; a header that disagrees with the cut or the frame is refused."""
    from vcm_plugin.codecs.base import Bitstream
    from vcm_plugin.varint import encode_varint

    with pytest.raises(VcmError, match=r"mode 'ctc' needs value_range: \[low, high\]"):
        get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", mode="ctc")
    full = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster")
    reference = full.model().front("block2", cifar_image).tensor
    low, high = float(reference.min()), float(reference.max())
    codec = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster", mode="ctc",
                      value_range=[low, high])
    bitstream, whole = codec.encode(cifar_image, 12), full.encode(cifar_image, 12)
    assert bitstream.side_info and bitstream.data[:4] == b"\x00\x00\x00\x01"  # a VVC Annex-B stream, no header
    assert bitstream.num_bits == 8 * len(bitstream.data) and bitstream.side_info_bits == 8 * len(bitstream.side_info)
    assert whole.side_info == b"" and bitstream.params["mode"] == "ctc"
    decoded = codec.decode(Bitstream.from_bytes(bitstream.to_bytes()))  # side info travels in the .vcmb file
    assert float((decoded.tensor - reference).abs().max()) < 0.05 * (high - low)
    with pytest.raises(BitstreamFormatError, match="no(ne)?|side information"):
        codec.decode(dataclasses.replace(bitstream, side_info=b""))
    with pytest.raises(BitstreamFormatError, match="mode 'ctc'"):
        codec.decode(whole)
    name = next(iter(decoded.tensors)).encode()
    renamed = bitstream.side_info.replace(encode_varint(len(name)) + name, b"\x04wxyz", 1)
    with pytest.raises(BitstreamFormatError, match=r"packs tensors \['wxyz'\].*cut point 'block2'"):
        codec.decode(dataclasses.replace(bitstream, side_info=renamed))
    channels = int(reference.shape[1])
    resized = bitstream.side_info.replace(name + encode_varint(channels), name + encode_varint(channels * 4), 1)
    with pytest.raises(BitstreamFormatError, match="does not hold the .* packing"):
        codec.decode(dataclasses.replace(bitstream, side_info=resized))


@pytest.mark.slow
def test_feature_and_image_codecs_share_one_bd_table(shared: Path, tmp_path: Path) -> None:
    config = config_from_dict({
        "name": "split", "output": str(tmp_path / "out"), "jobs": 1,
        "dataset": {"name": "sample", "max_images": 2},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [10, 30, 50, 90]},
                   "fcm": {"codec": "fcm-vvc", "task_model": "yolov5", "task_params": {"weights": "yolov5n.pt"},
                           "cut": "backbone", "preset": "faster", "qualities": [42, 37]},
                   "fcm-ctc": {"codec": "fcm-vvc", "task_model": "yolov5", "task_params": {"weights": "yolov5n.pt"},
                               "cut": "backbone", "preset": "faster", "mode": "ctc", "value_range": [-0.3, 12.0],
                               "qualities": [42, 37]}},
        "anchors": ["jpeg"], "report": {"formats": ["default", "cttc"]},
    })
    summary = run(config, quiet=True)
    assert summary.units_failed == 0
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    fcm = [r for r in rows if r["codec"] == "fcm"]
    assert len(fcm) == 2 and all(float(r["bpp"]) > 0 and float(r["bbox/AP"]) > 0 for r in fcm)
    assert all(r["psnr_y"] == "" for r in fcm)  # no picture to compare
    assert {r["rate_mode"] for r in fcm} == {"full"} and {r["side_info_bits"] for r in fcm} == {"0"}
    ctc = [r for r in rows if r["codec"] == "fcm-ctc"]
    assert {r["rate_mode"] for r in ctc} == {"side-info-out-of-rate"} and all(int(r["side_info_bits"]) > 0 for r in ctc)
    assert all(float(c["bpp"]) < float(f["bpp"]) for c, f in zip(ctc, fcm))  # the header is out of the rate
    assert "rate excludes" in (tmp_path / "out" / "bd_rate.md").read_text()
    # the CTTC template: the front (nn_part_1) measured apart from the codec's encode, which excludes it
    with open(tmp_path / "out" / "cttc" / "detection_fcm.csv") as fh:
        cttc = list(csv.DictReader(fh))
    assert [r["qp"] for r in cttc] == ["37", "42"]
    for row, point in zip(cttc, sorted(fcm, key=lambda r: int(r["quality"]))):
        front, encode = float(row["nn_part_1"]), float(row["encode"])
        assert front > 0 and encode > 0 and float(row["feat_cov_plus_nn_part_1"]) == front
        assert float(row["encode_total"]) == pytest.approx(front + encode, abs=2e-4)
        assert float(row["encode_total"]) == pytest.approx(2 * float(point["encode_s_per_image"]), abs=2e-3)


def test_fcm_vvc_timeout_limits_each_frame_and_is_not_part_of_the_stream(cifar_image) -> None:
    """``timeout`` (seconds per ffmpeg call) reaches the frame coder: a big frame on a slow machine needs more than
    the 300 s default (OpenImages P2..P6 at QP 22 timed out under load); it is a machine parameter, so the
    stream's params (and the unit key) do not change with it."""
    from vcm_plugin.errors import EncodeError

    slow = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster", timeout=1e-4)
    with pytest.raises(EncodeError, match=r"timed out after 0\.0001 s \(a codec's `timeout` parameter"):
        slow.encode(cifar_image, 32)
    patient = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster", timeout=900)
    default = get_codec("fcm-vvc", task_model="cifar10-vgg", cut="block2", preset="faster")
    first, second = patient.encode(cifar_image, 32), default.encode(cifar_image, 32)
    assert first.data == second.data and first.params == second.params and "timeout" not in first.params
