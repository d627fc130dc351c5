"""Model splitting in the harness: the FCM-style `fcm-vvc` feature codec decodes to a cut point."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin import get_codec
from vcm_plugin.config import config_from_dict
from vcm_plugin.errors import BitstreamFormatError, DecodeError
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


@pytest.mark.slow
def test_feature_and_image_codecs_share_one_bd_table(shared: Path, tmp_path: Path) -> None:
    config = config_from_dict({
        "name": "split", "output": str(tmp_path / "out"), "jobs": 1,
        "dataset": {"name": "sample", "max_images": 2},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
        "weights": {"search_path": [str(shared / "weights")]},
        "codecs": {"jpeg": {"qualities": [10, 30, 50, 90]},
                   "fcm": {"codec": "fcm-vvc", "task_model": "yolov5", "task_params": {"weights": "yolov5n.pt"},
                           "cut": "backbone", "preset": "faster", "qualities": [42, 37]}},
        "anchors": ["jpeg"],
    })
    summary = run(config, quiet=True)
    assert summary.units_failed == 0
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["codec"] == "fcm"]
    assert len(rows) == 2 and all(float(r["bpp"]) > 0 and float(r["bbox/AP"]) > 0 for r in rows)
    assert all(r["psnr_y"] == "" for r in rows)  # no picture to compare
