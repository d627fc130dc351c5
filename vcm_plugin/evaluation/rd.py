"""Image-level rate-distortion measurement: code images with a codec, measure rate and PSNR.

Aggregation follows the VCM anchors and CompressAI-Vision: a point's ``bpp`` is the
total bits of all real bitstreams divided by the total ORIGINAL pixels; the mean of
per-image bpp is reported beside it as ``mean_bpp``. PSNR-Y and PSNR-RGB of a point
are means of per-image values in dB (CompressAI's convention). Times are wall seconds
of ``encode`` / ``decode`` (ffmpeg codecs include the process start).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vcm_plugin.codecs.base import Quality
from vcm_plugin.codecs.registry import get_codec
from vcm_plugin.errors import VcmError
from vcm_plugin.images.io import read_image
from vcm_plugin.images.metrics import ms_ssim, psnr_rgb, psnr_y


@dataclass(frozen=True)
class CodecSpec:
    """A codec configuration and the qualities to code at."""

    name: str
    qualities: tuple[Quality, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Display name: the codec name plus any non-default parameters."""
        if not self.params:
            return self.name
        return self.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items())) + "]"


@dataclass(frozen=True)
class ImageResult:
    """One image coded at one quality: bits, pixels, PSNRs (dB) and seconds."""

    image: str
    codec: str
    quality: Quality
    bits: int
    pixels: int
    psnr_y: float
    psnr_rgb: float
    encode_s: float
    decode_s: float
    ms_ssim: float | None = None  # None where undefined (shorter side <= 160 px)

    @property
    def bpp(self) -> float:
        return self.bits / self.pixels


@dataclass(frozen=True)
class RDPoint:
    """One (codec configuration, quality) over a set of images."""

    codec: str
    quality: Quality
    images: int
    bits: int
    pixels: int
    bpp: float  # total bits / total original pixels
    mean_bpp: float  # mean of per-image bpp
    psnr_y: float  # mean of per-image PSNR-Y, dB
    psnr_rgb: float  # mean of per-image PSNR-RGB, dB
    encode_ms_per_mp: float  # summed encode wall time per megapixel, ms
    decode_ms_per_mp: float
    ms_ssim: float | None = None  # mean of per-image MS-SSIM where defined

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def code_image(name: str, params: dict[str, Any], quality: Quality, path: str) -> ImageResult:
    """Encode and decode one image file; module-level so a process pool can run it."""
    codec = get_codec(name, **params)
    image = read_image(path)
    start = time.perf_counter()
    try:
        bitstream = codec.encode(image, quality)
        encoded = time.perf_counter()
        decoded = codec.decode(bitstream)
    except VcmError as exc:  # say which image, keep the error type
        raise type(exc)(f"image {path}: {exc}") from exc
    done = time.perf_counter()
    return ImageResult(
        image=str(path), codec=name, quality=bitstream.quality, bits=bitstream.num_bits,
        pixels=bitstream.num_pixels, psnr_y=psnr_y(image, decoded), psnr_rgb=psnr_rgb(image, decoded),
        encode_s=encoded - start, decode_s=done - encoded, ms_ssim=ms_ssim(image, decoded),
    )


def summarise(label: str, quality: Quality, results: Sequence[ImageResult]) -> RDPoint:
    """Aggregate per-image results of one quality into an :class:`RDPoint`."""
    bits = sum(r.bits for r in results)
    pixels = sum(r.pixels for r in results)
    megapixels = pixels / 1e6

    def mean_db(values: Iterable[float]) -> float:
        values = list(values)
        return math.inf if all(math.isinf(v) for v in values) else sum(values) / len(values)

    return RDPoint(
        codec=label, quality=quality, images=len(results), bits=bits, pixels=pixels, bpp=bits / pixels,
        mean_bpp=sum(r.bpp for r in results) / len(results),
        psnr_y=mean_db(r.psnr_y for r in results), psnr_rgb=mean_db(r.psnr_rgb for r in results),
        encode_ms_per_mp=1e3 * sum(r.encode_s for r in results) / megapixels,
        decode_ms_per_mp=1e3 * sum(r.decode_s for r in results) / megapixels,
        ms_ssim=(sum(v) / len(v)) if (v := [r.ms_ssim for r in results if r.ms_ssim is not None]) else None,
    )


def measure(specs: Sequence[CodecSpec], images: Sequence[str | Path], jobs: int | None = None,
            progress: bool = True) -> list[RDPoint]:
    """Code every image with every codec configuration at every quality.

    Units run in a pool of ``jobs`` worker processes (default: all cores), one image
    each, so single-threaded encoders use every core. Returns points in spec order.
    """
    jobs = jobs or os.cpu_count() or 1
    units = [(spec, q, str(path)) for spec in specs for q in spec.qualities for path in images]
    results: dict[tuple[int, Quality], list[ImageResult]] = {}
    bar = tqdm(total=len(units), desc="coding", unit="img", disable=not progress)
    if jobs == 1:
        for spec, q, path in units:
            results.setdefault((id(spec), q), []).append(code_image(spec.name, spec.params, q, path))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(code_image, spec.name, spec.params, q, path): (id(spec), q)
                       for spec, q, path in units}
            for future in futures:  # submission order keeps results deterministic
                results.setdefault(futures[future], []).append(future.result())
                bar.update()
    bar.close()
    return [summarise(spec.label, q, results[(id(spec), q)]) for spec in specs for q in spec.qualities]
