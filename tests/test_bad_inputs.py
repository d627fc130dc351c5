"""Bad-input catalogue: every bad input vcm-plugin handles, across all modules, in one place.

Each case is one ``pytest.param`` id below. An error case asserts the SPECIFIC error class
and that ``str(error)`` names the offending input (file, image id, codec, curve, config key,
folder); a *handled* case (an unusual input that must work) asserts what comes out. The
narrower test files (test_images.py, test_codec_contract.py, test_bd.py, test_config.py,
test_weights.py, test_harness.py, ...) go deeper into each module; this file is the list.

Images (``read_image``, codec inputs)
-------------------------------------
handled, converted to (H, W, 3) uint8 RGB:
  `image-grayscale`, `image-rgba`, `image-16bit-gray`, `image-16bit-rgb`, `image-palette`, `image-cmyk`
handled, coded at their exact size by jpeg and vvc (preset faster):
  `size-1x1-jpeg`, `size-1x1-vvc`, `size-3x5-jpeg`, `size-3x5-vvc`, `size-1001x1-jpeg`, `size-1001x1-vvc`
ImageReadError naming the file:
  `image-zero-byte`, `image-text-named-png`, `image-truncated-png`, `image-truncated-jpeg`,
  `image-truncated-48bit-png`, `image-bomb-header`, `image-bomb-over-limit`, `image-bomb-low-limit`,
  `image-missing`, `image-directory`
InvalidImageError naming the codec (arrays given to ``Codec.encode``):
  `array-2d`, `array-4-channels`, `array-uint16`, `array-float`, `array-zero-size`, `array-not-numpy`

Bitstreams (every built-in codec that runs here: av1, compressai, hevc, jpeg, jxl, vvc, webp;
vtm when VTM is configured)
---------------------------------------------------------------------------------------------
DecodeError / BitstreamFormatError naming the codec, never a hang (64x48 crop):
  `bitstream-<codec>-truncated`, `bitstream-<codec>-bitflip` (a format without an integrity check
  may decode a flipped byte to a wrong picture of the right size: the ``.vcmb`` CRC-32 then
  catches it), `bitstream-<codec>-foreign-bytes`, `bitstream-<codec>-wrong-codec`,
  `bitstream-<codec>-empty`
``.vcmb`` files (BitstreamFormatError naming the file unless said otherwise):
  `vcmb-bad-magic`, `vcmb-wrong-version`, `vcmb-truncated`, `vcmb-padded`, `vcmb-crc-mismatch`,
  `vcmb-empty`, `vcmb-zero-size`, `vcmb-unknown-codec` (UnknownCodecError),
  `vcmb-size-mismatch` (DecodeError), `vcmb-cli-decode` (``vcm decode``: exit 2, one line)

Datasets and annotations (DatasetError naming the file and/or image id)
------------------------------------------------------------------------
  `coco-missing-image-file`, `coco-annotation-unknown-image-id`, `coco-annotation-unknown-category`,
  `coco-not-coco-json`, `coco-invalid-json`, `coco-missing-annotation-file`, `coco-unknown-image-ids`,
  `coco-zero-byte-image`, `coco-image-size-mismatch`, `imagenet-unknown-class-index`,
  `imagenet-unknown-wnid`, `imagenet-missing-image`, `cifar10-root-missing`, `cifar10-bad-split`,
  `openimages-missing-image`, `openimages-unannotated-id`, `dataset-unknown-name`

RD curves (BDRateError naming the curve)
----------------------------------------
  `rd-too-few-points`, `rd-non-monotonic`, `rd-disjoint`, `rd-little-overlap`, `rd-nan-metric`,
  `rd-inf-rate`, `rd-zero-rate`, `rd-negative-rate`, `rd-duplicate-rates`, `rd-length-mismatch`,
  `rd-not-numbers`, `rd-envelope-too-few`, `rd-csv-not-numbers`

Configs
-------
  `config-misspelled-key`, `config-misspelled-codec-param`, `config-wrong-type-qualities`,
  `config-wrong-type-jobs`, `config-unsafe-yaml-tag` (``!!python/object/apply`` refused, not run),
  `config-override-without-equals`, `config-override-unparsable`, `config-anchor-not-a-codec`,
  `config-missing-file`, `config-not-a-mapping`, `config-train-typo` (ConfigError);
  `config-unknown-codec` (UnknownCodecError), `config-unknown-task-model` (TaskModelError),
  `config-quality-out-of-range` (QualityError), `config-flag-not-bool` (ConfigError: codec parameter
  types are checked at load time)

Checkpoints and weights (for the yolov5 and cifar10-vgg task models and the compressai codec)
---------------------------------------------------------------------------------------------
  `ckpt-<model>-pickled` (NotWeightsOnlyError; yolov5's restricted unpickler: TaskModelError;
  the payload never runs), `ckpt-<model>-truncated`, `ckpt-<model>-text-file`,
  `ckpt-<model>-garbage-pickle`, `ckpt-<model>-other-model` (TaskModelError / LearnedModelError),
  `ckpt-<model>-missing` (WeightsNotFoundError); training states: `ckpt-training-pickled`,
  `ckpt-training-text-file`, `ckpt-training-not-a-state` (TrainingError)

Output folder and results store
-------------------------------
  `output-unwritable`, `output-is-a-file`, `output-full-disk-at-start` (RunError naming the folder),
  `output-full-disk-mid-run` (StoreError naming results.sqlite; the rows committed before are
  kept and the rerun computes only the rest), `output-full-disk-reports` (ReportError naming the
  file; the store is intact), `store-random-bytes`, `store-damaged-pages`, `store-is-a-directory`,
  `store-corrupt-under-run` (StoreError naming the file, which is left untouched)

Concurrency
-----------
  `concurrent-run-same-process`, `concurrent-run-other-process` (RunError naming the folder and the
  holder; nothing written)

The shared unit cache (``cache:``, ``vcm cache import``; test_unit_cache.py goes deeper)
-----------------------------------------------------------------------------------------
one warning naming the cache file and the cause, the run goes on without the cache and stores every unit:
  `cache-damaged-file` (left untouched), `cache-full-disk`, `cache-held-too-long` (another run's write
  lock), `cache-other-schema` (never misread), `cache-read-only-folder`
handled, both runs complete and share it: `cache-two-runs-at-once`
``vcm cache import RUN_DIR``: StoreError naming the run folder or its store, CacheError naming the cache file:
  `cache-import-not-a-run-folder`, `cache-import-other-schema`, `cache-import-damaged-store`,
  `cache-import-damaged-cache`

165 bad inputs: 40 per-codec bitstream cases (5 x 8 built-in codecs; vtm's skip where VTM is not
configured), 18 checkpoint cases (6 x 3 models) and 107 others, 13 of them handled inputs that must
work (the converted images, the tiny sizes and two runs sharing the unit cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from PIL import Image

from vcm_plugin import (
    BDRateError,
    Bitstream,
    BitstreamFormatError,
    DecodeError,
    ImageReadError,
    InvalidImageError,
    QualityError,
    UnknownCodecError,
    available_codecs,
    bd_rate,
    get_codec,
    read_image,
)
from vcm_plugin.codecs.base import Codec
from vcm_plugin.config import ConfigError, config_from_dict, load_config, load_model_config
from vcm_plugin.datasets import DatasetError, get_dataset
from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.learned.models import LearnedModelError
from vcm_plugin.pipeline.run import OutputLock, RunError, run
from vcm_plugin.reports.write import ReportError
from vcm_plugin.results import ResultsStore, StoreError, UnitRow
from vcm_plugin.results import cache as unit_cache
from vcm_plugin.results.cache import CACHE_FILE, CacheError, cache_entries, import_run
from vcm_plugin.sample import coco_annotations, coco_images_dir, kodak_images
from vcm_plugin.tasks.base import TaskModel
from vcm_plugin.tasks.predictions import Detections
from vcm_plugin.tasks.registry import get_task_model, register_task_model
from vcm_plugin.training.loop import TrainingError, load_checkpoint
from vcm_plugin.weights import NotWeightsOnlyError

ROOT = Path(__file__).resolve().parents[1]
RNG_SEED = 20260
DOCSTRING_COUNT = int(re.search(r"^(\d+) bad inputs", __doc__, re.MULTILINE).group(1))


def expect(error: type[BaseException], call: Callable[[], Any], *names: object) -> BaseException:
    """``call()`` raises ``error`` (or a subclass) whose message contains every one of ``names``."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for name in names:
        assert str(name) in message, f"{type(info.value).__name__} does not name {str(name)!r}: {message}"
    return info.value


def ids(params: list) -> list[str]:
    return [p.id for p in params]


@lru_cache(maxsize=1)
def kodim23() -> np.ndarray:
    return read_image(next(p for p in kodak_images() if p.name == "kodim23.png"))


def crop() -> np.ndarray:
    """64x48 of real content: small enough that every codec decodes it in well under a second."""
    return np.ascontiguousarray(kodim23()[200:248, 300:364])


def strip(height: int, width: int) -> np.ndarray:
    """A ``height`` x ``width`` piece of kodim23 (real content; tiled when larger than the picture)."""
    reps = (-(-height // 412) + 1, -(-width // 668) + 1, 1)
    return np.ascontiguousarray(np.tile(kodim23()[100:, 100:], reps)[:height, :width])


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` (and whose data is a few bytes): a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


# =====================================================================================
# Images
# =====================================================================================
def _gray(tmp: Path) -> tuple[Path, np.ndarray]:
    gray = np.random.default_rng(RNG_SEED).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp / "gray.png")
    return tmp / "gray.png", np.repeat(gray[..., None], 3, axis=2)


def _rgba(tmp: Path) -> tuple[Path, np.ndarray]:
    rgba = np.random.default_rng(RNG_SEED).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(np.arange(6) % 2, 255, 0)  # opaque and fully transparent columns
    Image.fromarray(rgba, "RGBA").save(tmp / "rgba.png")
    expected = np.where(rgba[..., 3:] == 255, rgba[..., :3], 255).astype(np.uint8)  # over WHITE
    return tmp / "rgba.png", expected


def _gray16(tmp: Path) -> tuple[Path, np.ndarray]:
    values = np.array([[0, 255, 386, 257 * 100, 65535]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp / "gray16.png"), values)
    return tmp / "gray16.png", np.repeat(np.rint(values / 257.0).astype(np.uint8)[..., None], 3, axis=2)


def _rgb16(tmp: Path) -> tuple[Path, np.ndarray]:
    rgb16 = np.random.default_rng(RNG_SEED).integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    assert cv2.imwrite(str(tmp / "rgb48.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    return tmp / "rgb48.png", np.rint(rgb16 / 257.0).astype(np.uint8)  # all 16 bits, not the high byte


def _palette(tmp: Path) -> tuple[Path, np.ndarray]:
    img = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 128, 0] + [0] * (256 * 3 - 9))
    img.save(tmp / "palette.png")
    colours = np.array([(255, 0, 0), (0, 0, 255), (0, 128, 0)], np.uint8)
    return tmp / "palette.png", colours[[[0, 1, 2], [2, 1, 0]]]


def _cmyk(tmp: Path) -> tuple[Path, np.ndarray]:
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(tmp / "cmyk.jpg", quality=95)
    with Image.open(tmp / "cmyk.jpg") as img:
        assert img.mode == "CMYK"
        return tmp / "cmyk.jpg", np.asarray(img.convert("RGB"))  # Pillow's conversion, documented


CONVERTED = [
    pytest.param(_gray, id="image-grayscale"),
    pytest.param(_rgba, id="image-rgba"),
    pytest.param(_gray16, id="image-16bit-gray"),
    pytest.param(_rgb16, id="image-16bit-rgb"),
    pytest.param(_palette, id="image-palette"),
    pytest.param(_cmyk, id="image-cmyk"),
]


@pytest.mark.parametrize("make", CONVERTED)
def test_unusual_images_are_converted_to_rgb(make, tmp_path: Path) -> None:
    path, expected = make(tmp_path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    np.testing.assert_array_equal(image, expected)


TINY = [pytest.param(shape, codec, id=f"size-{shape[1]}x{shape[0]}-{codec}")
        for shape in ((1, 1), (5, 3), (1, 1001)) for codec in ("jpeg", "vvc")]


@pytest.mark.parametrize("shape, codec_name", TINY)
def test_tiny_and_odd_sizes_keep_their_size(shape: tuple[int, int], codec_name: str) -> None:
    """Ids are WxH: 1x1, 3x5 (3 wide, 5 high) and 1001x1 (a one-pixel-high line)."""
    codec = get_codec(codec_name, **({"preset": "faster"} if codec_name == "vvc" else {}))
    image = strip(*shape)
    bitstream = codec.encode(image, 37 if codec_name == "vvc" else 75)
    assert (bitstream.height, bitstream.width) == shape
    decoded = codec.decode(bitstream)
    assert decoded.shape == (*shape, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 20


def _zero_byte(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    (tmp / "empty.png").write_bytes(b"")
    return tmp / "empty.png", "empty"


def _text_png(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    (tmp / "notes.png").write_text("this is not an image\n")
    return tmp / "notes.png", "not a recognised image"


def _truncated(suffix: str) -> Callable[[Path, pytest.MonkeyPatch], tuple[Path, str]]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
        path = tmp / f"truncated{suffix}"
        Image.fromarray(np.random.default_rng(RNG_SEED).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "truncated"
    return make


def _truncated_48bit(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    path = tmp / "rgb48_cut.png"
    assert cv2.imwrite(str(path), np.random.default_rng(RNG_SEED).integers(0, 65536, (64, 64, 3), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, "truncated"


def _bomb_header(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    # 50000 x 50000 = 2.5 G pixels: above twice Pillow's default limit, where Pillow itself raises
    assert Image.MAX_IMAGE_PIXELS is not None and 50000 * 50000 > 2 * Image.MAX_IMAGE_PIXELS
    return png_header_only(tmp / "bomb.png", 50000, 50000), "decompression bomb"


def _bomb_over_limit(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    # between the limit and twice it, where Pillow only WARNS: refused all the same
    limit = Image.MAX_IMAGE_PIXELS
    height = math.ceil(1.5 * limit / 10000)
    return png_header_only(tmp / "big.png", 10000, height), "decompression bomb"


def _bomb_low_limit(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    Image.new("RGB", (100, 100)).save(tmp / "hundred.png")
    mp.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # a user's lower limit is honoured too (10,000 px)
    return tmp / "hundred.png", "decompression bomb"


def _missing(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    return tmp / "nope.png", "no such file"


def _directory(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    (tmp / "folder.png").mkdir()
    return tmp / "folder.png", "directory"


UNREADABLE = [
    pytest.param(_zero_byte, id="image-zero-byte"),
    pytest.param(_text_png, id="image-text-named-png"),
    pytest.param(_truncated(".png"), id="image-truncated-png"),
    pytest.param(_truncated(".jpg"), id="image-truncated-jpeg"),
    pytest.param(_truncated_48bit, id="image-truncated-48bit-png"),
    pytest.param(_bomb_header, id="image-bomb-header"),
    pytest.param(_bomb_over_limit, id="image-bomb-over-limit"),
    pytest.param(_bomb_low_limit, id="image-bomb-low-limit"),
    pytest.param(_missing, id="image-missing"),
    pytest.param(_directory, id="image-directory"),
]


@pytest.mark.parametrize("make", UNREADABLE)
def test_unreadable_images_name_the_file(make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default_limit = Image.MAX_IMAGE_PIXELS
    path, reason = make(tmp_path, monkeypatch)
    expect(ImageReadError, lambda: read_image(path), path, reason)
    monkeypatch.undo()
    assert Image.MAX_IMAGE_PIXELS == default_limit  # Pillow's limit stays in force


BAD_ARRAYS = [
    pytest.param(np.zeros((8, 8), np.uint8), id="array-2d"),
    pytest.param(np.zeros((8, 8, 4), np.uint8), id="array-4-channels"),
    pytest.param(np.zeros((8, 8, 3), np.uint16), id="array-uint16"),
    pytest.param(np.zeros((8, 8, 3), np.float32), id="array-float"),
    pytest.param(np.zeros((0, 8, 3), np.uint8), id="array-zero-size"),
    pytest.param([[1, 2, 3]], id="array-not-numpy"),
]


@pytest.mark.parametrize("array", BAD_ARRAYS)
def test_bad_arrays_name_the_codec(array: Any) -> None:
    expect(InvalidImageError, lambda: get_codec("jpeg").encode(array, 50), "'jpeg'")


# =====================================================================================
# Bitstreams
# =====================================================================================
BUILTIN = sorted(c.name for c in available_codecs(include_unavailable=True)
                 if c.origin.startswith("vcm_plugin.") and c.output_point == "input")  # image codecs
AVAILABLE = {c.name for c in available_codecs(include_unavailable=False) if c.origin.startswith("vcm_plugin.")}
FAST = {"vvc": {"preset": "faster"}, "hevc": {"preset": "ultrafast"}, "av1": {"cpu_used": 8}, "jxl": {"effort": 3}}


def build_codec(name: str) -> Codec:
    """A fast configuration; ffmpeg-based codecs get a short timeout so a hang fails instead of stalling."""
    if name not in AVAILABLE:
        pytest.skip(f"codec {name!r} does not run here")
    params = dict(FAST.get(name, {}))
    if "timeout" in {f.name for f in dataclasses.fields(get_codec(name))}:
        params["timeout"] = 30.0
    return get_codec(name, **params)  # compressai: the default project-zoo model


def quality_for(codec: Codec) -> int | float:
    r = codec.quality_range
    mid = (r.minimum + r.maximum) / 2
    return int(mid) if r.integer else mid


@cache
def coded(name: str) -> tuple[Codec, Bitstream]:
    codec = build_codec(name)
    return codec, codec.encode(crop(), quality_for(codec))


def flip_middle(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    return bytes(damaged)


def foreign_bytes() -> bytes:
    """A small PNG file: bytes of no codec here."""
    buffer = io.BytesIO()
    Image.fromarray(crop()).save(buffer, format="PNG")
    return buffer.getvalue()


BITSTREAM_DAMAGE = ("truncated", "bitflip", "foreign-bytes", "wrong-codec", "empty")
BITSTREAMS = [pytest.param(name, damage, id=f"bitstream-{name}-{damage}")
              for name in BUILTIN for damage in BITSTREAM_DAMAGE]


@pytest.mark.parametrize("name, damage", BITSTREAMS)
def test_damaged_bitstreams_name_the_codec(name: str, damage: str) -> None:
    codec, bitstream = coded(name)
    quoted = f"'{name}'"
    if damage == "truncated":
        half = dataclasses.replace(bitstream, data=bitstream.data[:len(bitstream.data) // 2])
        expect(DecodeError, lambda: codec.decode(half), quoted)
    elif damage == "bitflip":
        damaged = dataclasses.replace(bitstream, data=flip_middle(bitstream.data))
        try:
            decoded = codec.decode(damaged)
        except DecodeError as exc:  # BitstreamFormatError is a DecodeError
            assert quoted in str(exc) and "timed out" not in str(exc), str(exc)
        else:  # no integrity check in this format (JPEG, WebP, VVC, learned): a wrong picture, right size
            assert decoded.shape == (*crop().shape[:2], 3)
        # the .vcmb file format catches the same flipped byte by its CRC-32, whatever the codec
        blob = bytearray(bitstream.to_bytes())
        offset = len(blob) - 4 - len(bitstream.data)  # the payload sits just before the CRC
        blob[offset + len(bitstream.data) // 2] ^= 0xFF
        expect(BitstreamFormatError, lambda: Bitstream.from_bytes(bytes(blob), source=f"{name}.vcmb"),
               f"{name}.vcmb", "CRC-32")
    elif damage == "foreign-bytes":
        expect(DecodeError, lambda: codec.decode(dataclasses.replace(bitstream, data=foreign_bytes())), quoted)
    elif damage == "wrong-codec":
        other = "webp" if name == "jpeg" else "jpeg"
        expect(DecodeError, lambda: get_codec(other).decode(bitstream), f"'{other}'", f"made by codec {quoted}")
    else:
        expect(DecodeError, lambda: codec.decode(dataclasses.replace(bitstream, data=b"")), quoted, "empty")


def _vcmb() -> bytes:
    return coded("jpeg")[1].to_bytes()


def _rewrap(blob: bytes, **fields: Any) -> bytes:
    """``blob`` with header fields changed and a VALID CRC (a well-formed file that lies)."""
    from vcm_plugin.codecs import base

    header = base._HEADER_V3
    magic, version, name_len, kind, quality, height, width, size, params_len, side_len = header.unpack_from(blob)
    assert version == 3
    name = blob[header.size: header.size + name_len]
    rest = blob[header.size + name_len: -4]
    params, side, data = rest[:params_len], rest[params_len: params_len + side_len], rest[params_len + side_len:]
    name = fields.get("codec", name)
    packed = header.pack(magic, version, len(name), kind, quality, fields.get("height", height),
                         fields.get("width", width), len(data), len(params), len(side))
    body = packed + name + params + side + data
    return body + struct.pack(">I", zlib.crc32(body))


VCMB = [
    pytest.param(lambda b: b"JUNK" + b[4:], BitstreamFormatError, "bad magic", id="vcmb-bad-magic"),
    pytest.param(lambda b: b[:5] + b"\x09" + b[6:], BitstreamFormatError, "version 9", id="vcmb-wrong-version"),
    pytest.param(lambda b: b[:-10], BitstreamFormatError, "truncated", id="vcmb-truncated"),
    pytest.param(lambda b: b + b"\x00", BitstreamFormatError, "padded", id="vcmb-padded"),
    pytest.param(lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], BitstreamFormatError, "CRC-32",
                 id="vcmb-crc-mismatch"),
    pytest.param(lambda b: b"", BitstreamFormatError, "too short", id="vcmb-empty"),
    pytest.param(lambda b: _rewrap(b, height=0), BitstreamFormatError, "not positive", id="vcmb-zero-size"),
    pytest.param(lambda b: _rewrap(b, codec=b"nosuch"), UnknownCodecError, "'nosuch'", id="vcmb-unknown-codec"),
    pytest.param(lambda b: _rewrap(b, height=100, width=100), DecodeError, "expected (100, 100, 3)",
                 id="vcmb-size-mismatch"),
]


@pytest.mark.parametrize("mangle, error, reason", VCMB)
def test_damaged_vcmb_files(mangle: Callable[[bytes], bytes], error: type[Exception], reason: str,
                            tmp_path: Path) -> None:
    path = tmp_path / "kodim23.vcmb"
    path.write_bytes(mangle(_vcmb()))

    def decode() -> None:
        bitstream = Bitstream.from_bytes(path.read_bytes(), source=str(path))
        get_codec(bitstream.codec).decode(bitstream)

    names = [reason] if error is not BitstreamFormatError else [path, reason]
    if error is DecodeError:
        names.append("'jpeg'")
    expect(error, decode, *names)


@pytest.mark.parametrize("case", [pytest.param(None, id="vcmb-cli-decode")])
def test_cli_decode_of_a_damaged_file_is_one_line(case: None, tmp_path: Path, capsys) -> None:
    from vcm_plugin.cli import main

    path = tmp_path / "damaged.vcmb"
    path.write_bytes(flip_middle(_vcmb()))
    assert main(["decode", str(path), str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "CRC-32" in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


# =====================================================================================
# Datasets and annotations
# =====================================================================================
def sample_copy(tmp: Path) -> tuple[Path, Path, dict]:
    """A writable copy of the embedded 6-image COCO sample: (images folder, annotation file, its JSON)."""
    images = tmp / "val"
    shutil.copytree(coco_images_dir(), images)
    data = json.loads(coco_annotations().read_text())
    return images, tmp / "instances.json", data


def _coco(tmp: Path, data: dict, images: Path, ann: Path, **kw: Any) -> Callable[[], Any]:
    ann.write_text(json.dumps(data))
    return lambda: get_dataset("coco", images_dir=images, annotations=ann, **kw)


def _coco_missing_file(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, data = sample_copy(tmp)
    (images / "000000119828.jpg").unlink()
    return _coco(tmp, data, images, ann), ["000000119828.jpg", "image id 119828"]


def _coco_unknown_image(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, data = sample_copy(tmp)
    data["annotations"][3]["image_id"] = 999999
    return _coco(tmp, data, images, ann), [ann, f"annotation {data['annotations'][3]['id']}", "image id 999999"]


def _coco_unknown_category(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, data = sample_copy(tmp)
    data["annotations"][5]["category_id"] = 4242
    return _coco(tmp, data, images, ann), [ann, f"annotation {data['annotations'][5]['id']}", "category id 4242"]


def _coco_not_coco(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, _ = sample_copy(tmp)
    return _coco(tmp, {"type": "captions", "items": []}, images, ann), [ann, "not COCO instances format"]


def _coco_invalid_json(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, _ = sample_copy(tmp)
    ann.write_text(coco_annotations().read_text()[:500])
    return lambda: get_dataset("coco", images_dir=images, annotations=ann), [ann, "not valid JSON"]


def _coco_missing_annotations(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    ann = tmp / "gone.json"
    return lambda: get_dataset("coco", images_dir=coco_images_dir(), annotations=ann), [ann, "does not exist"]


def _coco_unknown_ids(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    ids = tmp / "ids.txt"
    ids.write_text("119828\n123\n")
    call = lambda: get_dataset("coco", images_dir=coco_images_dir(), annotations=coco_annotations(),  # noqa: E731
                               image_ids=str(ids))
    return call, [ids, "[123]"]


def _coco_zero_byte_image(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, data = sample_copy(tmp)
    (images / "000000119828.jpg").write_bytes(b"")
    make = _coco(tmp, data, images, ann, image_ids=[119828])
    return lambda: make()[0].load(), ["image id 119828", "000000119828.jpg", "empty"]


def _coco_size_mismatch(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    images, ann, data = sample_copy(tmp)
    with Image.open(images / "000000119828.jpg") as img:
        img.resize((100, 80)).save(images / "000000119828.jpg")
    make = _coco(tmp, data, images, ann, image_ids=[119828])
    return lambda: make()[0].load(), ["image id 119828", "000000119828.jpg", "100x80", "500x375"]


def _imagenet(tmp: Path, shared: Callable[[], Path], row: str) -> tuple[Callable[[], Any], Path]:
    source = shared() / "data" / "imagenet"
    root = tmp / "imagenet"
    (root / "val").mkdir(parents=True)
    shutil.copy(source / "classes.csv", root / "classes.csv")
    good = source / "val" / "ILSVRC2012_val_00000355.JPEG"
    shutil.copy(good, root / "val" / good.name)
    (root / "labels.csv").write_text(f"file,wnid,class_index\nval/{good.name},n02112137,260\n{row}\n")
    return lambda: get_dataset("imagenet", root=root), root / "labels.csv"


def _imagenet_bad_index(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    call, labels = _imagenet(tmp, shared, "val/ILSVRC2012_val_00000363.JPEG,,1000")
    return call, [labels, "line 3", "class id 1000"]


def _imagenet_bad_wnid(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    call, labels = _imagenet(tmp, shared, "val/ILSVRC2012_val_00000363.JPEG,n00000042,")
    return call, [labels, "line 3", "'n00000042'"]


def _imagenet_missing_image(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    call, labels = _imagenet(tmp, shared, "val/ILSVRC2012_val_00000363.JPEG,n02011460,133")
    return call, [labels, "val/ILSVRC2012_val_00000363.JPEG"]


def _cifar_missing_root(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    return lambda: get_dataset("cifar10", root=tmp / "cifar-gone"), [tmp / "cifar-gone", "does not exist"]


def _cifar_bad_split(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    return lambda: get_dataset("cifar10", root=tmp, split="validation"), ["'validation'", "split"]


PRESENT_OID = ("0001eeaf4aed83f9", "000a1249af2bc5f0")


def _openimages(tmp: Path, shared: Callable[[], Path], listed: list[str],
                annotated: list[str]) -> tuple[Callable[[], Any], Path]:
    vcm = shared() / "data" / "openimages" / "mpeg-vcm"
    files = {"image_list": tmp / "list.lst", "boxes": tmp / "boxes.csv", "labels": tmp / "labels.csv",
             "labelmap": tmp / "selected_classes.txt"}
    files["image_list"].write_text("".join(f"{i}.jpg\n" for i in listed))
    for key, name in (("boxes", "detection_validation_5k_bbox.csv"), ("labels", "detection_validation_labels_5k.csv")):
        lines = (vcm / name).read_text().splitlines()
        files[key].write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in annotated]) + "\n")
    shutil.copy(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt", files["labelmap"])
    images = shared() / "data" / "openimages" / "images"
    return lambda: get_dataset("openimages", images_dir=images, **files), files["image_list"]


def _oid_missing_image(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    absent = "bef50424c62d12c5"  # listed in the MPEG VCM 5k list, not among the 3 images in ../shared
    call, listed = _openimages(tmp, shared, [*PRESENT_OID, absent], [*PRESENT_OID, absent])
    return call, [listed, f"{absent}.jpg"]


def _oid_unannotated(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    call, listed = _openimages(tmp, shared, [*PRESENT_OID, "ffffffffffffffff"], list(PRESENT_OID))
    return call, [listed, "ffffffffffffffff"]


def _unknown_dataset(tmp: Path, shared: Callable[[], Path]) -> tuple[Callable[[], Any], list]:
    return lambda: get_dataset("cocoo"), ["'cocoo'", "'coco'"]


DATASETS = [
    pytest.param(_coco_missing_file, id="coco-missing-image-file"),
    pytest.param(_coco_unknown_image, id="coco-annotation-unknown-image-id"),
    pytest.param(_coco_unknown_category, id="coco-annotation-unknown-category"),
    pytest.param(_coco_not_coco, id="coco-not-coco-json"),
    pytest.param(_coco_invalid_json, id="coco-invalid-json"),
    pytest.param(_coco_missing_annotations, id="coco-missing-annotation-file"),
    pytest.param(_coco_unknown_ids, id="coco-unknown-image-ids"),
    pytest.param(_coco_zero_byte_image, id="coco-zero-byte-image"),
    pytest.param(_coco_size_mismatch, id="coco-image-size-mismatch"),
    pytest.param(_imagenet_bad_index, id="imagenet-unknown-class-index"),
    pytest.param(_imagenet_bad_wnid, id="imagenet-unknown-wnid"),
    pytest.param(_imagenet_missing_image, id="imagenet-missing-image"),
    pytest.param(_cifar_missing_root, id="cifar10-root-missing"),
    pytest.param(_cifar_bad_split, id="cifar10-bad-split"),
    pytest.param(_oid_missing_image, id="openimages-missing-image"),
    pytest.param(_oid_unannotated, id="openimages-unannotated-id"),
    pytest.param(_unknown_dataset, id="dataset-unknown-name"),
]


@pytest.mark.parametrize("make", DATASETS)
def test_bad_datasets_name_the_file_and_image(make, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    call, names = make(tmp_path, lambda: request.getfixturevalue("shared"))
    expect(DatasetError, call, *names)


# =====================================================================================
# RD curves
# =====================================================================================
ANCHOR = ([0.1, 0.2, 0.4, 0.8], [30.0, 33.0, 36.0, 39.0])

RD = [
    pytest.param([0.1, 0.2, 0.4], [31.0, 34.0, 37.0], {}, ["has 3 points", "at least 4"], id="rd-too-few-points"),
    pytest.param([0.1, 0.2, 0.4, 0.8], [31.0, 35.0, 34.0, 38.0], {},
                 ["point 2 (rate=0.4, metric=34)", "point 1 (rate=0.2, metric=35)"], id="rd-non-monotonic"),
    pytest.param([0.1, 0.2, 0.4, 0.8], [50.0, 53.0, 56.0, 59.0], {}, ["'vvc'", "overlap by 0.0%"], id="rd-disjoint"),
    pytest.param([0.1, 0.2, 0.4, 0.8], [38.0, 39.5, 41.0, 42.0], {}, ["'vvc'", "overlap by"], id="rd-little-overlap"),
    pytest.param([0.1, 0.2, 0.4, 0.8], [31.0, float("nan"), 37.0, 39.0], {}, ["metric of point 1 is nan"],
                 id="rd-nan-metric"),
    pytest.param([0.1, 0.2, float("inf"), 0.8], [31.0, 34.0, 37.0, 39.0], {}, ["rate of point 2 is inf"],
                 id="rd-inf-rate"),
    pytest.param([0.0, 0.2, 0.4, 0.8], [31.0, 34.0, 37.0, 39.0], {}, ["rate of point 0 is 0.0"], id="rd-zero-rate"),
    pytest.param([0.1, -0.2, 0.4, 0.8], [31.0, 34.0, 37.0, 39.0], {}, ["rate of point 1 is -0.2"],
                 id="rd-negative-rate"),
    pytest.param([0.1, 0.2, 0.2, 0.8], [31.0, 34.0, 35.0, 39.0], {}, ["points 1 and 2 have the same rate"],
                 id="rd-duplicate-rates"),
    pytest.param([0.1, 0.2, 0.4, 0.8], [31.0, 34.0, 37.0], {}, ["4 rate values but 3 metric values"],
                 id="rd-length-mismatch"),
    pytest.param(["a", "b", "c", "d"], [31.0, 34.0, 37.0, 39.0], {}, ["rate values are not numbers"],
                 id="rd-not-numbers"),
    pytest.param([0.1, 0.2, 0.3, 0.4, 0.8], [31.0, 34.0, 33.0, 32.0, 38.0], {"non_monotonic": "envelope"},
                 ["only 3 points remain", "[2, 3]"], id="rd-envelope-too-few"),
]


@pytest.mark.parametrize("rate, metric, options, names", RD)
def test_bad_rd_curves_name_the_curve(rate: list, metric: list, options: dict, names: list[str]) -> None:
    expect(BDRateError, lambda: bd_rate(*ANCHOR, rate, metric, anchor_name="vvc", test_name="jpeg", **options),
           "'jpeg'", *names)


@pytest.mark.parametrize("case", [pytest.param(None, id="rd-csv-not-numbers")])
def test_bad_rd_curve_file_names_file_and_line(case: None, tmp_path: Path) -> None:
    from vcm_plugin.evaluation.bd import load_curve_csv

    path = tmp_path / "jpeg.csv"
    path.write_text("rate,metric\n0.1,30\nlots,33\n0.4,36\n0.8,39\n")
    expect(BDRateError, lambda: load_curve_csv(path), path, "3")


# =====================================================================================
# Configs
# =====================================================================================
BASE_CONFIG = """\
dataset: {name: sample}
tasks: {detection: {model: yolov5}}
codecs:
  jpeg: {qualities: [10, 50]}
  vvc: {qualities: [42, 32], preset: medium}
anchors: [vvc]
"""


def _config(text: str = BASE_CONFIG, overrides: list[str] | None = None):
    def make(tmp: Path) -> tuple[Callable[[], Any], Path]:
        path = tmp / "cfg.yaml"
        path.write_text(text)
        return lambda: load_config(path, overrides), path
    return make


def _train_typo(tmp: Path) -> tuple[Callable[[], Any], Path]:
    from vcm_plugin.training.codec import CodecTrainConfig

    path = ROOT / "eval_configs" / "train" / "vcm_hyperprior.yaml"
    return lambda: load_model_config(path, CodecTrainConfig, ["lmbdaa=0.01"]), path


def _flag_not_bool(tmp: Path) -> tuple[Callable[[], Any], Path]:
    path = tmp / "cfg.yaml"
    path.write_text(BASE_CONFIG)
    # parameter names and types (vcm_plugin.params) are checked at load time, before any work
    return lambda: load_config(path, ["codecs.jpeg.optimize=maybe"]), path


MARKER = "vcm-bad-inputs-hacked"
CONFIGS = [
    pytest.param(_config(BASE_CONFIG.replace("dataset:", "datset:")), ConfigError,
                 ["unknown key 'datset'", "did you mean 'dataset'"], True, id="config-misspelled-key"),
    pytest.param(_config(overrides=["codecs.vvc.presett=faster"]), ConfigError,
                 ["codecs.vvc", "'presett'", "did you mean 'preset'"], True, id="config-misspelled-codec-param"),
    pytest.param(_config(BASE_CONFIG.replace("[10, 50]", '"abc"')), ConfigError,
                 ["codecs.jpeg.qualities", "expected list, got str 'abc'"], True, id="config-wrong-type-qualities"),
    pytest.param(_config(BASE_CONFIG + "jobs: two\n"), ConfigError, ["jobs", "expected int, got str 'two'"], True,
                 id="config-wrong-type-jobs"),
    pytest.param(_config(BASE_CONFIG + f'evil: !!python/object/apply:os.system ["echo hacked > {MARKER}"]\n'),
                 ConfigError, ["not valid safe YAML", "python/object/apply:os.system"], True,
                 id="config-unsafe-yaml-tag"),
    pytest.param(_config(overrides=["codecs.vvc.preset"]), ConfigError, ["'codecs.vvc.preset'", "key=value"], False,
                 id="config-override-without-equals"),
    pytest.param(_config(overrides=["jobs=[1"]), ConfigError, ["'jobs=[1'", "cannot parse"], False,
                 id="config-override-unparsable"),
    pytest.param(_config(overrides=["anchors=[hevc]"]), ConfigError, ["anchor 'hevc'"], True,
                 id="config-anchor-not-a-codec"),
    pytest.param(lambda tmp: (lambda: load_config(tmp / "nope.yaml"), tmp / "nope.yaml"), ConfigError,
                 ["cannot read config"], True, id="config-missing-file"),
    pytest.param(_config("- a\n- b\n"), ConfigError, ["top level must be a mapping"], True,
                 id="config-not-a-mapping"),
    pytest.param(_train_typo, ConfigError, ["unknown key 'lmbdaa'", "did you mean 'lmbda'"], True,
                 id="config-train-typo"),
    pytest.param(_config(BASE_CONFIG.replace("  jpeg: {", "  jpgg: {")), UnknownCodecError,
                 ["'jpgg'", "Did you mean 'jpeg'"], False, id="config-unknown-codec"),
    pytest.param(_config(overrides=["tasks.detection.model=yolov55"]), TaskModelError,
                 ["'yolov55'", "Did you mean 'yolov5'"], False, id="config-unknown-task-model"),
    pytest.param(_config(overrides=["codecs.vvc.qualities=[99]"]), QualityError, ["'vvc'", "99", "0..63"], False,
                 id="config-quality-out-of-range"),
    pytest.param(_flag_not_bool, ConfigError, ["codecs.jpeg", "'optimize'", "'maybe'"], False,
                 id="config-flag-not-bool"),
]


@pytest.mark.parametrize("make, error, names, names_file", CONFIGS)
def test_bad_configs_name_the_key(make, error: type[Exception], names: list[str], names_file: bool,
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where an executed `echo hacked > MARKER` would write
    call, path = make(tmp_path)
    expect(error, call, *names, *([path] if names_file else []))
    assert not (tmp_path / MARKER).exists()  # the unsafe tag was refused, never executed


# =====================================================================================
# Checkpoints and weights
# =====================================================================================
class _Payload:
    """Pickles as ``os.system("touch MARKER")``: must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _zoo_weights(name: str) -> Path:
    from vcm_plugin.zoo import zoo_entries, zoo_file

    return zoo_file(zoo_entries()[name])


def _load(model: str, path: Path) -> Callable[[], Any]:
    if model == "yolov5":
        return lambda: get_task_model("yolov5", weights=str(path)).load()
    if model == "cifar10-vgg":
        return lambda: get_task_model("cifar10-vgg", weights=str(path)).load()
    # the compressai codec with the project zoo's architecture, from a checkpoint file
    return lambda: get_codec("compressai", model="bmshj2018-hyperprior", checkpoint=str(path)).encode(crop(), 1)


def _own_weights(model: str, request: pytest.FixtureRequest) -> Path:
    if model == "yolov5":
        return request.getfixturevalue("shared") / "weights" / "yolov5n_coco_state_dict.pt"
    return _zoo_weights("cifar10-vgg" if model == "cifar10-vgg" else "vcm-hyperprior-q1")


OTHER_MODEL = {"yolov5": "cifar10-vgg", "cifar10-vgg": "vcm-hyperprior-q1", "compressai": "cifar10-vgg"}
CKPT_ERRORS = {
    "pickled": {"yolov5": TaskModelError, "cifar10-vgg": NotWeightsOnlyError, "compressai": NotWeightsOnlyError},
    "other-model": {"yolov5": TaskModelError, "cifar10-vgg": TaskModelError, "compressai": LearnedModelError},
}
CKPT_DAMAGE = ("pickled", "truncated", "text-file", "garbage-pickle", "other-model", "missing")
CHECKPOINTS = [pytest.param(model, damage, id=f"ckpt-{model}-{damage}")
               for model in ("yolov5", "cifar10-vgg", "compressai") for damage in CKPT_DAMAGE]


@pytest.mark.parametrize("model, damage", CHECKPOINTS)
def test_bad_checkpoints_name_the_file(model: str, damage: str, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / f"{damage}.pt"
    error: type[Exception] = TaskModelError
    names: list[object] = [path]
    if damage == "pickled":
        torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "model": _Payload(marker)}, path)
        names.append("system")  # the refused global is named
    elif damage == "truncated":
        path.write_bytes(_own_weights(model, request).read_bytes()[:100_000])
    elif damage == "text-file":
        path.write_text("hello, this is not a checkpoint\n")
    elif damage == "garbage-pickle":
        path.write_bytes(b"\x80\x02}q")  # a pickle that stops mid-opcode
    elif damage == "other-model":
        shutil.copy(_zoo_weights(OTHER_MODEL[model]), path)
    else:
        error = WeightsNotFoundError
    error = CKPT_ERRORS.get(damage, {}).get(model, error)
    expect(error, _load(model, path), *names)
    assert not marker.exists()  # no pickled payload ever ran


def _training_state(tmp: Path) -> Path:
    import torch

    path = tmp / "last.pt"
    torch.save({"step": 3, "rng": _Payload(tmp / "pwned")}, path)
    return path


def _training_text(tmp: Path) -> Path:
    (tmp / "last.pt").write_text("hello, this is not a checkpoint\n")  # torch.load: KeyError, not a load error
    return tmp / "last.pt"


TRAINING = [
    pytest.param(_training_state, "not weights-only", id="ckpt-training-pickled"),
    pytest.param(_training_text, "cannot be loaded safely", id="ckpt-training-text-file"),
    pytest.param(lambda tmp: _zoo_weights("cifar10-vgg"), "not a vcm-plugin training state",
                 id="ckpt-training-not-a-state"),
]


@pytest.mark.parametrize("make, reason", TRAINING)
def test_bad_training_states_name_the_file(make, reason: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    expect(TrainingError, lambda: load_checkpoint(path), path, reason)
    assert not (tmp_path / "pwned").exists()


# =====================================================================================
# Output folder and results store
# =====================================================================================
@register_task_model
@dataclass
class NullDetector(TaskModel):
    """A detector that finds nothing, instantly: runs the harness without loading a network."""

    name: ClassVar[str] = "test-bad-inputs-null"
    task: ClassVar[str] = "detection"

    def run_from(self, point: str, value: Any) -> Detections:
        return Detections.empty()


def run_config(output: Path):
    """2 sample images x (uncompressed + jpeg at 2 qualities) = 6 units, about a second."""
    return config_from_dict({"name": "bad-inputs", "output": str(output),
                             "dataset": {"name": "sample", "max_images": 2},
                             "tasks": {"detection": {"model": NullDetector.name}},
                             "codecs": {"jpeg": {"qualities": [50, 90]}}, "jobs": 1})


UNITS = 6


def stored_rows(folder: Path) -> int:
    with ResultsStore(folder / "results.sqlite") as store:
        return store.count()


def _refuse_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    """Path.write_text raises OSError(code) for files in ``folder``: a read-only or a full disk."""
    original = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.parent == folder:
            raise OSError(code, os.strerror(code), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize("case", [pytest.param(None, id="output-unwritable")])
def test_unwritable_output_folder(case: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: simulate what the kernel would say
            _refuse_writes_under(monkeypatch, folder, errno.EACCES)
        expect(RunError, lambda: run(run_config(folder), quiet=True), folder, "not writable", "Permission denied")
    finally:
        folder.chmod(0o700)
    assert not (folder / "results.sqlite").exists()


@pytest.mark.parametrize("case", [pytest.param(None, id="output-is-a-file")])
def test_output_folder_that_is_a_file(case: None, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    expect(RunError, lambda: run(run_config(blocker / "out"), quiet=True), blocker / "out", "not writable")


@pytest.mark.parametrize("case", [pytest.param(None, id="output-full-disk-at-start")])
def test_full_disk_at_start(case: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    _refuse_writes_under(monkeypatch, folder, errno.ENOSPC)
    expect(RunError, lambda: run(run_config(folder), quiet=True), folder, "No space left on device")


class _FillingDisk:
    """A sqlite3 connection whose disk fills up after ``room`` more unit rows."""

    def __init__(self, db: sqlite3.Connection, room: int) -> None:
        self._db, self.room = db, room

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT OR REPLACE INTO units"):
            if self.room == 0:
                raise sqlite3.OperationalError("database or disk is full")  # SQLITE_FULL, as on ENOSPC
            self.room -= 1
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.parametrize("case", [pytest.param(None, id="output-full-disk-mid-run")])
def test_full_disk_mid_run_keeps_the_finished_rows(case: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: _FillingDisk(real_connect(*a, **kw), room=3))
    expect(StoreError, lambda: run(run_config(tmp_path), quiet=True), tmp_path / "results.sqlite",
           "database or disk is full")
    monkeypatch.undo()
    assert stored_rows(tmp_path) == 3  # the rows committed before the disk filled up are kept
    summary = run(run_config(tmp_path), quiet=True)  # space freed: the rerun computes only the rest
    assert (summary.units_cached, summary.units_computed, summary.units_total) == (3, 3, UNITS)
    assert stored_rows(tmp_path) == UNITS and (tmp_path / "results.csv").is_file()


@pytest.mark.parametrize("case", [pytest.param(None, id="output-full-disk-reports")])
def test_full_disk_while_writing_reports(case: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from vcm_plugin.reports import write

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(m in mode for m in "wax"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(write, "open", full_open, raising=False)  # the reports module's open()
    expect(ReportError, lambda: run(run_config(tmp_path), quiet=True), tmp_path, tmp_path / "results.csv",
           "No space left on device")
    monkeypatch.undo()
    assert stored_rows(tmp_path) == UNITS  # every unit was stored before the reports
    summary = run(run_config(tmp_path), quiet=True)
    assert summary.units_cached == UNITS and summary.units_computed == 0
    assert (tmp_path / "results.csv").is_file()


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(RNG_SEED).integers(0, 256, 8192, dtype=np.uint8).tobytes())


def _damaged_pages(path: Path) -> None:
    with ResultsStore(path) as store:
        for i in range(300):
            store.put(UnitRow(key=f"{i:04d}", codec="jpeg", quality=50, scale=1.0, task="detection",
                              image_id=str(i), status="ok", bits=800, pixels=100, predictions={"x": list(range(40))}))
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    blob = bytearray(path.read_bytes())
    half = len(blob) // 2 // 4096 * 4096  # the schema and the tree roots stay: it opens, then reading fails
    blob[half:] = np.random.default_rng(RNG_SEED).integers(0, 256, len(blob) - half, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(blob))


STORES = [
    pytest.param(_random_bytes, "cannot open", id="store-random-bytes"),
    pytest.param(_damaged_pages, "cannot read", id="store-damaged-pages"),
    pytest.param(lambda path: path.mkdir(), "cannot open", id="store-is-a-directory"),
]


@pytest.mark.parametrize("damage, stage", STORES)
def test_damaged_results_store_names_the_file(damage: Callable[[Path], None], stage: str, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    damage(path)

    def read_all() -> None:
        with ResultsStore(path) as store:
            store.finished_keys()
            list(store.rows())

    expect(StoreError, read_all, f"{stage} results store {path}")


@pytest.mark.parametrize("case", [pytest.param(None, id="store-corrupt-under-run")])
def test_run_over_a_corrupt_store_leaves_it_alone(case: None, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    _random_bytes(path)
    before = path.read_bytes()
    expect(StoreError, lambda: run(run_config(tmp_path), quiet=True), path)
    assert path.read_bytes() == before


# =====================================================================================
# Concurrency
# =====================================================================================
@pytest.mark.parametrize("case", [pytest.param(None, id="concurrent-run-same-process")])
def test_second_run_on_a_locked_folder_is_refused(case: None, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("the first run's config\n")
    with OutputLock(tmp_path):
        expect(RunError, lambda: run(run_config(tmp_path), quiet=True), tmp_path, "in use by another vcm run")
    assert (tmp_path / "config.yaml").read_text() == "the first run's config\n"  # nothing overwritten
    assert not (tmp_path / "results.sqlite").exists()


@pytest.mark.parametrize("case", [pytest.param(None, id="concurrent-run-other-process")])
def test_run_locked_by_another_process_is_refused(case: None, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from vcm_plugin.pipeline.run import OutputLock
            with OutputLock(Path({str(tmp_path)!r})):
                print("locked", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        expect(RunError, lambda: run(run_config(tmp_path), quiet=True), tmp_path, "in use by another vcm run",
               f"pid {holder.pid}")
        assert not (tmp_path / "results.sqlite").exists() and not (tmp_path / "config.yaml").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with OutputLock(tmp_path):  # released when the holder exits
        pass


# =====================================================================================
# The shared unit cache
# =====================================================================================
def cache_config(output: Path, cache: Path, qualities: tuple[int, ...] = (50, 90)):
    """:func:`run_config` with the shared unit cache in ``cache`` and JPEG at ``qualities``."""
    config = run_config(output).model_copy(update={"cache": str(cache)}, deep=True)
    config.codecs["jpeg"].qualities = list(qualities)
    return config


def _cache_damaged(cache: Path, tmp: Path, mp: pytest.MonkeyPatch, done: list) -> None:
    cache.mkdir()
    (cache / CACHE_FILE).write_bytes(b"not a database " * 500)


class _FullDisk(ResultsStore):
    """The cache file on a full disk: SQLite may not grow it by a page (SQLITE_FULL, as ENOSPC gives)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__(path, timeout)
        self._db.execute(f"PRAGMA max_page_count={self._db.execute('PRAGMA page_count').fetchone()[0]}")
        for size in (400, 40, 1):  # fill the free space of its pages, the units table's too (failed rows)
            with contextlib.suppress(sqlite3.OperationalError):
                for i in itertools.count():
                    self._db.execute("INSERT INTO units (key, codec, scale, task, image_id, status, error) "
                                     "VALUES (?, 'filler', 1, 'filler', '', 'failed', ?)", (f"{size}-{i}", "x" * size))


def _cache_full(cache: Path, tmp: Path, mp: pytest.MonkeyPatch, done: list) -> None:
    mp.setattr(unit_cache, "ResultsStore", _FullDisk)


def _cache_held(cache: Path, tmp: Path, mp: pytest.MonkeyPatch, done: list) -> None:
    run(cache_config(tmp / "first", cache), quiet=True)  # 6 units cached: read, the 2 new ones not written
    mp.setattr(unit_cache, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(cache / CACHE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another run's write that does not end
    done.append(holder.close)


def _cache_other_schema(cache: Path, tmp: Path, mp: pytest.MonkeyPatch, done: list) -> None:
    cache.mkdir()
    (cache / "units-v999.sqlite").write_bytes(b"a later version's cache")  # another schema's file: never opened
    run(cache_config(tmp / "first", cache), quiet=True)
    db = sqlite3.connect(cache / CACHE_FILE, isolation_level=None)
    db.execute("UPDATE meta SET value='999' WHERE key='schema'")  # a cache file a later version wrote
    db.close()


def _cache_read_only(cache: Path, tmp: Path, mp: pytest.MonkeyPatch, done: list) -> None:
    run(cache_config(tmp / "first", cache), quiet=True)
    for path in (*cache.iterdir(), cache):
        path.chmod(0o555 if path.is_dir() else 0o444)
    done.append(lambda: cache.chmod(0o755))
    if os.access(cache / CACHE_FILE, os.W_OK):  # root writes anyway: SQLite opens it read-only, as for a user
        connect = sqlite3.connect

        def read_only(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if Path(path) == cache / CACHE_FILE:
                return connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)
            return connect(path, *args, **kwargs)

        mp.setattr(sqlite3, "connect", read_only)


CACHES = [
    pytest.param(_cache_damaged, "damaged", id="cache-damaged-file"),
    pytest.param(_cache_full, "disk is full", id="cache-full-disk"),
    pytest.param(_cache_held, "more than 0.2 s", id="cache-held-too-long"),
    pytest.param(_cache_other_schema, "schema 999", id="cache-other-schema"),
    pytest.param(_cache_read_only, "not writable", id="cache-read-only-folder"),
]


@pytest.mark.parametrize("make, reason", CACHES)
def test_an_unusable_cache_is_named_once_and_the_run_goes_on(make, reason: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cache, done = tmp_path / "cache", []
    try:
        make(cache, tmp_path, monkeypatch, done)
        before = (cache / CACHE_FILE).read_bytes() if (cache / CACHE_FILE).is_file() else None
        caplog.clear()
        summary = run(cache_config(tmp_path / "out", cache, (50, 90, 70)), quiet=True)
    finally:
        for close in done:
            close()
    assert summary.units_computed + summary.units_from_cache == UNITS + 2 and summary.units_failed == 0
    assert stored_rows(tmp_path / "out") == UNITS + 2 and (tmp_path / "out" / "results.csv").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == unit_cache.__name__]
    assert len(warnings) == 1 and str(cache / CACHE_FILE) in warnings[0] and reason in warnings[0], warnings
    assert "goes on without the cache" in warnings[0]
    if make is _cache_damaged:
        assert (cache / CACHE_FILE).read_bytes() == before


def _run_at_once(output: Path, cache: Path, barrier: Any, results: Any) -> None:
    """In a forked process: ``run`` into ``output`` with ``cache`` once the other process is ready."""
    warned: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("vcm_plugin").addHandler(handler)
    if "torch" in sys.modules:  # as the pool's forked workers: not the parent's OpenMP threads (they hang)
        sys.modules["torch"].set_num_threads(1)
    barrier.wait()
    summary = run(cache_config(output, cache), quiet=True)
    results.put((summary.units_computed + summary.units_from_cache, summary.units_failed, warned))


@pytest.mark.parametrize("case", [pytest.param(None, id="cache-two-runs-at-once")])
def test_two_runs_share_the_cache_at_once(case: None, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_run_at_once, args=(tmp_path / name, tmp_path / "cache", barrier, results),
                             daemon=True) for name in ("one", "two")]  # daemons: a hung one ends with pytest
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert outcomes == [(UNITS, 0, [])] * 2
    assert stored_rows(tmp_path / "one") == stored_rows(tmp_path / "two") == UNITS
    assert sum(n for *_, n, _, _ in cache_entries(tmp_path / "cache")) == UNITS


def _one_unit_store(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore(path) as store:
        store.put(UnitRow(key="k", codec="jpeg", quality=50, scale=1.0, task="detection", image_id="1", status="ok"))
    return path


def _import_not_a_run(tmp: Path) -> tuple[Path, type[Exception], list[object]]:
    return tmp, StoreError, [tmp, "is not a run folder"]


def _import_other_schema(tmp: Path) -> tuple[Path, type[Exception], list[object]]:
    store = _one_unit_store(tmp / "run" / "results.sqlite")
    with contextlib.closing(sqlite3.connect(store, isolation_level=None)) as db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema'")
    return tmp / "run", StoreError, [store, "schema 999"]


def _import_damaged_store(tmp: Path) -> tuple[Path, type[Exception], list[object]]:
    (tmp / "run").mkdir()
    (tmp / "run" / "results.sqlite").write_bytes(b"not a database " * 500)
    return tmp / "run", StoreError, [tmp / "run" / "results.sqlite"]


def _import_damaged_cache(tmp: Path) -> tuple[Path, type[Exception], list[object]]:
    _one_unit_store(tmp / "run" / "results.sqlite")
    (tmp / "cache").mkdir()
    (tmp / "cache" / CACHE_FILE).write_bytes(b"not a database " * 500)
    return tmp / "run", CacheError, [tmp / "cache" / CACHE_FILE, "damaged"]


IMPORTS = [
    pytest.param(_import_not_a_run, id="cache-import-not-a-run-folder"),
    pytest.param(_import_other_schema, id="cache-import-other-schema"),
    pytest.param(_import_damaged_store, id="cache-import-damaged-store"),
    pytest.param(_import_damaged_cache, id="cache-import-damaged-cache"),
]


@pytest.mark.parametrize("make", IMPORTS)
def test_vcm_cache_import_of_a_bad_run_folder_or_cache_names_it(make, tmp_path: Path) -> None:
    run_dir, error, names = make(tmp_path)
    store = run_dir / "results.sqlite"
    before = store.read_bytes() if store.is_file() else None
    expect(error, lambda: import_run(tmp_path / "cache", run_dir), *names)
    assert (store.read_bytes() if store.is_file() else None) == before  # the run folder is left as it was
    if error is StoreError:
        assert not (tmp_path / "cache").exists()  # nothing made


# =====================================================================================
# The catalogue itself
# =====================================================================================
ALL_CASES = [CONVERTED, TINY, UNREADABLE, BAD_ARRAYS, BITSTREAMS, VCMB, DATASETS, RD, CONFIGS, CHECKPOINTS, TRAINING,
             STORES, CACHES, IMPORTS]
SINGLE_CASES = ["vcmb-cli-decode", "rd-csv-not-numbers", "output-unwritable", "output-is-a-file",
                "output-full-disk-at-start", "output-full-disk-mid-run", "output-full-disk-reports",
                "store-corrupt-under-run", "concurrent-run-same-process", "concurrent-run-other-process",
                "cache-two-runs-at-once"]


def test_the_docstring_lists_every_case_and_the_count() -> None:
    case_ids = [i for params in ALL_CASES for i in ids(params)] + SINGLE_CASES
    assert len(case_ids) == len(set(case_ids)), "a case id is used twice"
    assert len(case_ids) == DOCSTRING_COUNT, "a case was added or removed: update the module docstring and its count"
    listed = set(re.findall(r"`([a-z0-9<>-]+)`", __doc__))
    expanded = set()
    for item in listed:
        if "<codec>" in item:
            expanded |= {item.replace("<codec>", name) for name in BUILTIN}
        elif "<model>" in item:
            expanded |= {item.replace("<model>", name) for name in ("yolov5", "cifar10-vgg", "compressai")}
        else:
            expanded.add(item)
    assert expanded == set(case_ids)
