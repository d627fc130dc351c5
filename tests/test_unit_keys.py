"""Result-store keys are complete and per image: every input of a unit recomputes it, nothing else does."""

from __future__ import annotations

import copy
import importlib
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import RunSummary, run
from vcm_plugin.sample import coco_annotations, coco_images_dir

# a codec defined in its own module file, as a plug-in's is: editing the file must recompute its units
CODEC_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vcm_plugin import Bitstream, Codec, QualityRange, register_codec


@register_codec
@dataclass
class KeyTestCodec(Codec):
    name: ClassVar[str] = "test-unit-keys"
    quality_range: ClassVar[QualityRange] = QualityRange("bits", 1, 8, higher_is_more_bits=True)

    def _encode(self, image: np.ndarray, quality: int) -> Bitstream:
        return self.make_bitstream((image >> (8 - quality)).astype(np.uint8).tobytes(), quality, image)

    def _decode(self, bitstream: Bitstream) -> np.ndarray:
        raw = np.frombuffer(bitstream.data, np.uint8).reshape(bitstream.height, bitstream.width, 3)
        return (raw << (8 - int(bitstream.quality))).astype(np.uint8)
'''


def _base(tmp: Path, output: Path) -> dict:
    """1 image of the embedded sample (COCO layout, annotations copied), reference + JPEG q50, small YOLOv5n."""
    return {
        "name": "keys", "output": str(output), "jobs": 1,
        "dataset": {"name": "coco", "images_dir": str(coco_images_dir()),
                    "annotations": str(tmp / "ann" / "instances.json"), "max_images": 1},
        "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n-copy.pt", "img_size": 256,
                                "search_path": [str(tmp / "weights")]}},
        "codecs": {"jpeg": {"qualities": [50]}},
        "anchors": ["jpeg"],
    }


def _edited_annotations(tmp: Path, image_rank: int) -> str:
    """A copy of the annotations with one box of the ``image_rank``-th image (by id) moved by a pixel."""
    data = json.loads((tmp / "ann" / "instances.json").read_text())
    image_id = sorted(img["id"] for img in data["images"])[image_rank]
    ann = next(a for a in data["annotations"] if a["image_id"] == image_id)
    ann["bbox"][0] += 1.0
    path = tmp / f"instances-edited-{image_rank}.json"
    path.write_text(json.dumps(data))
    return str(path)


def _modified_weights(tmp: Path) -> str:
    """A folder holding ``yolov5n-copy.pt`` with one more (ignored) zip member: same network, other bytes."""
    folder = tmp / "weights-modified"
    folder.mkdir(exist_ok=True)
    target = folder / "yolov5n-copy.pt"
    shutil.copy(tmp / "weights" / "yolov5n-copy.pt", target)
    with zipfile.ZipFile(target, "a") as archive:
        prefix = next(n for n in archive.namelist() if n.endswith("/data.pkl")).rsplit("/", 1)[0]
        archive.writestr(f"{prefix}/extra.txt", "a modified checkpoint")
    return str(folder)


def _change(case: str, config: dict, tmp: Path) -> dict:
    config = copy.deepcopy(config)
    detection, jpeg = config["tasks"]["detection"], config["codecs"]["jpeg"]
    if case == "task parameter":
        detection["conf_threshold"] = 0.25
    elif case == "task weights":  # same name and parameters, other file content (search_path is not identity)
        detection["search_path"] = [_modified_weights(tmp)]
    elif case == "own annotations":
        config["dataset"]["annotations"] = _edited_annotations(tmp, 0)
    elif case == "other image's annotations":
        config["dataset"]["annotations"] = _edited_annotations(tmp, 1)
    elif case == "scale":
        jpeg["scales"] = [0.5]
    elif case == "codec parameter":
        jpeg["subsampling"] = "4:4:4"
    elif case == "max_images 1 -> 2":
        config["dataset"]["max_images"] = 2
    return config


@pytest.fixture(scope="module")
def store(shared: Path, tmp_path_factory) -> tuple[Path, dict, RunSummary]:
    """One output folder and the summary of the base run in it."""
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "ann").mkdir()
    shutil.copy(coco_annotations(), tmp / "ann" / "instances.json")
    (tmp / "weights").mkdir()
    shutil.copy(shared / "weights" / "yolov5n.pt", tmp / "weights" / "yolov5n-copy.pt")
    config = _base(tmp, tmp / "out")
    summary = run(config_from_dict(config), quiet=True)
    assert (summary.units_total, summary.units_computed, summary.units_failed) == (2, 2, 0)
    return tmp, config, summary


# case -> (units cached, units computed) of a run in the base run's folder with that one change
CASES = {
    "unchanged": (2, 0),
    "task parameter": (0, 2),
    "task weights": (0, 2),
    "own annotations": (0, 2),
    "other image's annotations": (2, 0),  # the whole-file hash must not be in an image's key
    "scale": (1, 1),  # the reference point has no scale
    "codec parameter": (1, 1),
    "max_images 1 -> 2": (2, 2),  # the first image's units are reused
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_change_recomputes_exactly_the_units_it_determines(store, case: str) -> None:
    tmp, base, _ = store
    summary = run(config_from_dict(_change(case, base, tmp)), quiet=True)
    assert (summary.units_cached, summary.units_computed) == CASES[case], case
    assert summary.units_failed == 0


@pytest.mark.slow
def test_editing_a_plugin_codec_module_recomputes_its_units(shared: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "vcm_keytest_codec.py"
    module.write_text(CODEC_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("vcm_keytest_codec")
    (tmp_path / "ann").mkdir()
    shutil.copy(coco_annotations(), tmp_path / "ann" / "instances.json")
    (tmp_path / "weights").mkdir()
    shutil.copy(shared / "weights" / "yolov5n.pt", tmp_path / "weights" / "yolov5n-copy.pt")
    config = _base(tmp_path, tmp_path / "out")
    config["codecs"] = {"test-unit-keys": {"qualities": [4]}, "jpeg": {"qualities": [50]}}

    first = run(config_from_dict(config), quiet=True)
    assert (first.units_computed, first.units_failed) == (3, 0)
    again = run(config_from_dict(config), quiet=True)
    assert (again.units_cached, again.units_computed) == (3, 0)
    module.write_text(CODEC_MODULE.replace("(8 - quality)", "(8 - int(quality))"))  # the plug-in is rebuilt
    edited = run(config_from_dict(config), quiet=True)
    assert (edited.units_cached, edited.units_computed) == (2, 1)  # only the plug-in codec's unit
    sys.modules.pop("vcm_keytest_codec", None)


def test_default_codec_version_names_distribution_and_source() -> None:
    from vcm_plugin import __version__
    from vcm_plugin.codecs.base import distribution_of, source_sha256
    from vcm_plugin.codecs.registry import get_codec

    version = get_codec("jpeg").version()
    assert f"[vcm-plugin {__version__}]" in version
    assert source_sha256("vcm_plugin.codecs.jpeg")[:16] in version
    assert re.fullmatch(r"numpy \S+", distribution_of("numpy.linalg"))


def test_jpeg_version_holds_the_library_version() -> None:
    from PIL import __version__ as pillow
    from PIL import features

    from vcm_plugin.codecs.registry import get_codec

    version = get_codec("jpeg").version()
    assert f"Pillow {pillow}" in version
    assert f"libjpeg-turbo {features.version('libjpeg_turbo')}" in version


@pytest.mark.parametrize("codec, params, library", [
    ("vvc", {}, r"libvvenc \d+\.\d+"),
    ("hevc", {}, r"libx265 \d+\.\d+"),
    ("av1", {}, r"libaom-av1 v\d+\.\d+"),
    ("av1", {"encoder": "libsvtav1"}, r"libsvtav1 v?\d+\.\d+"),
    ("jxl", {}, r"libjxl \S+"),
    ("webp", {}, r"libwebp \S+"),
])
def test_ffmpeg_codec_version_holds_build_and_library_versions(codec: str, params: dict, library: str) -> None:
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.ffmpeg import ffmpeg_build

    instance = get_codec(codec, **params)
    if not instance.is_available():
        pytest.skip(f"{codec}: {instance.is_available().reason}")
    version = instance.version()
    build = ffmpeg_build(instance.executable())
    assert build.startswith("ffmpeg version ") and build in version
    assert re.search(library, version), version
