"""Honest rates on odd picture sizes: bits over the ORIGINAL pixels, never over the padded picture.

Codecs that pad (ffmpeg codecs to even sizes and 64x64, learned codecs to their downsampling
factor) must still divide by the original height x width: a 3x5 picture coded in 80 bits is
80 / 15 = 5.33 bpp, not 80 / (4 x 6) = 3.33. Checked on every registered image codec (a recorded
skip with the reason where one cannot run here), through ``Bitstream.bpp`` and through the
``results.csv`` rows of a harness run on an ImageNet-style folder of odd-sized images.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from vcm_plugin import available_codecs, get_codec, write_image
from vcm_plugin.codecs.base import Codec
from vcm_plugin.tasks.base import TaskModel
from vcm_plugin.tasks.predictions import ClassScores
from vcm_plugin.tasks.registry import register_task_model

SHAPES = [(3, 5), (1, 1), (5, 3), (17, 9)]
IMAGE_CODECS = {c.name: c for c in available_codecs(include_unavailable=True)
                if c.origin.startswith("vcm_plugin.") and c.output_point == "input"}
FAST_PARAMS = {"vvc": {"preset": "faster"}, "hevc": {"preset": "ultrafast"}}


def _codec(name: str) -> Codec:
    info = IMAGE_CODECS[name]
    if not info.availability:
        pytest.skip(f"codec {name!r} is not available here: {info.availability.reason}")
    return get_codec(name, **FAST_PARAMS.get(name, {}))


def _mid_quality(codec: Codec) -> Any:
    r = codec.quality_range
    mid = (r.minimum + r.maximum) / 2
    return int(mid) if r.integer else mid


def _images() -> dict[tuple[int, int], np.ndarray]:
    rng = np.random.default_rng(5)
    return {shape: rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES}


def test_every_registered_image_codec_is_listed() -> None:
    assert {"jpeg", "vvc", "hevc", "av1", "jxl", "webp", "compressai", "vtm"} <= set(IMAGE_CODECS)


@pytest.mark.parametrize("name", sorted(IMAGE_CODECS))
def test_bitstream_bpp_is_bits_over_original_pixels(name: str) -> None:
    codec = _codec(name)
    quality = _mid_quality(codec)
    for (h, w), image in _images().items():
        bitstream = codec.encode(image, quality)
        assert (bitstream.height, bitstream.width) == (h, w), (name, h, w)
        assert bitstream.num_pixels == h * w
        assert bitstream.num_bits == 8 * len(bitstream.data)
        assert bitstream.bpp == 8 * len(bitstream.data) / (h * w), (name, h, w)
        assert codec.decode(bitstream).shape == (h, w, 3)


@register_task_model
@dataclass
class ConstantClassifier(TaskModel):
    """Test task model: the same scores for every image (any size), so only the rates matter."""

    name: ClassVar[str] = "test-constant-classifier"
    task: ClassVar[str] = "classification"
    num_classes: int = 2

    def run_from(self, point: str, value: Any) -> ClassScores:
        return ClassScores(np.full(self.num_classes, 1.0 / self.num_classes, np.float32))


@pytest.mark.slow
def test_results_csv_bpp_of_odd_sized_images_counts_original_pixels(tmp_path: Path) -> None:
    from vcm_plugin.config import config_from_dict
    from vcm_plugin.pipeline.run import run

    images = _images()
    files = {}
    for i, (shape, image) in enumerate(images.items()):  # ImageNet-style class folders
        path = tmp_path / "data" / f"class{i % 2}" / f"img{shape[0]}x{shape[1]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, image)
        files[shape] = path
    codecs = {name: _codec_or_none(name) for name in sorted(IMAGE_CODECS)}
    codecs = {name: c for name, c in codecs.items() if c is not None}
    assert {"jpeg", "vvc"} <= set(codecs)
    config = config_from_dict({
        "name": "odd-sizes", "output": str(tmp_path / "run"),
        "dataset": {"name": "imagenet", "root": str(tmp_path / "data")},
        "tasks": {"classification": {"model": "test-constant-classifier"}},
        "codecs": {name: {"qualities": [_mid_quality(c)], **FAST_PARAMS.get(name, {})} for name, c in codecs.items()},
        "anchors": [], "jobs": 1,
    })
    with pytest.warns(UserWarning, match="class folders"):
        run(config, quiet=True)
    with open(tmp_path / "run" / "results.csv", newline="") as fh:
        rows = {r["codec"]: r for r in csv.DictReader(fh)}
    original_pixels = sum(h * w for h, w in SHAPES)  # 15 + 1 + 15 + 153 = 184
    assert original_pixels == 184
    for name, codec in codecs.items():
        row = rows[name]
        assert int(row["images"]) == len(SHAPES) and int(row["failed"]) == 0, row
        quality = _mid_quality(codec)
        bits = {shape: 8 * len(codec.encode(image, quality).data) for shape, image in images.items()}
        assert int(row["pixels"]) == original_pixels, name
        assert int(row["bits"]) == sum(bits.values()), name  # the same streams, coded again here
        assert float(row["bpp"]) == pytest.approx(sum(bits.values()) / original_pixels, abs=6e-7), name
        mean_bpp = np.mean([bits[(h, w)] / (h * w) for h, w in SHAPES])
        assert float(row["mean_bpp"]) == pytest.approx(mean_bpp, abs=6e-7), name


def _codec_or_none(name: str) -> Codec | None:
    info = IMAGE_CODECS[name]
    return get_codec(name, **FAST_PARAMS.get(name, {})) if info.availability else None
